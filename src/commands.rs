//! The subcommands.

use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cairn_artifact::{AddOptions, Cid, KeyMode, ReadCap, read_artifact};
use cairn_erasure::Params;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{self, DataDir};
use crate::units::{human, parse_bytes, parse_duration_secs};
use crate::{Cli, Command, OrgCmd};

/// Longest capability file read: a capability is at most 512 characters.
const CAP_FILE_BYTES_MAX: u64 = 4096;

/// Reads a read capability from `path`, or from standard input when `path` is `-`. A capability
/// on the command line shows in `/proc/*/cmdline` to every local user; a file or a pipe does
/// not.
pub fn read_cap_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let what = if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let mut bytes = Vec::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot read {what}"))?)
    };
    reader
        .take(CAP_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > CAP_FILE_BYTES_MAX {
        bail!(
            "{what} is longer than {CAP_FILE_BYTES_MAX} bytes; it should hold one read capability"
        );
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("{what} is not UTF-8 text; it should hold one read capability")
    })?;
    let cap = text.trim();
    if cap.is_empty() {
        bail!("{what} is empty; it should hold one read capability");
    }
    Ok(cap.to_string())
}

/// The capability given as an argument or, with `--cap-file`, read from a file or stdin.
fn cap_arg(cap: Option<String>, cap_file: Option<std::path::PathBuf>) -> anyhow::Result<String> {
    match (cap, cap_file) {
        (_, Some(p)) => read_cap_file(&p),
        (Some(c), None) => Ok(c),
        (None, None) => bail!("give a read capability, or --cap-file <path> (- for stdin)"),
    }
}

/// `get`'s capability and file: with `--cap-file`, the one positional argument is the file.
fn cap_and_file(
    cap: Option<String>,
    file: Option<String>,
    cap_file: Option<std::path::PathBuf>,
) -> anyhow::Result<(String, Option<String>)> {
    match cap_file {
        Some(p) => {
            if file.is_some() {
                bail!("with --cap-file, give at most one argument: the file to fetch");
            }
            Ok((read_cap_file(&p)?, cap))
        }
        None => Ok((cap_arg(cap, None)?, file)),
    }
}

/// Gateway grant ids from the command line.
fn parse_gateways(ids: &[String]) -> anyhow::Result<Vec<cairn_encryption::GatewayId>> {
    ids.iter()
        .map(|g| {
            g.parse()
                .with_context(|| format!("{g:?} is not a grant id (see `cairn id`)"))
        })
        .collect()
}

