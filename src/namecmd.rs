//! Names on the network from the command line: `add --name` with `--peer` publishes a signed
//! name record, `grant` wraps a revision's key to gateways, `log` lists a name's revisions, and
//! `get` / `ls` take `org/name[@rev]` where they take a capability.
//!
//! Keys: the org key is this data directory's publisher key (`publisher.key`), so the first
//! publish of an org claims it for that key; `cairn org delegate` lets another publisher key
//! sign the org's records until a time, and that data directory's `cairn org join` keeps the
//! delegation (`delegations.json`), which every record it then signs for the org carries. Every record is also granted to this data
//! directory's own grant key (`grant.key`, see `config::grant_secret`): the publisher can read
//! back, re-grant and revoke from any machine holding its keys, with no capability kept.

use anyhow::{Context, bail};
use cairn_artifact::ReadCap;
use cairn_encryption::{GatewayId, unwrap_key, wrap_key};
use cairn_gateway::CommitId;
use cairn_node::Network;
use cairn_swarm::{
    Delegation, EndpointId, NAME_REVISIONS_MAX, NameKind, NameRecord, SignedName, check_name_part,
    grant_context, record_version_now, secret_key_from_bytes,
};

use crate::config::{DataDir, grant_secret};
use crate::netcmd::{connect, runtime};

/// A repository name as given: `org/name`, and optionally `@rev` (a commit id, a manifest CID,
/// or `main`).
pub struct RepoRef {
    pub kind: NameKind,
    pub org: String,
    pub name: String,
    pub rev: Option<String>,
}

/// Whether `arg` names a repository (`org/name[@rev]`) rather than being a capability.
pub fn is_repo(arg: &str) -> bool {
    !arg.starts_with("cairn-read1:") && arg.contains('/')
}

pub fn parse_repo(arg: &str, dataset: bool) -> anyhow::Result<RepoRef> {
    let (repo, rev) = match arg.split_once('@') {
        Some((r, v)) => (r, Some(v.to_string())),
        None => (arg, None),
    };
    let (org, name) = repo
        .split_once('/')
        .with_context(|| format!("{arg:?} is not `org/name`"))?;
    check_name_part(org).with_context(|| format!("org of {arg:?}"))?;
    check_name_part(name).with_context(|| format!("name of {arg:?}"))?;
    Ok(RepoRef {
        kind: if dataset {
            NameKind::Dataset
        } else {
            NameKind::Model
        },
        org: org.to_string(),
        name: name.to_string(),
        rev,
    })
}

/// The access policy text of a name record from the command line's flags (the gate is checked
/// here, so a record never carries one the gateway cannot read).
pub fn policy_text(private: bool, gate: Option<&str>) -> anyhow::Result<Option<String>> {
    Ok(match (private, gate) {
        (true, _) => Some("keys".into()),
        (_, Some(g)) => {
            let text = match g.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the policy file {path}"))?,
                None => g.to_string(),
            };
            cairn_gateway::access::policy::Gate::parse(&text)?;
            Some(format!("gate:{text}"))
        }
        _ => None,
    })
}

fn org_owner_check(newest: &SignedName, org_key: &EndpointId) -> anyhow::Result<()> {
    if newest.record.org_key != *org_key {
        bail!(
            "org {} is owned by key {} on the network; this data directory signs as {} (a \
             member of the org needs a delegation from its owner: cairn org delegate / join)",
            newest.record.org,
            newest.record.org_key,
            org_key
        );
    }
    Ok(())
}

/// The file of a data directory that keeps the delegations it took up (`cairn org join`).
const DELEGATIONS_FILE: &str = "delegations.json";
/// Largest delegations file read.
const DELEGATIONS_FILE_MAX: u64 = 1 << 20;

/// A delegation as the command line passes it between an org's owner and a member:
/// `cairn-delegation1:<org>:<org key>:<member key>:<until ms>:<signature, hex>`.
#[derive(Clone, Debug)]
pub struct DelegationToken {
    /// The org, lowercase.
    pub org: String,
    /// The key that owns the org and signed the delegation.
    pub org_key: EndpointId,
    /// The key allowed to sign the org's records.
    pub member: EndpointId,
    /// The end time and the org key's signature.
    pub delegation: Delegation,
}

