//! On-chain access policies: who may read a gated repository.
//!
//! A [`Gate`] is one [`Condition`] or an `all`/`any` tree of them. A condition names a chain,
//! a token contract, what to ask it and how many confirmations the answer needs. The format a
//! publisher writes (JSON, or a one-line shorthand for one condition) is documented in
//! `docs/access-policy.md`; both parsers run on operator input that may have come from
//! anywhere, so they are bounded ([`POLICY_BYTES_MAX`], [`GATE_DEPTH_MAX`],
//! [`GATE_CONDITIONS_MAX`]) and fuzzed (target `gate_parse`).
//!
//! # JSON
//! ```json
//! {"any": [
//!   {"erc1155": {"chain": 31337, "contract": "0x…", "id": "7", "min": "1"}},
//!   {"all": [
//!     {"erc20":  {"chain": 1, "contract": "0x…", "min": "1000000000000000000", "confirmations": 12}},
//!     {"erc721": {"chain": 1, "contract": "0x…", "id": "42"}}
//!   ]}
//! ]}
//! ```
//! Numbers (`id`, `min`) are decimal strings or JSON integers (token amounts exceed what JSON
//! numbers carry exactly). `erc721` with an `id` asks `ownerOf(id) == holder`; without one,
//! `balanceOf(holder) >= min` (`min` defaults to 1, as does `erc1155`'s). A minimum of 0 is
//! refused: it would let anyone in (make the repository public instead). Unknown fields are
//! refused, so a typo (`"confirmation"`) is an error, never a silently weaker gate.
//!
//! # Shorthand (one condition)
//! `erc20:<chain>:<contract>>=<min>`, `erc721:<chain>:<contract>:<id>`,
//! `erc721:<chain>:<contract>[>=<min>]`, `erc1155:<chain>:<contract>:<id>[>=<min>]`, each with
//! an optional `,confirmations=<n>`. Example: `erc1155:31337:0xabc…:7>=1`.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest policy text accepted (JSON or shorthand).
pub const POLICY_BYTES_MAX: usize = 16 * 1024;
/// Deepest nesting of `all`/`any` (a condition alone is depth 1).
pub const GATE_DEPTH_MAX: usize = 4;
/// Most conditions in one gate: each may cost a chain call on a cold request.
pub const GATE_CONDITIONS_MAX: usize = 16;
/// Most confirmations a condition may ask for (about 3 h 20 min of Ethereum blocks).
pub const CONFIRMATIONS_MAX: u64 = 1000;

/// A gate: one condition, or all / any of several. Serialized as the policy JSON of the
/// module docs (in the registry and the admin API alike), and checked again when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// One condition.
    Condition(Condition),
    /// Every one of these.
    All(Vec<Gate>),
    /// At least one of these.
    Any(Vec<Gate>),
}

/// One on-chain condition on the address of whoever asks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Condition {
    /// The EIP-155 chain id.
    pub chain: u64,
    /// The token contract.
    pub contract: Address,
    /// What is asked of it.
    pub check: Check,
    /// Blocks below the chain's head the answer is read at (`latest - confirmations`).
    pub confirmations: u64,
}

/// What a condition asks of its contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// ERC-20 `balanceOf(holder) >= min`.
    Erc20Balance {
        /// At least 1.
        min: U256,
    },
    /// ERC-721 `ownerOf(id) == holder`.
    Erc721Owner {
        /// The token id.
        id: U256,
    },
    /// ERC-721 `balanceOf(holder) >= min`.
    Erc721Balance {
        /// At least 1.
        min: U256,
    },
    /// ERC-1155 `balanceOf(holder, id) >= min`.
    Erc1155Balance {
        /// The token id.
        id: U256,
        /// At least 1.
        min: U256,
    },
}

impl Check {
    /// The token standard's name, as in the policy format (`erc20`, `erc721`, `erc1155`).
    pub fn standard(&self) -> &'static str {
        match self {
            Check::Erc20Balance { .. } => "erc20",
            Check::Erc721Owner { .. } | Check::Erc721Balance { .. } => "erc721",
            Check::Erc1155Balance { .. } => "erc1155",
        }
    }
}

/// A policy that could not be read; the message says where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access policy: {0}")]
pub struct PolicyError(pub String);

fn bad<T>(m: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(m.into()))
}

