//! `cairn get <cap> model.safetensors --tensor 'layers.0.*' -o part.safetensors`: a safetensors
//! file of only the tensors the patterns select, from the local store or the network. The
//! header is read (bounded, validated) through the ranged-read path, then only the selected
//! tensors' ranges: the chunks fetched are the header's and those tensors', and their count is
//! printed.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use cairn_artifact::{
    Artifact, ChunkCache, Cid, FileEntry, NoCache, ReadCap, RecentChunks, ShardSource,
    check_tensor_patterns, read_file_pieces, read_safetensors_header,
};

use crate::config::DataDir;
use crate::units::human;

/// Counts the chunks a read fetched and opened (every one is offered to the cache; those the
/// cache already held are not).
struct Counted {
    cache: RecentChunks<NoCache>,
    fetched: AtomicU64,
}

impl ChunkCache for Counted {
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes> {
        self.cache.get(artifact, index)
    }
    fn insert(&self, artifact: &Cid, index: usize, plain: Bytes) {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.cache.insert(artifact, index, plain);
    }
}

/// The file `file` of the artifact, or an error naming it.
fn find<'a>(art: &Artifact<'a>, file: Option<&str>) -> anyhow::Result<&'a FileEntry> {
    let Some(path) = file else {
        bail!(
            "--tensor reads one safetensors file: name it, e.g. `cairn get <cap> model.safetensors --tensor 'layers.0.*' -o part.safetensors`"
        );
    };
    Ok(art
        .private
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| cairn_artifact::Error::FileNotFound {
            artifact: art.cid,
            path: path.to_string(),
        })?)
}

/// Writes the selected tensors of `file` as a safetensors file to `out` (`-`: standard output;
/// a path: written to a temporary name and renamed once complete).
pub fn write_selected(
    art: &Artifact<'_>,
    source: &dyn ShardSource,
    file: Option<&str>,
    patterns: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    // Refused before anything is fetched.
    check_tensor_patterns(patterns)?;
    let f = find(art, file)?;
    let counted = Counted {
        cache: RecentChunks::new(NoCache),
        fetched: AtomicU64::new(0),
    };
    let header = read_safetensors_header::<anyhow::Error>(f.size, &mut |r| {
        let mut buf = Vec::with_capacity((r.end - r.start) as usize);
        read_file_pieces(art, source, &counted, f, r, &mut |piece| {
            buf.extend_from_slice(&piece);
            Ok(())
        })?;
        Ok(buf)
    })
    .with_context(|| format!("{} is not a safetensors file Cairn can read", f.path))?;
    let sel = header
        .select(patterns)
        .with_context(|| format!("selecting tensors of {}", f.path))?;
    let write = |w: &mut (dyn Write + Send)| -> anyhow::Result<()> {
        w.write_all(&sel.header)?;
        for r in &sel.ranges {
            read_file_pieces(art, source, &counted, f, r.clone(), &mut |piece| {
                w.write_all(&piece)
            })?;
        }
        w.flush()?;
        Ok(())
    };
    if out.as_os_str() == "-" {
        let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
        write(&mut stdout)?;
    } else {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".cairn-partial-{}", std::process::id()));
        let res = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))
            .and_then(|file| write(&mut std::io::BufWriter::new(file)));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let chunks = f.chunk_count;
    eprintln!(
        "wrote {} tensors of {} ({} of {}); chunks fetched: {} of {}",
        sel.tensors.len(),
        header.names().len(),
        human(sel.len()),
        human(f.size),
        counted.fetched.load(Ordering::Relaxed),
        chunks
    );
    Ok(())
}

/// `cairn get --tensor` on the local store.
pub fn get_local(
    dd: &DataDir,
    cap: &str,
    file: Option<&str>,
    patterns: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    let cap: ReadCap = cap.parse()?;
    let store = dd.open_store()?;
    let art = store.open_artifact(&cap)?;
    write_selected(&art.artifact(), &store, file, patterns, out)
}

/// `cairn get --tensor` over the network.
pub fn get_net(
    peers: &[String],
    network: &str,
    cap: &str,
    file: Option<&str>,
    patterns: &[String],
    out: &Path,
) -> anyhow::Result<()> {
    let cap: ReadCap = cap.parse()?;
    check_tensor_patterns(patterns)?;
    let rt = crate::netcmd::runtime()?;
    let net = rt.block_on(crate::netcmd::connect(peers, network, None))?;
    let res = (|| {
        let remote = rt.block_on(net.open(&cap))?;
        write_selected(
            &remote.artifact(),
            &net.source(&remote),
            file,
            patterns,
            out,
        )
    })();
    rt.block_on(net.close());
    res
}