impl std::fmt::Display for DelegationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cairn-delegation1:{}:{}:{}:{}:{}",
            self.org,
            self.org_key,
            self.member,
            self.delegation.until_ms,
            data_encoding::HEXLOWER.encode(&self.delegation.signature)
        )
    }
}

impl std::str::FromStr for DelegationToken {
    type Err = anyhow::Error;

    /// Parses and checks the org key's signature (not the end time).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let body = s
            .trim()
            .strip_prefix("cairn-delegation1:")
            .context("a delegation starts with cairn-delegation1:")?;
        let parts: Vec<&str> = body.split(':').collect();
        let [org, org_key, member, until, sig] = parts[..] else {
            bail!(
                "a delegation has 5 fields after its prefix, this one {}",
                parts.len()
            );
        };
        check_name_part(org).context("the delegation's org")?;
        let org_key: EndpointId = org_key.parse().context("the delegation's org key")?;
        let member: EndpointId = member.parse().context("the delegation's member key")?;
        let until_ms: u64 = until.parse().context("the delegation's end time")?;
        let signature: [u8; 64] = data_encoding::HEXLOWER_PERMISSIVE
            .decode(sig.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("the delegation's signature is not 64 bytes of hex")?;
        let delegation = Delegation {
            until_ms,
            signature,
        };
        let org = org.to_ascii_lowercase();
        delegation.verify(&org_key, &org, &member)?;
        Ok(Self {
            org,
            org_key,
            member,
            delegation,
        })
    }
}

/// `cairn org delegate`: this data directory's publisher key (the org key) lets `member` sign
/// records of `org` for `secs` seconds from now.
pub fn delegate(
    dd: &DataDir,
    org: &str,
    member: &str,
    secs: u64,
) -> anyhow::Result<DelegationToken> {
    check_name_part(org).context("the org")?;
    let member: EndpointId = member
        .parse()
        .context("--member is a publisher key (`publisher:` of `cairn id`)")?;
    let key = secret_key_from_bytes(&dd.publisher_key()?)?;
    if member == key.public() {
        bail!("--member is this data directory's own key, which owns the org already");
    }
    let org = org.to_ascii_lowercase();
    let until_ms = record_version_now().saturating_add(secs.saturating_mul(1000));
    Ok(DelegationToken {
        delegation: Delegation::sign(&key, &org, &member, until_ms),
        org,
        org_key: key.public(),
        member,
    })
}

