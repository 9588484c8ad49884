//! What an API key may reach: its scopes, and the client networks it may be used from.
//!
//! # Scopes
//!
//! A scope is `<ops>:<target>`, e.g. `read:repo:org/name`, `read:prefix:org/`,
//! `read:artifact:<cid>`. `<ops>` is a comma-separated set of operations; today only `read`
//! (repository info, listings, `HEAD` and `GET` of files) exists, and [`Op`] leaves room for
//! `write`. Targets:
//! - `repo:org/name`: that repository, model or dataset;
//! - `prefix:<p>`: every repository under the path `<p>`, which ends at a `/`: `prefix:org/`
//!   and `prefix:org` are the organisation `org` (not `org2/x`, not `org-evil/x`),
//!   `prefix:org/name` is that repository;
//! - `artifact:<cid>`: that artifact, asked by CID or through any repository revision that
//!   resolves to it.
//!
//! Requests by CID (`/artifacts/{cid}/...`) are only covered by `artifact:` scopes.
//! A key holds at most [`SCOPES_PER_KEY_MAX`] scopes.
//!
//! # IP allow-lists
//!
//! The IP allow-list holds up to [`ALLOW_IPS_PER_KEY_MAX`] CIDRs (`10.0.0.0/8`, `fd00::/8`, or a
//! bare address) and is matched against the peer socket address the gateway sees (IPv4-mapped
//! IPv6 addresses count as IPv4). A proxy in front of the gateway hides client addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cairn_artifact::Cid;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::registry::{REPO_PART_LEN_MAX, RepoId};

/// Most scopes one key holds.
pub const SCOPES_PER_KEY_MAX: usize = 32;
/// Longest scope string.
pub const SCOPE_LEN_MAX: usize = 512;
/// Most CIDRs in one key's IP allow-list.
pub const ALLOW_IPS_PER_KEY_MAX: usize = 64;

/// An operation a scope grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Op {
    /// Repository info, listings, `HEAD` and `GET` of files.
    Read,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
        }
    }
}

/// What a scope covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeTarget {
    /// One repository (`repo:org/name`), model or dataset.
    Repo(RepoId),
    /// Every repository under this path, which ends at a `/` (`prefix:org/` and `prefix:org`
    /// are the organisation `org`, not `org2` or `org-evil`).
    Prefix(String),
    /// One artifact (`artifact:<cid>`).
    Artifact(Cid),
}

/// A scope: operations on a target, written `read:repo:org/name` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    ops: Vec<Op>,
    target: ScopeTarget,
}

impl Scope {
    /// A scope granting `ops` (at least one) on `target`.
    pub fn new(ops: &[Op], target: ScopeTarget) -> Result<Self, Error> {
        let mut ops = ops.to_vec();
        ops.sort();
        ops.dedup();
        if ops.is_empty() {
            return Err(Error::BadRequest(
                "a scope needs at least one operation".into(),
            ));
        }
        Ok(Self { ops, target })
    }

    /// The operations granted.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// What is covered.
    pub fn target(&self) -> &ScopeTarget {
        &self.target
    }

