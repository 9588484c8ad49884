//! Parsing of byte sizes and durations given on the command line.

use anyhow::{Context, bail};

/// Parses `500GiB`, `10GB`, `64MiB`, `1024` (bytes).
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("size {s:?} does not start with a number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => bail!(
            "size {s:?} has unknown unit {other:?}; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
        ),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

/// Parses `30d`, `12h`, `15m`, `45s` into seconds.
pub fn parse_duration_secs(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?} does not start with a number"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => bail!("duration {s:?} has unknown unit {other:?}; use s, m, h, d or w"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("duration {s:?} is too long"))
}

/// Formats a byte count for people.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("5 MB").unwrap(), 5_000_000);
        assert!(parse_bytes("GiB").is_err());
        assert!(
            parse_bytes("5XB")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration_secs("12h").unwrap(), 43_200);
        assert!(parse_duration_secs("12").is_err());
        assert!(parse_duration_secs("x").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(5), "5 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