/// A capability as given, or the one `org/name[@rev]` resolves to on the network through the
/// grant to this data directory.
fn by_name(
    peers: &[String],
    network: &str,
    dir: &std::path::Path,
    arg: String,
) -> anyhow::Result<String> {
    if !crate::namecmd::is_repo(&arg) {
        return Ok(arg);
    }
    let repo = crate::namecmd::parse_repo(&arg, false)?;
    Ok(crate::namecmd::resolve_cap(peers, network, dir, &repo)?.to_string())
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = config::resolve(cli.data_dir)?;
    match cli.command {
        Command::Init { quota } => {
            let quota = parse_bytes(&quota)?;
            DataDir::init(&dir, quota)?;
            println!("initialised {} (quota {})", dir.display(), human(quota));
            Ok(())
        }
        Command::Add {
            path,
            name,
            dataset,
            grant,
            private,
            gate,
            data_shards,
            parity_shards,
            random_keys,
            pin_for,
            allow_reduced_durability,
        } => {
            let dd = DataDir::open(&dir)?;
            let params = Params::new(data_shards, parity_shards)?;
            let expires = expiry(pin_for.as_deref())?;
            if let Some(n) = &name {
                validate_name(n)?;
            }
            let key_mode = if random_keys {
                KeyMode::Random
            } else {
                KeyMode::Convergent(dd.convergence_secret()?)
            };
            let named = match (&name, cli.peers.is_empty()) {
                (Some(n), false) => Some(crate::netcmd::NamedAdd {
                    repo: crate::namecmd::parse_repo(n, dataset)?,
                    policy: crate::namecmd::policy_text(private, gate.as_deref())?,
                    grants: parse_gateways(&grant)?,
                }),
                _ => None,
            };
            let opts = AddOptions {
                params,
                key_mode,
                name,
                record_signers: Vec::new(),
            };
            if !cli.peers.is_empty() {
                return crate::netcmd::add(
                    &cli.peers,
                    &cli.network,
                    &dd,
                    &path,
                    opts,
                    allow_reduced_durability,
                    named,
                );
            }
            if !grant.is_empty() || private || gate.is_some() || dataset {
                bail!(
                    "--grant, --private, --gate and --dataset name a revision on the network: give --peer"
                );
            }
            let store = dd.open_store()?;
            crate::getls::add(
                crate::getls::AddTarget::Local {
                    store: &store,
                    expires,
                },
                &path,
                opts,
            )?;
            Ok(())
        }
        Command::Get {
            cap,
            file,
            cap_file,
            out,
            tensor,
        } if !tensor.is_empty() => {
            let (cap, file) = cap_and_file(cap, file, cap_file)?;
            if cli.peers.is_empty() {
                crate::tensors::get_local(
                    &DataDir::open(&dir)?,
                    &cap,
                    file.as_deref(),
                    &tensor,
                    &out,
                )
            } else {
                crate::tensors::get_net(
                    &cli.peers,
                    &cli.network,
                    &cap,
                    file.as_deref(),
                    &tensor,
                    &out,
                )
            }
        }
        Command::Get {
            cap,
            file,
            cap_file,
            out,
            ..
        } if !cli.peers.is_empty() => {
            let (cap, file) = cap_and_file(cap, file, cap_file)?;
            let cap = by_name(&cli.peers, &cli.network, &dir, cap)?;
            crate::netcmd::get(&cli.peers, &cli.network, &cap, file.as_deref(), &out)
        }
        Command::Ls { cap, cap_file } if !cli.peers.is_empty() => {
            let cap = by_name(&cli.peers, &cli.network, &dir, cap_arg(cap, cap_file)?)?;
            crate::netcmd::ls(&cli.peers, &cli.network, &cap)
        }
        Command::Id => {
            // A gateway's folder may never have been `cairn init`-ed: it has a grant key only.
            if let Ok(dd) = DataDir::open(&dir) {
                let node = cairn_swarm::secret_key_from_bytes(&dd.node_key()?)?.public();
                let publisher = cairn_swarm::secret_key_from_bytes(&dd.publisher_key()?)?.public();
                println!("node: {node}");
                println!("publisher: {publisher}");
            }
            println!("grant: {}", crate::config::grant_secret(&dir)?.id());
            Ok(())
        }
        Command::Grant {
            repo,
            gateways,
            revoke,
            dataset,
        } => {
            if cli.peers.is_empty() {
                bail!("grants live on the network: give --peer");
            }
            let repo = crate::namecmd::parse_repo(&repo, dataset)?;
            if repo.rev.is_some() {
                bail!("a grant applies to the current revision: give `org/name` without `@`");
            }
            crate::namecmd::grant(
                &cli.peers,
                &cli.network,
                &DataDir::open(&dir)?,
                &repo,
                &parse_gateways(&gateways)?,
                revoke,
            )
        }
        Command::Org {
            action:
                OrgCmd::Delegate {
                    org,
                    member,
                    valid_for,
                },
        } => {
            let secs = parse_duration_secs(&valid_for)?;
            if secs == 0 || secs > 3650 * 24 * 3600 {
                bail!("--for {valid_for}: give between 1s and 3650d");
            }
            let token = crate::namecmd::delegate(&DataDir::open(&dir)?, &org, &member, secs)?;
            eprintln!(
                "delegation of org {} to {member} until {}; the member runs: cairn org join <it>",
                token.org,
                crate::netcmd::date(token.delegation.until_ms)
            );
            println!("{token}");
            Ok(())
        }
        Command::Org {
            action: OrgCmd::Join { delegation },
        } => {
            let token = crate::namecmd::join(&DataDir::open(&dir)?, &delegation)?;
            println!(
                "this data directory signs names of org {} under key {} until {}",
                token.org,
                token.org_key,
                crate::netcmd::date(token.delegation.until_ms)
            );
            Ok(())
        }
        Command::Log {
            repo,
            dataset,
            json,
        } => {
            if cli.peers.is_empty() {
                bail!("names live on the network: give --peer");
            }
            crate::namecmd::log(
                &cli.peers,
                &cli.network,
                &crate::namecmd::parse_repo(&repo, dataset)?,
                json,
            )
        }
        Command::Node {
            action: Some(action),
            ..
        } => crate::carecmd::node_cmd(&DataDir::open(&dir)?, action),
        Command::Node {
            action: None,
            listen,
            bootstrap,
            audit_period,
            no_repair,
            metrics,
            lease_grace,
        } => {
            let care = crate::netcmd::NodeCare {
                care: cairn_node::CareConfig {
                    period: std::time::Duration::from_secs(
                        parse_duration_secs(&audit_period)?.max(1),
                    ),
                    repair: !no_repair,
                },
                metrics,
                lease_grace: std::time::Duration::from_secs(parse_duration_secs(&lease_grace)?),
            };
            crate::netcmd::node(
                &DataDir::open(&dir)?,
                &cli.network,
                listen,
                &bootstrap,
                care,
            )
        }
        Command::Peers => crate::netcmd::peers(&cli.peers, &cli.network),
        Command::Receipts { action } => crate::carecmd::receipts_cmd(action),
        Command::Status { artifact, json } => {
            crate::carecmd::status(&cli.peers, &cli.network, &parse_cid(&artifact)?, json)
        }
        Command::Repair { artifact } => crate::carecmd::repair(
            &cli.peers,
            &cli.network,
            &DataDir::open(&dir)?,
            &parse_cid(&artifact)?,
        ),
        Command::Gateway {
            listen,
            admin_listen,
            streams,
            streams_per_client,
            connections_per_client,
            transport,
        } => {
            let limits = crate::gatewaycmd::Limits {
                streams,
                streams_per_client,
                connections_per_client,
            };
            crate::gatewaycmd::serve(
                &dir,
                &cli.peers,
                &cli.network,
                (listen, admin_listen),
                limits,
                transport,
            )
        }
        Command::Register {
            repo,
            cap,
            cap_file,
            dataset,
            private,
            public,
            gate,
        } => {
            let cap = cap_arg(cap, cap_file)?;
            let policy = crate::gatewaycmd::policy_arg(private, public, gate.as_deref())?;
            crate::gatewaycmd::register(&dir, &repo, &cap, dataset, policy)
        }
        Command::Gate {
            repo,
            policy,
            remove,
            private,
            dataset,
        } => {
            let policy = crate::gatewaycmd::policy_arg(private, remove, policy.as_deref())?
                .context("give a policy, --remove or --private")?;
            crate::gatewaycmd::set_gate(&dir, &repo, dataset, policy)
        }
        Command::Apikey { action } => {
            use crate::ApikeyCmd as A;
            use crate::gatewaycmd::KeyAction;
            let action = match action {
                A::Create {
                    scopes,
                    expires,
                    allow_ip,
                    rate,
                    label,
                    client_cert,
                } => KeyAction::Create {
                    label,
                    scopes,
                    expires,
                    allow_ip,
                    rate,
                    client_cert,
                },
                A::List => KeyAction::List,
                A::Revoke { id } => KeyAction::Revoke { id },
                A::Rotate { id, grace } => KeyAction::Rotate { id, grace },
                A::Audit { limit, anonymous } => KeyAction::Audit { limit, anonymous },
                A::RevokeCert {
                    serial,
                    fingerprint,
                    label,
                } => KeyAction::RevokeCert {
                    serial,
                    fingerprint,
                    label,
                },
                A::Certs => KeyAction::Certs,
                A::Usage { since, json } => KeyAction::Usage { since, json },
            };
            crate::gatewaycmd::apikey(&dir, action)
        }
        Command::Devnet {
            nodes,
            dir: devdir,
            quota,
            demo,
            demo_mib,
            exit_after_demo,
            tls,
            audit_period,
        } => crate::devnet::run(crate::devnet::DevnetOptions {
            nodes,
            dir: devdir,
            quota: parse_bytes(&quota)?,
            network: cli.network.clone(),
            demo,
            demo_mib,
            exit_after_demo,
            tls,
            audit_period,
        }),
        Command::Get {
            cap,
            file,
            cap_file,
            out,
            ..
        } => {
            let (cap, file) = cap_and_file(cap, file, cap_file)?;
            let store = DataDir::open(&dir)?.open_store()?;
            let cap = parse_cap(&cap)?;
            let art = store.open_artifact(&cap)?;
            crate::getls::get(
                &crate::getls::Opened {
                    art: &art,
                    placement: None,
                },
                &store,
                file.as_deref(),
                &out,
            )
        }
        Command::Ls { cap, cap_file } => {
            let cap = cap_arg(cap, cap_file)?;
            let store = DataDir::open(&dir)?.open_store()?;
            let cap = parse_cap(&cap)?;
            let art = store.open_artifact(&cap)?;
            crate::getls::ls(&crate::getls::Opened {
                art: &art,
                placement: None,
            });
            Ok(())
        }
        Command::Pin {
            cid,
            pin_for,
            lease_term,
        } if !cli.peers.is_empty() => crate::netcmd::pin(
            &cli.peers,
            &cli.network,
            &DataDir::open(&dir)?,
            &parse_cid(&cid)?,
            pin_for.as_deref(),
            lease_term.as_deref(),
        ),
        Command::Unpin { cid } if !cli.peers.is_empty() => crate::netcmd::unpin(
            &cli.peers,
            &cli.network,
            &DataDir::open(&dir)?,
            &parse_cid(&cid)?,
        ),
        Command::Pin {
            cid,
            pin_for,
            lease_term,
        } => {
            if lease_term.is_some() {
                bail!("--lease-term is for pins on the network (with --peer)");
            }
            let store = DataDir::open(&dir)?.open_store()?;
            let cid = parse_cid(&cid)?;
            store.pin(&cid, expiry(pin_for.as_deref())?)?;
            println!("pinned {cid}");
            Ok(())
        }
        Command::Unpin { cid } => {
            let store = DataDir::open(&dir)?.open_store()?;
            let cid = parse_cid(&cid)?;
            if !store.unpin(&cid)? {
                bail!("{cid} is not pinned; `cairn pins` lists the pins");
            }
            println!("unpinned {cid}; run `cairn gc` to reclaim its space");
            Ok(())
        }
        Command::Pins => {
            let dd = DataDir::open(&dir)?;
            let store = dd.open_store()?;
            let now = now();
            for p in store.pins()? {
                let state = match p.expires_at {
                    None => "forever".to_string(),
                    Some(e) if e > now => format!("expires in {} s", e - now),
                    Some(_) => "lapsed".to_string(),
                };
                println!("{} {state}", p.cid);
            }
            // Network pins: leases a `cairn node` on this data directory keeps renewing.
            let file = cairn_node::LeaseFile::read(&dd.path.join(cairn_node::LEASES_FILE))?;
            for p in file.pins {
                let left = |ms: u64| ms.saturating_sub(now * 1000) / 1000;
                let until = match p.until_ms {
                    None => "renewed until unpinned".to_string(),
                    Some(u) => format!("renewed for {} s more", left(u)),
                };
                println!(
                    "{} network lease, held for {} s, {until}",
                    p.cid,
                    left(p.lease_until_ms)
                );
            }
            Ok(())
        }
        Command::Gc => {
            let store = DataDir::open(&dir)?.open_store()?;
            let r = store.gc()?;
            println!(
                "removed {} shards, {} manifests, {} leftover files; freed {}",
                r.shards,
                r.manifests,
                r.orphan_files,
                human(r.bytes)
            );
            Ok(())
        }
        Command::Stat => {
            let store = DataDir::open(&dir)?.open_store()?;
            let s = store.stat()?;
            println!("used: {} ({} bytes)", human(s.used), s.used);
            println!("quota: {} ({} bytes)", human(s.quota), s.quota);
            println!("shards: {}", s.shards);
            println!("manifests: {}", s.manifests);
            println!("pins: {}", s.pins);
            Ok(())
        }
        Command::Verify => {
            let store = DataDir::open(&dir)?.open_store()?;
            let bad = store.verify_all()?;
            let s = store.stat()?;
            for (cid, why) in &bad {
                println!("corrupted {cid}: {why}");
            }
            if !bad.is_empty() {
                bail!(
                    "{} of {} shards failed verification; artifacts with at most m bad shards per chunk still read",
                    bad.len(),
                    s.shards
                );
            }
            println!("all {} shards verified", s.shards);
            Ok(())
        }
        Command::Demo { size_mib } => demo(size_mib),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn expiry(pin_for: Option<&str>) -> anyhow::Result<Option<u64>> {
    pin_for
        .map(|d| Ok(now() + parse_duration_secs(d)?))
        .transpose()
}

fn validate_name(n: &str) -> anyhow::Result<()> {
    let ok = n.len() <= 200
        && n.split('/').count() == 2
        && n.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && p != "."
                && p != ".."
        });
    if !ok {
        bail!("artifact name {n:?} must look like `org/name` (letters, digits, `-`, `_`, `.`)");
    }
    Ok(())
}