    /// Whether this scope lets `op` reach `repo` (`org/name`, when asked by name) or `artifact`.
    pub fn covers(&self, op: Op, repo: Option<&str>, artifact: &Cid) -> bool {
        if !self.ops.contains(&op) {
            return false;
        }
        match &self.target {
            ScopeTarget::Repo(r) => repo.is_some_and(|x| {
                x.split_once('/')
                    .is_some_and(|(o, n)| o == r.org() && n == r.name())
            }),
            ScopeTarget::Prefix(p) => repo.is_some_and(|x| {
                // A prefix ends at a path segment: `acme` is `acme/...`, never `acme-evil/...`.
                let p = p.trim_end_matches('/');
                x.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
            ScopeTarget::Artifact(c) => c == artifact,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<&str> = self.ops.iter().map(|o| o.as_str()).collect();
        write!(f, "{}:", ops.join(","))?;
        match &self.target {
            ScopeTarget::Repo(r) => write!(f, "repo:{r}"),
            ScopeTarget::Prefix(p) => write!(f, "prefix:{p}"),
            ScopeTarget::Artifact(c) => write!(f, "artifact:{c}"),
        }
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::BadRequest(format!(
                "invalid scope {:?}: {why}; expected e.g. read:repo:org/name, read:prefix:org/ \
                 or read:artifact:<cid>",
                s.chars().take(80).collect::<String>()
            ))
        };
        if s.len() > SCOPE_LEN_MAX {
            return Err(bad("too long"));
        }
        let (ops, rest) = s.split_once(':').ok_or_else(|| bad("no operations"))?;
        let ops = ops
            .split(',')
            .map(|o| match o {
                "read" => Ok(Op::Read),
                _ => Err(bad("the only operation is `read`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (kind, target) = rest.split_once(':').ok_or_else(|| bad("no target"))?;
        let target = match kind {
            "repo" => ScopeTarget::Repo(target.parse().map_err(|_| bad("not an org/name"))?),
            "prefix" => {
                let ok = !target.trim_end_matches('/').is_empty()
                    && !target.starts_with('/')
                    && target.len() <= 2 * REPO_PART_LEN_MAX + 1
                    && target.matches('/').count() <= 1
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
                if !ok {
                    return Err(bad("a prefix is 1 to 193 characters of an org/name"));
                }
                ScopeTarget::Prefix(target.to_string())
            }
            "artifact" => {
                let c = Cid::try_from(target).map_err(|_| bad("not a CID"))?;
                ScopeTarget::Artifact(c)
            }
            _ => return Err(bad("the target is repo:, prefix: or artifact:")),
        };
        Scope::new(&ops, target).map_err(|_| bad("no operations"))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IP network, `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Host bits are
/// cleared on parsing, so `10.1.2.3/8` is `10.0.0.0/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && Self::mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::BadRequest(format!(
                "invalid IP network {:?}: expected e.g. 10.0.0.0/8, fd00::/8 or an address",
                s.chars().take(60).collect::<String>()
            ))
        };
        if s.len() > 64 {
            return Err(bad());
        }
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self {
            addr: Self::mask(addr, prefix),
            prefix,
        })
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_print_cover() {
        let cid = cairn_artifact::manifest_cid(b"x");
        for s in [
            "read:repo:org/name".to_string(),
            "read:prefix:org/".to_string(),
            format!("read:artifact:{cid}"),
        ] {
            let p: Scope = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let other = cairn_artifact::manifest_cid(b"y");
        let repo: Scope = "read:repo:org/name".parse().unwrap();
        assert!(repo.covers(Op::Read, Some("org/name"), &cid));
        assert!(!repo.covers(Op::Read, Some("org/name2"), &cid));
        assert!(!repo.covers(Op::Read, None, &cid));
        let pre: Scope = "read:prefix:org/".parse().unwrap();
        assert!(pre.covers(Op::Read, Some("org/a"), &cid));
        assert!(!pre.covers(Op::Read, Some("org2/a"), &cid));
        // A prefix ends at a path segment, with or without its `/`.
        let acm: Scope = "read:prefix:acm".parse().unwrap();
        assert!(!acm.covers(Op::Read, Some("acme-evil/x"), &cid));
        assert!(!acm.covers(Op::Read, Some("acme/x"), &cid));
        assert!(acm.covers(Op::Read, Some("acm/x"), &cid));
        let one: Scope = "read:prefix:acme/x".parse().unwrap();
        assert!(one.covers(Op::Read, Some("acme/x"), &cid));
        assert!(!one.covers(Op::Read, Some("acme/x-evil"), &cid));
        assert!(!one.covers(Op::Read, Some("acme/xy"), &cid));
        let art: Scope = format!("read:artifact:{cid}").parse().unwrap();
        assert!(art.covers(Op::Read, None, &cid));
        assert!(art.covers(Op::Read, Some("x/y"), &cid));
        assert!(!art.covers(Op::Read, None, &other));
        for bad in [
            "",
            "read",
            "read:repo:",
            "read:repo:api/x",
            "write:repo:org/name",
            "read:prefix:",
            "read:prefix:/",
            "read:prefix:/a",
            "read:prefix:a/b/c",
            "read:prefix:a b",
            "read:artifact:nope",
            "read:team:x",
            "read,:repo:a/b",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!("x".repeat(600).parse::<Scope>().is_err());
    }

    #[test]
    fn ip_nets() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!n.contains("127.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }
}
