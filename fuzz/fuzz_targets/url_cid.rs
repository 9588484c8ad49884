//! CIDs come from URLs (`/artifacts/{cid}/...`, `/api/artifacts/{cid}`). Parsing must never
//! panic; a CID that parses must print and parse back to itself, and read from its bytes to
//! itself; and a lookup in a real registry must find an artifact only for a registered CID,
//! whatever spelling (multibase) the URL used.
#![no_main]

#[path = "common_registry.rs"]
#[allow(dead_code)]
mod common_registry;

use cairn_artifact::Cid;
use cairn_gateway::fuzzing::url_cid;
use common_registry::known;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|segment: &str| {
    let Some(cid) = url_cid(segment) else { return };
    let printed = cid.to_string();
    assert_eq!(
        url_cid(&printed),
        Some(cid),
        "{segment:?} printed as {printed:?}"
    );
    assert_eq!(Cid::try_from(cid.to_bytes().as_slice()).ok(), Some(cid));
    let k = known();
    let found = k.registry.artifact(&cid).expect("a registry lookup works");
    let registered = [k.a, k.b, k.c].contains(&cid);
    assert_eq!(found.is_some(), registered, "{segment:?}");
    if let Some(entry) = found {
        assert_eq!(entry.cid(), cid);
    }
});