impl Gate {
    /// Reads a policy: JSON when it starts with `{`, else the one-condition shorthand.
    pub fn parse(text: &str) -> Result<Gate, PolicyError> {
        if text.len() > POLICY_BYTES_MAX {
            return bad(format!("{} bytes, at most {POLICY_BYTES_MAX}", text.len()));
        }
        let t = text.trim();
        let gate = if t.starts_with('{') {
            // serde_json limits its own recursion (128); the depth check below is ours.
            let v: Value =
                serde_json::from_str(t).map_err(|e| PolicyError(format!("not JSON: {e}")))?;
            gate_of(&v, 1, "")?
        } else {
            Gate::Condition(t.parse()?)
        };
        gate.check_bounds()?;
        Ok(gate)
    }

    /// Every condition of the gate, depth first.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut out = Vec::new();
        fn walk<'a>(g: &'a Gate, out: &mut Vec<&'a Condition>) {
            match g {
                Gate::Condition(c) => out.push(c),
                Gate::All(v) | Gate::Any(v) => v.iter().for_each(|g| walk(g, out)),
            }
        }
        walk(self, &mut out);
        out
    }

    /// The chains the gate names, each once.
    pub fn chains(&self) -> Vec<u64> {
        let mut c: Vec<u64> = self.conditions().iter().map(|c| c.chain).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    fn depth(&self) -> usize {
        match self {
            Gate::Condition(_) => 1,
            Gate::All(v) | Gate::Any(v) => 1 + v.iter().map(Gate::depth).max().unwrap_or(0),
        }
    }

    /// The limits, checked again on a gate that did not come through [`Gate::parse`] (one
    /// read back from the registry, or built in code).
    pub fn check_bounds(&self) -> Result<(), PolicyError> {
        if self.depth() > GATE_DEPTH_MAX {
            return bad(format!("nested deeper than {GATE_DEPTH_MAX} levels"));
        }
        let n = self.conditions().len();
        if n > GATE_CONDITIONS_MAX {
            return bad(format!("{n} conditions, at most {GATE_CONDITIONS_MAX}"));
        }
        fn walk(g: &Gate) -> Result<(), PolicyError> {
            match g {
                Gate::Condition(c) => c.check_bounds(),
                Gate::All(v) | Gate::Any(v) if v.is_empty() => {
                    bad("an empty \"all\" or \"any\" (say what it should require)")
                }
                Gate::All(v) | Gate::Any(v) => v.iter().try_for_each(walk),
            }
        }
        walk(self)
    }

    /// The gate as policy JSON (what [`Gate::parse`] reads back).
    pub fn to_json(&self) -> Value {
        match self {
            Gate::Condition(c) => c.to_json(),
            Gate::All(v) => {
                serde_json::json!({ "all": v.iter().map(Gate::to_json).collect::<Vec<_>>() })
            }
            Gate::Any(v) => {
                serde_json::json!({ "any": v.iter().map(Gate::to_json).collect::<Vec<_>>() })
            }
        }
    }
}

impl Serialize for Gate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Gate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let g = gate_of(&v, 1, "").map_err(serde::de::Error::custom)?;
        g.check_bounds().map_err(serde::de::Error::custom)?;
        Ok(g)
    }
}

impl fmt::Display for Gate {
    /// One line: conditions in shorthand, trees as `all(…)` / `any(…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, v: &[Gate]| {
            write!(f, "{name}(")?;
            for (i, g) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{g}")?;
            }
            f.write_str(")")
        };
        match self {
            Gate::Condition(c) => write!(f, "{c}"),
            Gate::All(v) => list(f, "all", v),
            Gate::Any(v) => list(f, "any", v),
        }
    }
}

impl Condition {
    fn check_bounds(&self) -> Result<(), PolicyError> {
        let min = match self.check {
            Check::Erc20Balance { min }
            | Check::Erc721Balance { min }
            | Check::Erc1155Balance { min, .. } => min,
            Check::Erc721Owner { .. } => U256::from(1),
        };
        if min.is_zero() {
            return bad("a minimum of 0 lets anyone in: make the repository public instead");
        }
        if self.contract.is_zero() {
            return bad("the zero address is not a token contract");
        }
        if self.confirmations > CONFIRMATIONS_MAX {
            return bad(format!(
                "confirmations {} is more than {CONFIRMATIONS_MAX}",
                self.confirmations
            ));
        }
        if self.chain == 0 {
            return bad("chain id 0 is not a chain");
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("chain".into(), self.chain.into());
        body.insert("contract".into(), self.contract.to_checksum(None).into());
        match self.check {
            Check::Erc20Balance { min } | Check::Erc721Balance { min } => {
                body.insert("min".into(), min.to_string().into());
            }
            Check::Erc721Owner { id } => {
                body.insert("id".into(), id.to_string().into());
            }
            Check::Erc1155Balance { id, min } => {
                body.insert("id".into(), id.to_string().into());
                body.insert("min".into(), min.to_string().into());
            }
        }
        if self.confirmations > 0 {
            body.insert("confirmations".into(), self.confirmations.into());
        }
        let mut m = Map::new();
        m.insert(self.check.standard().into(), Value::Object(body));
        Value::Object(m)
    }
}

impl fmt::Display for Condition {
    /// The shorthand ([`Condition::from_str`] reads it back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (std, chain, c) = (
            self.check.standard(),
            self.chain,
            self.contract.to_checksum(None),
        );
        match self.check {
            Check::Erc20Balance { min } | Check::Erc721Balance { min } => {
                write!(f, "{std}:{chain}:{c}>={min}")?
            }
            Check::Erc721Owner { id } => write!(f, "{std}:{chain}:{c}:{id}")?,
            Check::Erc1155Balance { id, min } => write!(f, "{std}:{chain}:{c}:{id}>={min}")?,
        }
        if self.confirmations > 0 {
            write!(f, ",confirmations={}", self.confirmations)?;
        }
        Ok(())
    }
}

