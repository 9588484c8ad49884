//! `get`, `ls` and `add`, written once for every target. For `get` and `ls` the local store and
//! the network each open the capability their own way (a manifest from the store; records, then
//! a manifest, from peers) and hand over an [`Opened`] artifact with a [`ShardSource`];
//! everything after that is here. `add` runs the publish pipeline into an [`AddTarget`] and
//! reports it the same way for both.
//!
//! Resuming is not done here but in the read pipeline (`read_file_resume`), which every
//! `ShardSource` shares; this module only reports it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use cairn_artifact::{AddOptions, OpenedArtifact, ReadCap, Resumed, ShardSource, read_file};
use cairn_node::{Network, PublishOptions};
use cairn_store::Store;

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

/// Where `cairn add` puts an artifact.
pub enum AddTarget<'a> {
    /// The local store; pinned until `expires` (unix seconds), or for good.
    Local {
        store: &'a Store,
        expires: Option<u64>,
    },
    /// Distinct nodes of the network, with a holder record on each.
    Network {
        net: &'a Network,
        allow_reduced_durability: bool,
    },
}

/// What `cairn add` made.
pub struct Added {
    /// The read capability.
    pub cap: ReadCap,
    /// Bytes of input.
    pub bytes: u64,
}

/// `cairn add`: publishes `path` into `target` with a progress bar, then prints what was made (the
/// rate on stderr; the artifact, name and read capability on stdout, for scripts). A failed add
/// leaves nothing published: the local store collects the shards it wrote, the network's
/// holders collect theirs unpinned (and a re-run resumes, skipping shards already placed).
pub fn add(target: AddTarget<'_>, path: &Path, opts: AddOptions) -> anyhow::Result<Added> {
    let start = Instant::now();
    let bytes = input_size(path);
    let bar = bar(bytes);
    let progress = |done: u64| bar.set_position(done);
    let name = opts.name.clone();
    let res = match target {
        AddTarget::Local { store, expires } => {
            let res = cairn_artifact::encode_artifact(path, &opts, store, &progress).and_then(
                |(manifest, cap)| {
                    let (cid, manifest) = manifest.encode();
                    store.commit_artifact(&cid, &manifest, opts.name.as_deref(), expires)?;
                    Ok(cap)
                },
            );
            if res.is_err() {
                // Shards of a failed add are unpinned; reclaim them now, not at the next gc.
                if let Err(gc) = store.gc() {
                    tracing::warn!("cleanup after the failed add did not finish: {gc}");
                }
            }
            res.map(|cap| (cap, String::new()))
                .with_context(|| format!("adding {} failed; nothing was published", path.display()))
        }
        AddTarget::Network {
            net,
            allow_reduced_durability,
        } => net
            .publish(
                path,
                &PublishOptions {
                    add: opts,
                    allow_reduced_durability,
                },
                &progress,
            )
            .map(|report| {
                if report.reduced_durability {
                    eprintln!(
                        "warning: reduced durability: fewer nodes than shards per chunk; losing one node may lose more than one shard of a chunk"
                    );
                }
                let placed = format!(
                    " to {} nodes: {} shards sent, {} already there",
                    report.nodes, report.sent, report.skipped
                );
                (report.cap, placed)
            })
            .with_context(|| {
                format!(
                    "publishing {} failed; nothing was published (run the same add again to resume)",
                    path.display()
                )
            }),
    };
    bar.finish_and_clear();
    let (cap, placed) = res?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "added {} in {:.2} s ({}/s){placed}",
        human(bytes),
        secs,
        human((bytes as f64 / secs.max(1e-9)) as u64)
    );
    println!("artifact: {}", cap.cid);
    if let Some(n) = name {
        println!("name: {n}");
    }
    println!("read capability: {cap}");
    Ok(Added { cap, bytes })
}

/// Bytes in the regular files under `path` (for the progress bar; the pipeline checks sizes).
fn input_size(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| input_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}
