//! Repository ids and revisions come from URLs (`/{org}/{name}/resolve/{rev}/...`,
//! `/api/models/{org}/{name}/revision/{rev}`). Against a real registry holding known
//! repositories, and an oracle of the rules:
//! - `RepoId::new(org, name)` accepts exactly parts of 1 to 96 ASCII letters, digits, `-`, `_`
//!   and `.`, not starting with `.` or `-`, without `..`, and an org that is not a route name;
//!   an accepted id prints as `org/name` and parses back to itself.
//! - `Registry::resolve` finds a revision only for a registered repository of the right kind and
//!   `main` or one of its commit ids (40 hex digits, either case), and then the right artifact;
//!   anything else is a not-found error whose message does not echo more than 100 characters
//!   of the revision.
//!
//! The registry is a real redb file in a temporary folder, made once per process.
#![no_main]

#[path = "common_registry.rs"]
mod common_registry;

use cairn_gateway::{Error, REPO_PART_LEN_MAX, RepoId, RepoKind};
use common_registry::{commit, known};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    dataset: bool,
    org: Org,
    name: String,
    rev: Rev,
}

#[derive(Arbitrary, Debug)]
enum Org {
    Acme,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Rev {
    Main,
    /// A known commit id (0: a, 1: b, 2: c), upper-cased if set.
    Known(u8, bool),
    Other(String),
}

fn part_ok(p: &str) -> bool {
    (1..=REPO_PART_LEN_MAX).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !p.starts_with(['.', '-'])
        && !p.contains("..")
}

fuzz_target!(|input: Input| {
    let k = known();
    let org = match &input.org {
        Org::Acme => "acme",
        Org::Other(s) => s.as_str(),
    };
    let name = input.name.as_str();
    let reserved = [
        "api",
        "datasets",
        "artifacts",
        "healthz",
        "metrics",
        "models",
    ]
    .contains(&org);
    let valid = part_ok(org) && part_ok(name) && !reserved;
    let repo = RepoId::new(org, name);
    assert_eq!(
        repo.is_ok(),
        valid,
        "RepoId::new({org:?}, {name:?}): {repo:?}"
    );
    let Ok(repo) = repo else { return };
    let printed = repo.to_string();
    assert_eq!(printed, format!("{org}/{name}"));
    assert_eq!(printed.parse::<RepoId>().ok().as_ref(), Some(&repo));

    let kind = if input.dataset {
        RepoKind::Dataset
    } else {
        RepoKind::Model
    };
    let rev = match &input.rev {
        Rev::Main => "main".to_string(),
        Rev::Known(i, upper) => {
            let c = commit([&k.a, &k.b, &k.c][usize::from(*i % 3)]);
            if *upper { c.to_uppercase() } else { c }
        }
        Rev::Other(s) => s.clone(),
    };
    let lower = rev.to_ascii_lowercase();
    let expect = match (kind, repo.org(), repo.name()) {
        (RepoKind::Model, "acme", "model") => {
            if rev == "main" || lower == commit(&k.b) {
                Some(k.b)
            } else if lower == commit(&k.a) && rev.len() == 40 {
                Some(k.a)
            } else {
                None
            }
        }
        (RepoKind::Dataset, "acme", "data") => {
            (rev == "main" || (lower == commit(&k.c) && rev.len() == 40)).then_some(k.c)
        }
        _ => None,
    };
    match (k.registry.resolve(kind, &repo, &rev), expect) {
        (Ok(resolved), Some(cid)) => {
            assert_eq!(resolved.entry.cid(), cid, "{kind:?} {repo} @ {rev:?}");
            assert_eq!(resolved.commit.to_string(), commit(&cid));
        }
        (Err(e @ (Error::RepoNotFound { .. } | Error::RevisionNotFound { .. })), None) => {
            let text = e.to_string();
            assert!(
                text.len() <= 300 + 2 * REPO_PART_LEN_MAX,
                "a not-found message of {} bytes echoes the request",
                text.len()
            );
        }
        (got, want) => panic!("resolve({kind:?}, {repo}, {rev:?}) = {got:?}, expected {want:?}"),
    }
});