impl FromStr for Condition {
    type Err = PolicyError;

    /// The one-condition shorthand (see the module docs).
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if s.len() > POLICY_BYTES_MAX {
            return bad("the condition is too long");
        }
        let usage = "expected erc20:<chain>:<contract>>=<min>, erc721:<chain>:<contract>:<id>, \
                     erc721:<chain>:<contract>[>=<min>] or erc1155:<chain>:<contract>:<id>[>=<min>], \
                     optionally followed by ,confirmations=<n>";
        let (main, confirmations) = match s.split_once(',') {
            None => (s, 0),
            Some((m, rest)) => {
                let n = rest
                    .strip_prefix("confirmations=")
                    .ok_or_else(|| PolicyError(format!("{rest:?}: {usage}")))?;
                (m, number_u64(n, "confirmations")?)
            }
        };
        let (head, min) = match main.split_once(">=") {
            None => (main, None),
            Some((h, m)) => (h, Some(number(m, "min")?)),
        };
        let parts: Vec<&str> = head.split(':').collect();
        let (std, chain, contract, id) = match parts.as_slice() {
            [s, ch, c] => (*s, *ch, *c, None),
            [s, ch, c, id] => (*s, *ch, *c, Some(number(id, "id")?)),
            _ => return bad(format!("{s:?}: {usage}")),
        };
        let chain = number_u64(chain, "chain")?;
        let contract = address(contract)?;
        let check = match (std, id, min) {
            ("erc20", None, Some(min)) => Check::Erc20Balance { min },
            ("erc20", _, _) => return bad(format!("erc20 takes a minimum and no id: {usage}")),
            ("erc721", Some(id), None) => Check::Erc721Owner { id },
            ("erc721", Some(_), Some(_)) => {
                return bad("erc721 takes an id (owner of it) or a minimum (balance), not both");
            }
            ("erc721", None, min) => Check::Erc721Balance {
                min: min.unwrap_or(U256::from(1)),
            },
            ("erc1155", Some(id), min) => Check::Erc1155Balance {
                id,
                min: min.unwrap_or(U256::from(1)),
            },
            ("erc1155", None, _) => return bad("erc1155 needs a token id"),
            (other, _, _) => {
                return bad(format!(
                    "unknown token standard {:?}: erc20, erc721 or erc1155",
                    clip(other)
                ));
            }
        };
        let c = Condition {
            chain,
            contract,
            check,
            confirmations,
        };
        c.check_bounds()?;
        Ok(c)
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A decimal token amount or id (at most 78 digits, no sign, no leading `+`).
fn number(s: &str, what: &str) -> Result<U256, PolicyError> {
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return bad(format!("{what} {:?} is not a decimal number", clip(s)));
    }
    U256::from_str_radix(s, 10)
        .map_err(|_| PolicyError(format!("{what} {:?} is too large", clip(s))))
}

fn number_u64(s: &str, what: &str) -> Result<u64, PolicyError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return bad(format!("{what} {:?} is not a decimal number", clip(s)));
    }
    s.parse()
        .map_err(|_| PolicyError(format!("{what} {:?} is too large", clip(s))))
}

/// A contract address: `0x` and 40 hex digits, all lower, all upper, or EIP-55 checksummed
/// (a mixed-case address with a wrong checksum is a typo, refused).
pub(crate) fn address(s: &str) -> Result<Address, PolicyError> {
    let hex = s
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            PolicyError(format!(
                "{:?} is not an address (0x and 40 hex digits)",
                clip(s)
            ))
        })?;
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        return Address::parse_checksummed(s, None)
            .map_err(|_| PolicyError(format!("{s} has a wrong EIP-55 checksum")));
    }
    s.parse()
        .map_err(|_| PolicyError(format!("{:?} is not an address", clip(s))))
}

