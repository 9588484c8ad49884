//! A safetensors header comes from whoever published the file: reading it must never panic nor
//! ask for bytes past the header, must accept exactly the files the reference implementation
//! (the `safetensors` crate on the whole file) accepts, and a selection must give a file the
//! reference reads back with every selected tensor's bytes and nothing else.
//!
//! Input: a first line of comma-separated patterns, then the file's bytes.
#![no_main]

use std::ops::Range;

use cairn_artifact::{SAFETENSORS_HEADER_LEN_MAX, TensorError, read_safetensors_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (pats, file) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&b"*"[..], input),
    };
    let pats = String::from_utf8_lossy(pats);
    let patterns: Vec<&str> = pats.split(',').collect();
    let size = file.len() as u64;
    let header = read_safetensors_header::<TensorError>(size, &mut |r: Range<u64>| {
        assert!(
            r.start < r.end && r.end <= size,
            "asked {r:?} of {size} bytes"
        );
        assert!(
            r.end <= 8 + SAFETENSORS_HEADER_LEN_MAX,
            "asked {r:?}, past any header"
        );
        Ok(file[r.start as usize..r.end as usize].to_vec())
    });
    let reference = safetensors::SafeTensors::deserialize(file);
    assert_eq!(
        header.is_ok(),
        reference.is_ok(),
        "cairn: {:?}, reference: {:?}",
        header.as_ref().err(),
        reference.as_ref().err()
    );
    let (Ok(header), Ok(reference)) = (header, reference) else {
        return;
    };
    let Ok(sel) = header.select(&patterns) else {
        return;
    };
    assert_eq!(sel.header.len() % 8, 0);
    let mut out = sel.header.clone();
    let mut last = header.data_start();
    for r in &sel.ranges {
        assert!(
            last <= r.start && r.start < r.end && r.end <= size,
            "{:?}",
            sel.ranges
        );
        last = r.end;
        out.extend_from_slice(&file[r.start as usize..r.end as usize]);
    }
    assert_eq!(out.len() as u64, sel.len());
    let got = safetensors::SafeTensors::deserialize(&out).expect("the selection is a valid file");
    assert_eq!(got.len(), sel.tensors.len());
    for name in &sel.tensors {
        let (a, b) = (got.tensor(name).unwrap(), reference.tensor(name).unwrap());
        assert_eq!(
            (a.dtype(), a.shape(), a.data()),
            (b.dtype(), b.shape(), b.data())
        );
        assert!(
            patterns
                .iter()
                .any(|p| cairn_artifact::tensor_pattern_matches(p, name))
        );
    }
});
