//! `paths-info` bodies come from anyone: a form (`paths=a&paths=b`, what `huggingface_hub`
//! sends) or JSON (`{"paths": [...]}`). Parsing must never panic and never return more paths
//! than the limit; and a body that encodes a list of paths, in either form, must give back
//! exactly that list (or the limit's refusal).
#![no_main]

use cairn_gateway::fuzzing::paths_info_body;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// The gateway's limit on paths per request (`PATHS_INFO_MAX` in the handlers).
const PATHS_MAX: usize = 10_000;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        content_type: Vec<u8>,
        body: Vec<u8>,
    },
    Form {
        paths: Vec<String>,
        brackets: bool,
    },
    Json {
        paths: Vec<String>,
    },
}

fn form_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn check(result: Result<Vec<String>, String>, want: Option<&[String]>) {
    match (result, want) {
        (Ok(got), Some(want)) => {
            assert!(want.len() <= PATHS_MAX, "{} paths accepted", want.len());
            assert_eq!(got, want, "the paths sent are not the paths read");
        }
        (Ok(got), None) => assert!(got.len() <= PATHS_MAX, "{} paths accepted", got.len()),
        (Err(e), Some(want)) => {
            assert!(
                want.len() > PATHS_MAX,
                "a well-formed body of {} paths refused: {e}",
                want.len()
            )
        }
        (Err(_), None) => {}
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { content_type, body } => check(paths_info_body(&content_type, &body), None),
        Input::Form { paths, brackets } => {
            let mut body = String::new();
            for (i, p) in paths.iter().enumerate() {
                if i > 0 {
                    body.push('&');
                }
                body.push_str(if brackets { "paths%5B%5D=" } else { "paths=" });
                form_escape(p, &mut body);
            }
            let got = paths_info_body(b"application/x-www-form-urlencoded", body.as_bytes());
            check(got, Some(&paths));
        }
        Input::Json { paths } => {
            let mut body = String::from("{\"paths\": [");
            for (i, p) in paths.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                json_string(p, &mut body);
            }
            body.push_str("]}");
            let got = paths_info_body(b"application/json", body.as_bytes());
            check(got, Some(&paths));
        }
    }
});