fn read_delegations(dd: &DataDir) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use std::io::Read;
    let path = dd.path.join(DELEGATIONS_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = String::new();
    file.take(DELEGATIONS_FILE_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > DELEGATIONS_FILE_MAX {
        bail!("{} is over {DELEGATIONS_FILE_MAX} bytes", path.display());
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a delegation list", path.display()))
}

/// `cairn org join`: keeps `token` (checked: signed by its org key, to this data directory's
/// publisher key, not ended) for its org, replacing an earlier one.
pub fn join(dd: &DataDir, token: &str) -> anyhow::Result<DelegationToken> {
    let token: DelegationToken = token.parse()?;
    let me = secret_key_from_bytes(&dd.publisher_key()?)?.public();
    if token.member != me {
        bail!(
            "the delegation is to key {}, not to this data directory's publisher key {me}",
            token.member
        );
    }
    if token.delegation.until_ms <= record_version_now() {
        bail!(
            "the delegation ended at {}; ask the org's owner for a new one",
            crate::netcmd::date(token.delegation.until_ms)
        );
    }
    let mut all = read_delegations(dd)?;
    all.insert(token.org.clone(), token.to_string());
    cairn_store::write_private_replace(
        &dd.path.join(DELEGATIONS_FILE),
        serde_json::to_string_pretty(&all)?.as_bytes(),
    )
    .context("writing the delegation list")?;
    Ok(token)
}

/// The org key and delegation this data directory signs `org`'s records with: a delegation
/// it joined, if any (an error once it has ended), else its own key.
fn signing_for(
    dd: &DataDir,
    org: &str,
    me: &EndpointId,
) -> anyhow::Result<(EndpointId, Option<Delegation>)> {
    let all = read_delegations(dd)?;
    let Some(text) = all.get(&org.to_ascii_lowercase()) else {
        return Ok((*me, None));
    };
    let token: DelegationToken = text
        .parse()
        .with_context(|| format!("the delegation kept for org {org}"))?;
    if token.member != *me {
        return Ok((*me, None));
    }
    if token.delegation.until_ms <= record_version_now() {
        bail!(
            "this data directory's delegation for org {org} ended at {}; ask the org's owner \
             for a new one (cairn org delegate, then cairn org join)",
            crate::netcmd::date(token.delegation.until_ms)
        );
    }
    Ok((token.org_key, Some(token.delegation)))
}

/// Signs and publishes a revision of `repo` naming `cap`'s artifact: granted to the gateways
/// the current revision is granted to, plus `grant`, minus `revoke`, plus this data directory;
/// with `policy`, or the current revision's (public for a new name).
pub async fn publish_revision(
    net: &Network,
    dd: &DataDir,
    repo: &RepoRef,
    cap: &ReadCap,
    policy: Option<String>,
    grant: &[GatewayId],
    revoke: &[GatewayId],
) -> anyhow::Result<SignedName> {
    let key = secret_key_from_bytes(&dd.publisher_key()?)?;
    let mine = grant_secret(&dd.path)?.id();
    let found = net
        .resolve_name(repo.kind, &repo.org, &repo.name, 1)
        .await?;
    // Without any answer the current revision is unknown: publishing anyway would drop its
    // grantees and parent.
    if found.answered == 0 {
        bail!(
            "none of the {} nodes ranked for org {} answered; nothing was named (run the same \
             command again)",
            found.asked,
            repo.org
        );
    }
    let (org_key, delegation) = signing_for(dd, &repo.org, &key.public())?;
    let newest = found.revisions.first();
    if let Some(n) = newest {
        org_owner_check(n, &org_key)?;
    }
    let mut grantees: Vec<GatewayId> = newest
        .map(|n| n.record.grants.iter().map(|g| g.gateway).collect())
        .unwrap_or_default();
    grantees.extend_from_slice(grant);
    grantees.push(mine);
    grantees.retain(|g| !revoke.contains(g) || *g == mine);
    grantees.sort();
    grantees.dedup();
    let context = grant_context(repo.kind, &repo.org, &repo.name, &cap.cid);
    let grants = grantees
        .iter()
        .map(|g| wrap_key(g, &cap.key, &context))
        .collect::<Result<Vec<_>, _>>()?;
    let parent = match newest {
        Some(n) if n.record.artifact == cap.cid => n.record.parent,
        Some(n) => Some(n.record.artifact),
        None => None,
    };
    let record = NameRecord {
        org_key,
        signer: key.public(),
        delegation,
        kind: repo.kind,
        org: repo.org.clone(),
        name: repo.name.clone(),
        version: record_version_now().max(newest.map_or(0, |n| n.record.version + 1)),
        artifact: cap.cid,
        parent,
        policy: policy
            .or_else(|| newest.map(|n| n.record.policy.clone()))
            .unwrap_or_else(|| "public".into()),
        grants,
    };
    let signed = SignedName::decode(&record.try_sign(&key)?)?;
    let published = net.publish_name(&signed).await?;
    eprintln!(
        "name {}/{} published to {} nodes (asked {}), granted to {} keys",
        repo.org,
        repo.name,
        published.stored.len(),
        published.asked,
        signed.record.grants.len()
    );
    println!("revision: {}", CommitId::of(&cap.cid));
    Ok(signed)
}

/// The revision `rev` (newest when `None` or `main`; else a commit id, a prefix of one of at
/// least 7 digits, or a manifest CID) among `revisions` (newest first).
pub fn pick<'a>(revisions: &'a [SignedName], rev: Option<&str>) -> Option<&'a SignedName> {
    match rev {
        None | Some("main") => revisions.first(),
        Some(r) => revisions.iter().find(|s| {
            let commit = CommitId::of(&s.record.artifact).to_string();
            s.record.artifact.to_string() == r
                || (r.len() >= 7 && commit.starts_with(&r.to_ascii_lowercase()))
        }),
    }
}