fn gate_of(v: &Value, depth: usize, at: &str) -> Result<Gate, PolicyError> {
    if depth > GATE_DEPTH_MAX {
        return bad(format!("nested deeper than {GATE_DEPTH_MAX} levels"));
    }
    let here = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    let Some(obj) = v.as_object() else {
        return bad(format!(
            "{}: expected an object",
            if at.is_empty() { "the policy" } else { at }
        ));
    };
    let mut it = obj.iter();
    let (Some((key, body)), None) = (it.next(), it.next()) else {
        return bad(format!(
            "{}: expected exactly one of all, any, erc20, erc721, erc1155",
            if at.is_empty() { "the policy" } else { at }
        ));
    };
    let at = here(key);
    match key.as_str() {
        "all" | "any" => {
            let Some(list) = body.as_array() else {
                return bad(format!("{at}: expected a list"));
            };
            if list.len() > GATE_CONDITIONS_MAX {
                return bad(format!("{at}: more than {GATE_CONDITIONS_MAX} entries"));
            }
            let gates = list
                .iter()
                .enumerate()
                .map(|(i, g)| gate_of(g, depth + 1, &format!("{at}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "all" {
                Gate::All(gates)
            } else {
                Gate::Any(gates)
            })
        }
        "erc20" | "erc721" | "erc1155" => Ok(Gate::Condition(condition_of(key, body, &at)?)),
        other => bad(format!(
            "{at}: unknown key {:?} (all, any, erc20, erc721, erc1155)",
            clip(other)
        )),
    }
}

fn condition_of(std: &str, v: &Value, at: &str) -> Result<Condition, PolicyError> {
    let Some(obj) = v.as_object() else {
        return bad(format!("{at}: expected an object"));
    };
    for k in obj.keys() {
        if !["chain", "contract", "id", "min", "confirmations"].contains(&k.as_str()) {
            return bad(format!("{at}: unknown field {:?}", clip(k)));
        }
    }
    let num = |k: &str| -> Result<Option<U256>, PolicyError> {
        match obj.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => number(s, &format!("{at}.{k}")).map(Some),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|n| Some(U256::from(n)))
                .ok_or_else(|| PolicyError(format!("{at}.{k}: not a non-negative integer"))),
            Some(_) => bad(format!("{at}.{k}: expected a decimal string or an integer")),
        }
    };
    let u64_of = |k: &str| -> Result<Option<u64>, PolicyError> {
        match obj.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| PolicyError(format!("{at}.{k}: not a non-negative integer"))),
            Some(Value::String(s)) => number_u64(s, &format!("{at}.{k}")).map(Some),
            Some(_) => bad(format!("{at}.{k}: expected an integer")),
        }
    };
    let chain = u64_of("chain")?.ok_or_else(|| PolicyError(format!("{at}: chain is missing")))?;
    let contract = match obj.get("contract") {
        Some(Value::String(s)) => {
            address(s).map_err(|e| PolicyError(format!("{at}.contract: {}", e.0)))?
        }
        _ => return bad(format!("{at}: contract (a 0x address string) is missing")),
    };
    let (id, min) = (num("id")?, num("min")?);
    let check = match (std, id, min) {
        ("erc20", None, Some(min)) => Check::Erc20Balance { min },
        ("erc20", Some(_), _) => return bad(format!("{at}: erc20 has no id")),
        ("erc20", None, None) => return bad(format!("{at}: erc20 needs a min")),
        ("erc721", Some(id), None) => Check::Erc721Owner { id },
        ("erc721", Some(_), Some(_)) => {
            return bad(format!(
                "{at}: erc721 takes an id (owner of it) or a min (balance), not both"
            ));
        }
        ("erc721", None, min) => Check::Erc721Balance {
            min: min.unwrap_or(U256::from(1)),
        },
        ("erc1155", Some(id), min) => Check::Erc1155Balance {
            id,
            min: min.unwrap_or(U256::from(1)),
        },
        _ => return bad(format!("{at}: erc1155 needs an id")),
    };
    let c = Condition {
        chain,
        contract,
        check,
        confirmations: u64_of("confirmations")?.unwrap_or(0),
    };
    c.check_bounds()
        .map_err(|e| PolicyError(format!("{at}: {}", e.0)))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";
    const A_SUM: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    #[test]
    fn shorthand_round_trips() {
        for s in [
            format!("erc1155:31337:{A_SUM}:7>=1"),
            format!("erc20:1:{A_SUM}>=1000000000000000000,confirmations=12"),
            format!("erc721:5:{A_SUM}:42"),
            format!("erc721:5:{A_SUM}>=2"),
        ] {
            let c: Condition = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
            let g = Gate::parse(&s).unwrap();
            assert_eq!(Gate::parse(&g.to_json().to_string()).unwrap(), g, "{s}");
        }
        let c: Condition = format!("erc1155:31337:{A}:7").parse().unwrap();
        assert_eq!(
            c.check,
            Check::Erc1155Balance {
                id: U256::from(7),
                min: U256::from(1)
            }
        );
        assert_eq!(c.to_string(), format!("erc1155:31337:{A_SUM}:7>=1"));
    }

    #[test]
    fn json_trees_parse_with_their_bounds() {
        let j = format!(
            r#"{{"any": [{{"erc1155": {{"chain": 31337, "contract": "{A}", "id": "7"}}}},
                {{"all": [{{"erc20": {{"chain": 1, "contract": "{A}", "min": 5, "confirmations": 2}}}},
                          {{"erc721": {{"chain": 1, "contract": "{A}", "id": "42"}}}}]}}]}}"#
        );
        let g = Gate::parse(&j).unwrap();
        assert_eq!(g.conditions().len(), 3);
        assert_eq!(g.chains(), vec![1, 31337]);
        assert_eq!(Gate::parse(&g.to_json().to_string()).unwrap(), g);
        assert!(g.to_string().starts_with("any(erc1155:31337:"));
        // Stored and sent as the same JSON.
        let back: Gate = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        // Too deep, too many, empty lists.
        let mut deep = format!(r#"{{"erc721": {{"chain": 1, "contract": "{A}"}}}}"#);
        for _ in 0..GATE_DEPTH_MAX {
            deep = format!(r#"{{"all": [{deep}]}}"#);
        }
        assert!(Gate::parse(&deep).unwrap_err().0.contains("deeper"));
        let one = format!(r#"{{"erc721": {{"chain": 1, "contract": "{A}"}}}}"#);
        let many = format!(r#"{{"any": [{}]}}"#, vec![one.as_str(); 17].join(","));
        assert!(Gate::parse(&many).is_err());
        assert!(
            Gate::parse(r#"{"all": []}"#)
                .unwrap_err()
                .0
                .contains("empty")
        );
    }

    #[test]
    fn bad_policies_say_why() {
        let cases = [
            (format!("erc1155:31337:{A}:7>=0"), "anyone"),
            (format!("erc20:1:{A}"), "minimum"),
            (format!("erc721:1:{A}:1>=2"), "not both"),
            (format!("erc1155:1:{A}"), "token id"),
            (format!("erc999:1:{A}:1"), "unknown token standard"),
            ("erc20:1:0x1234>=1".to_string(), "not an address"),
            (format!("erc20:1:{}>=1", A_SUM.replace('F', "f").replacen('b', "B", 1)), "checksum"),
            (format!("erc20:x:{A}>=1"), "chain"),
            (format!("erc20:1:{A}>=-1"), "not a decimal"),
            (format!("erc20:1:{A}>=1,confirmation=3"), "expected"),
            (format!("erc20:1:{A}>=1,confirmations=5000"), "more than"),
            (format!("erc20:0:{A}>=1"), "chain id 0"),
            (format!(r#"{{"erc20": {{"chain": 1, "contract": "{A}", "min": 1, "confirmation": 3}}}}"#), "unknown field"),
            (format!(r#"{{"erc20": {{"chain": 1, "contract": "{A}", "min": -1}}}}"#), "non-negative"),
            (r#"{"erc20": {"chain": 1, "contract": "0x0000000000000000000000000000000000000000", "min": 1}}"#.to_string(), "zero address"),
            (r#"{"all": [], "any": []}"#.to_string(), "exactly one"),
            (r#"{"nope": []}"#.to_string(), "unknown key"),
            ("{".to_string(), "not JSON"),
            ("x".repeat(POLICY_BYTES_MAX + 1), "at most"),
        ];
        for (text, want) in cases {
            let e = Gate::parse(&text).unwrap_err();
            assert!(e.0.contains(want), "{text:.80}: {e}");
        }
        // A number too large for U256.
        let big = format!("erc20:1:{A}>={}", "9".repeat(78));
        assert!(Gate::parse(&big).unwrap_err().0.contains("too large"));
    }
}