fn parse_cap(s: &str) -> anyhow::Result<ReadCap> {
    Ok(s.parse::<ReadCap>()?)
}

fn parse_cid(s: &str) -> anyhow::Result<Cid> {
    if let Ok(cap) = s.parse::<ReadCap>() {
        return Ok(cap.cid);
    }
    Cid::try_from(s.trim()).map_err(|e| {
        anyhow::anyhow!("{s:?} is not a CID ({e}); `cairn pins` lists the pinned ones")
    })
}

pub fn bar(len: u64) -> ProgressBar {
    // indicatif draws nothing when stderr is not a terminal, so scripts and tests see no bar.
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("static template is valid"),
    );
    bar
}

/// The README's first command at this stage: a temporary store, a sample model folder added and
/// fetched back, every byte compared.
fn demo(size_mib: u64) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = demo_in(&tmp, size_mib);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Writes a small sample model folder laid out as on the Hugging Face hub, so that
/// `transformers` loads its configuration and tokenizer from a gateway (`AutoConfig`,
/// `AutoTokenizer`): `config.json` (a GPT-2 shape), `tokenizer.json` and
/// `tokenizer_config.json`, a README, a nested file, and `size_mib` MiB of weights in
/// `model.safetensors` (random, not loadable as tensors).
pub fn sample_model(model: &Path, size_mib: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(model.join("extra"))?;
    std::fs::write(
        model.join("config.json"),
        br#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"],"n_embd":256,"n_layer":4,"n_head":4,"n_positions":512,"vocab_size":8,"bos_token_id":0,"eos_token_id":0}"#,
    )?;
    std::fs::write(
        model.join("tokenizer.json"),
        br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","unk_token":"<unk>","vocab":{"<unk>":0,"cairn":1,"stores":2,"models":3,"and":4,"datasets":5,"on":6,"peers":7}}}"#,
    )?;
    std::fs::write(
        model.join("tokenizer_config.json"),
        br#"{"tokenizer_class":"PreTrainedTokenizerFast","unk_token":"<unk>"}"#,
    )?;
    std::fs::write(
        model.join("README.md"),
        b"# sample-model\nA demo artifact made by `cairn demo`.\n",
    )?;
    std::fs::write(
        model.join("extra/notes.txt"),
        b"Nested folders keep their paths.\n",
    )?;
    let mut weights =
        std::io::BufWriter::new(std::fs::File::create(model.join("model.safetensors"))?);
    let header = br#"{"__metadata__":{"format":"pt"}}"#;
    weights.write_all(&(header.len() as u64).to_le_bytes())?;
    weights.write_all(header)?;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        rand::fill(&mut block[..]);
        weights.write_all(&block)?;
    }
    weights.flush()?;
    Ok(())
}