/// Every revision of `repo` the nodes ranked for its org hold (newest first); an error when
/// there is none.
fn revisions(
    peers: &[String],
    network: &str,
    repo: &RepoRef,
) -> anyhow::Result<cairn_node::NameLookup> {
    let rt = runtime()?;
    let found = rt.block_on(async {
        let net = connect(peers, network, None).await?;
        let found = net
            .resolve_name(repo.kind, &repo.org, &repo.name, NAME_REVISIONS_MAX)
            .await;
        net.close().await;
        anyhow::Ok(found?)
    })?;
    if found.revisions.is_empty() {
        bail!(
            "no node ranked for {}/{} holds a record of it (asked {}, {} answered)",
            repo.org,
            repo.name,
            found.asked,
            found.answered
        );
    }
    Ok(found)
}

/// The read capability of `repo` at its revision, unwrapped from the grant to this data
/// directory.
pub fn resolve_cap(
    peers: &[String],
    network: &str,
    dir: &std::path::Path,
    repo: &RepoRef,
) -> anyhow::Result<ReadCap> {
    let secret = grant_secret(dir)?;
    let found = revisions(peers, network, repo)?;
    let label = format!("{}/{}", repo.org, repo.name);
    let s = pick(&found.revisions, repo.rev.as_deref()).with_context(|| {
        format!(
            "{label} has no revision {:?} among its last {}",
            repo.rev.as_deref().unwrap_or("main"),
            found.revisions.len()
        )
    })?;
    let g = s.record.grant_for(&secret.id()).with_context(|| {
        format!(
            "revision {} of {label} is not granted to this data directory ({})",
            CommitId::of(&s.record.artifact),
            secret.id()
        )
    })?;
    let context = grant_context(
        s.record.kind,
        &s.record.org,
        &s.record.name,
        &s.record.artifact,
    );
    let key = unwrap_key(&secret, g, &context)
        .with_context(|| format!("the grant of {label} to this data directory does not open"))?;
    Ok(ReadCap {
        cid: s.record.artifact,
        key,
    })
}

/// `cairn grant org/name --gateway ID`: a new revision record of the current artifact, with
/// the gateways added (or, with `revoke`, removed).
pub fn grant(
    peers: &[String],
    network: &str,
    dd: &DataDir,
    repo: &RepoRef,
    gateways: &[GatewayId],
    revoke: bool,
) -> anyhow::Result<()> {
    let cap = resolve_cap(peers, network, &dd.path, repo)?;
    let rt = runtime()?;
    rt.block_on(async {
        let net = connect(peers, network, Some(dd.publisher_key()?)).await?;
        let (grant, revoked) = if revoke {
            (&[][..], gateways)
        } else {
            (gateways, &[][..])
        };
        let res = publish_revision(&net, dd, repo, &cap, None, grant, revoked).await;
        net.close().await;
        res.map(|_| ())
    })
}

/// `cairn log org/name`: the revisions the ranked nodes hold, newest first.
pub fn log(peers: &[String], network: &str, repo: &RepoRef, json: bool) -> anyhow::Result<()> {
    let found = revisions(peers, network, repo)?;
    let rows: Vec<serde_json::Value> = found
        .revisions
        .iter()
        .map(|s| {
            let r = &s.record;
            serde_json::json!({
                "commit": CommitId::of(&r.artifact).to_string(),
                "artifact": r.artifact.to_string(),
                "parent": r.parent.map(|p| p.to_string()),
                "version": r.version,
                "org_key": r.org_key.to_string(),
                "signer": r.signer.to_string(),
                "policy": r.policy,
                "grants": r.grants.iter().map(|g| g.gateway.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for s in &found.revisions {
        let r = &s.record;
        println!(
            "{}  {}  {}  {}  {} grants",
            CommitId::of(&r.artifact),
            crate::netcmd::date(r.version),
            r.artifact,
            r.policy.split(':').next().unwrap_or(""),
            r.grants.len()
        );
    }
    Ok(())
}
