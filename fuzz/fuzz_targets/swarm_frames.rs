//! The peer protocol's decoders on hostile bytes: request frames, reply frames, signed
//! announcements and holder records. None may panic; a request frame that decodes must
//! re-encode to exactly the bytes given.
#![no_main]

use cairn_swarm::fuzzing::{
    decode_reply_frame, decode_request_frame, verify_announcement, verify_record,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(again) = decode_request_frame(rest) {
                assert_eq!(again, rest, "a decoded request must re-encode to its bytes");
            }
        }
        1 => {
            let (kind, count, body) = match rest {
                [k, c0, c1, body @ ..] => (*k, u16::from_be_bytes([*c0, *c1]), body),
                _ => return,
            };
            let _ = decode_reply_frame(kind % 14, count, body);
        }
        2 => {
            let _ = verify_announcement(rest, [7; 32]);
        }
        _ => {
            let _ = verify_record(rest);
        }
    }
});
