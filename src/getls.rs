//! `get` and `ls`, written once for every target: the local store and the network each open the
//! capability their own way (a manifest from the store; records, then a manifest, from peers)
//! and hand over an [`Opened`] artifact with a [`ShardSource`]; everything after that is here.
//!
//! Resuming is not done here but in the read pipeline (`read_file_resume`), which every
//! `ShardSource` shares; this module only reports it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use cairn_artifact::{OpenedArtifact, Resumed, ShardSource, read_file};

use crate::commands::bar;
use crate::units::human;

/// An artifact opened from a read capability, wherever it came from.
pub struct Opened<'a> {
    /// The manifest and its opened private part.
    pub art: &'a OpenedArtifact,
    /// Where the shards are, when the target knows (the network: holders and durability),
    /// added to `ls`'s summary line.
    pub placement: Option<String>,
}

impl std::ops::Deref for Opened<'_> {
    type Target = OpenedArtifact;

    fn deref(&self) -> &OpenedArtifact {
        self.art
    }
}

/// `cairn get`: the whole artifact into the folder `out`, or one `file` into `out` (`-` for
/// standard output). A file or artifact read before and interrupted continues from what was
/// verified on disk; stderr says how much was reused.
pub fn get(
    opened: &Opened<'_>,
    source: &dyn ShardSource,
    file: Option<&str>,
    out: &Path,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let bar = bar(opened.size());
    let progress = |n: u64| bar.inc(n);
    let art = opened.artifact();
    let resumed = match file {
        None => cairn_artifact::read_artifact(&art, source, out, &progress)?,
        Some(path) => {
            let f = opened.file(path)?;
            bar.set_length(f.size);
            if out.as_os_str() == "-" {
                let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
                read_file(&art, source, f, 0..f.size, &mut stdout, &progress)?;
                stdout.flush()?;
                Resumed {
                    verified: 0,
                    fetched: f.size,
                }
            } else {
                cairn_artifact::read_file_resume(&art, source, f, out, &progress)?
            }
        }
    };
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if resumed.verified > 0 {
        // Exact counts in parentheses, as `cairn stat` gives them, for scripts and tests.
        eprintln!(
            "resumed: {} verified on disk ({} bytes), fetched {} ({} bytes)",
            human(resumed.verified),
            resumed.verified,
            human(resumed.fetched),
            resumed.fetched
        );
    }
    eprintln!(
        "fetched and verified {} in {:.2} s ({}/s)",
        human(resumed.fetched),
        secs,
        human((resumed.fetched as f64 / secs.max(1e-9)) as u64)
    );
    Ok(())
}

/// `cairn ls`: the name, the chunk count and code, then one line per file.
pub fn ls(opened: &Opened<'_>) {
    if let Some(n) = &opened.private.name {
        println!("# {n}");
    }
    println!(
        "# {} chunks, {}-of-{}{}",
        opened.manifest.chunks().len(),
        opened.manifest.params().k(),
        opened.manifest.params().n(),
        opened
            .placement
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    );
    for f in &opened.private.files {
        println!("{:>14} {}", f.size, f.path);
    }
}