fn demo_in(tmp: &Path, size_mib: u64) -> anyhow::Result<()> {
    let model = tmp.join("sample-model");
    sample_model(&model, size_mib)?;
    let dd = DataDir::init(&tmp.join("data"), 64 << 30)?;
    let store = dd.open_store()?;
    println!("cairn demo: store in {}", dd.path.display());
    let opts = AddOptions {
        params: Params::DEFAULT,
        key_mode: KeyMode::Convergent(dd.convergence_secret()?),
        name: Some("demo/sample-model".into()),
        record_signers: Vec::new(),
    };
    let added = crate::getls::add(
        crate::getls::AddTarget::Local {
            store: &store,
            expires: None,
        },
        &model,
        opts,
    )?;
    let cap = added.cap;
    let s = store.stat()?;
    println!(
        "  store: {} shards, {} on disk ({}-of-{} erasure coding)",
        s.shards,
        human(s.used),
        Params::DEFAULT.k(),
        Params::DEFAULT.n()
    );

    let out = tmp.join("fetched");
    let art = store.open_artifact(&cap)?;
    let start = Instant::now();
    read_artifact(&art.artifact(), &store, &out, &|_| {})?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fetched it back in {secs:.2} s: {}/s",
        human((added.bytes as f64 / secs) as u64)
    );
    for f in &art.private.files {
        let a = std::fs::read(model.join(&f.path))?;
        let b = std::fs::read(out.join(&f.path))?;
        if a != b {
            bail!("{} came back different; this is a bug", f.path);
        }
        println!("  {:<28} {:>10}  identical", f.path, human(f.size));
    }
    println!("every file verified byte for byte; the temporary store is removed");
    Ok(())
}
