//! Access policies come from publishers' command lines and files, and are read back from the
//! registry: parsing must never panic, must keep its bounds (depth, conditions, no minimum of
//! 0), and a parsed gate written out (JSON or shorthand) must read back as the same gate.
#![no_main]

use cairn_gateway::access::policy::{
    Condition, GATE_CONDITIONS_MAX, GATE_DEPTH_MAX, Gate, POLICY_BYTES_MAX,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(g) = Gate::parse(s) else {
        return;
    };
    assert!(s.len() <= POLICY_BYTES_MAX);
    assert!(g.conditions().len() <= GATE_CONDITIONS_MAX);
    g.check_bounds().expect("a parsed gate keeps its bounds");
    let back = Gate::parse(&g.to_json().to_string()).expect("its JSON reads back");
    assert_eq!(back, g);
    let stored = serde_json::to_string(&g).unwrap();
    let again: Gate = serde_json::from_str(&stored).expect("its stored form reads back");
    assert_eq!(again, g);
    if let Gate::Condition(c) = &g {
        let short: Condition = c.to_string().parse().expect("its shorthand reads back");
        assert_eq!(&short, c);
    }
    let _ = GATE_DEPTH_MAX;
});
