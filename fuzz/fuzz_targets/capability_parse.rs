//! Read capabilities are pasted by users and passed in URLs: parsing must never panic, and a
//! parsed capability printed and parsed again must be the same capability.
#![no_main]

use cairn_artifact::ReadCap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(cap) = s.parse::<ReadCap>() else {
        return;
    };
    let printed = cap.to_string();
    let again: ReadCap = printed.parse().expect("a printed capability parses");
    assert_eq!(again, cap, "parse(display(cap)) differs from cap");
    assert_eq!(again.to_string(), printed, "display is not stable");
});
