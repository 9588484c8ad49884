//! Repositories granted to this gateway on the network.
//!
//! A publisher names a revision with a signed name record and wraps its key to each gateway it
//! grants (`cairn grant`, `cairn add --name --grant`; the records are the peer layer's, see
//! `cairn_swarm::NameRecord`). A gateway reading from the network resolves a repository that
//! its registry does not hold from the nodes ranked for the org, and serves it when the
//! revision asked for is granted to its grant key: no `cairn register`, no capability handed
//! over by hand.
//!
//! - `main` is the newest revision under the org's key. If that revision is not granted to this
//!   gateway (it was revoked: the publisher left it out of the new record), `main` is missing
//!   here, so the repository is answered as missing (`404`, never `403`: the gateway does not
//!   confirm that it exists). An older revision asked by its commit id is served if its own
//!   record granted it: keys once given cannot be taken back.
//! - What was resolved is kept [`NAME_CACHE_TTL`] (5 s), found or not, so a new revision is
//!   served within seconds and a burst of requests costs one lookup; at most
//!   [`NAME_CACHE_MAX`] names are kept, and at most [`NAME_LOOKUPS_MAX`] lookups run at once
//!   (a flood of made-up names waits for a slot, within the request's own timeout).
//! - The record's access policy applies as a registered revision's would: `public`, `keys`
//!   (API keys whose scopes cover it) or `gate:` and a gate; a policy this gateway cannot read
//!   is treated as `keys` (closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_artifact::ReadCap;
use cairn_encryption::{GatewaySecret, unwrap_key};
use cairn_node::Network;
use cairn_swarm::{NAME_REVISIONS_MAX, NameKind, SignedName, grant_context};
use tokio::sync::Semaphore;

use crate::access::hook::AccessPolicy;
use crate::error::Error;
use crate::registry::{ArtifactEntry, CommitId, Lookup, RepoId, RepoKind, Resolved};

/// How long a resolved name is served from memory.
pub const NAME_CACHE_TTL: Duration = Duration::from_secs(5);
/// Names kept in memory at most.
pub const NAME_CACHE_MAX: usize = 4096;
/// Network lookups of names at once.
pub const NAME_LOOKUPS_MAX: usize = 16;

/// One revision as this gateway sees it.
#[derive(Clone)]
struct Revision {
    commit: CommitId,
    /// The capability, when the revision is granted to this gateway.
    cap: Option<ReadCap>,
    policy: AccessPolicy,
    /// Unix seconds of the record.
    at: u64,
}

type Key = (RepoKind, String, String);
type Cache = HashMap<Key, (Instant, Arc<Vec<Revision>>)>;

/// Resolves names on the network for a gateway (see the module docs).
pub struct NameResolver {
    net: Arc<Network>,
    secret: Arc<GatewaySecret>,
    cache: Mutex<Cache>,
    lookups: Semaphore,
}

/// A record's policy text as a gateway policy; what it cannot read is closed.
pub fn policy_of(text: &str) -> AccessPolicy {
    match text {
        "public" => AccessPolicy::Public,
        "keys" => AccessPolicy::ApiKeyScopes(Vec::new()),
        other => match other
            .strip_prefix("gate:")
            .map(crate::access::policy::Gate::parse)
        {
            Some(Ok(gate)) => AccessPolicy::Gated(gate),
            _ => AccessPolicy::ApiKeyScopes(Vec::new()),
        },
    }
}

impl NameResolver {
    /// A resolver reading through `net`, unwrapping grants with `secret`.
    pub fn new(net: Arc<Network>, secret: Arc<GatewaySecret>) -> Self {
        Self {
            net,
            secret,
            cache: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(NAME_LOOKUPS_MAX),
        }
    }

    fn revisions_of(&self, found: &[SignedName]) -> Vec<Revision> {
        let id = self.secret.id();
        found
            .iter()
            .map(|s| {
                let r = &s.record;
                let cap = r.grant_for(&id).and_then(|g| {
                    let context = grant_context(r.kind, &r.org, &r.name, &r.artifact);
                    unwrap_key(&self.secret, g, &context)
                        .ok()
                        .map(|key| ReadCap {
                            cid: r.artifact,
                            key,
                        })
                });
                Revision {
                    commit: CommitId::of(&r.artifact),
                    cap,
                    policy: policy_of(&r.policy),
                    at: r.version / 1000,
                }
            })
            .collect()
    }

    async fn revisions(&self, kind: RepoKind, repo: &RepoId) -> Result<Arc<Vec<Revision>>, Error> {
        let key = (
            kind,
            repo.org().to_ascii_lowercase(),
            repo.name().to_string(),
        );
        let fresh = |c: &Cache| {
            c.get(&key)
                .filter(|(at, _)| at.elapsed() < NAME_CACHE_TTL)
                .map(|(_, r)| r.clone())
        };
        if let Some(r) = fresh(&self.cache.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(r);
        }
        let _slot = self.lookups.acquire().await.expect("never closed");
        // Another request may have looked it up while this one waited.
        if let Some(r) = fresh(&self.cache.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(r);
        }
        let name_kind = match kind {
            RepoKind::Model => NameKind::Model,
            RepoKind::Dataset => NameKind::Dataset,
        };
        let found = self
            .net
            .resolve_name(name_kind, repo.org(), repo.name(), NAME_REVISIONS_MAX)
            .await
            .map_err(|e| Error::Io {
                what: format!("resolving {repo} on the network"),
                source: std::io::Error::other(e.to_string()),
            })?;
        let revisions = Arc::new(self.revisions_of(&found.revisions));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= NAME_CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < NAME_CACHE_TTL);
            if cache.len() >= NAME_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), revisions.clone()));
        Ok(revisions)
    }

    /// The repository's `main` and revision `rev` (`main` or a commit id) as granted to this
    /// gateway (see the module docs); both `None` when nothing is granted.
    pub async fn lookup(&self, kind: RepoKind, repo: &RepoId, rev: &str) -> Result<Lookup, Error> {
        let revisions = self.revisions(kind, repo).await?;
        let resolved = |r: &Revision| {
            r.cap.as_ref().map(|cap| Resolved {
                commit: r.commit,
                entry: ArtifactEntry {
                    cap: cap.clone(),
                    policy: r.policy.clone(),
                    registered_at: r.at,
                },
            })
        };
        let main = revisions.first().and_then(resolved);
        let revision = if rev == "main" {
            main.clone()
        } else {
            CommitId::parse(rev)
                .and_then(|c| revisions.iter().find(|r| r.commit == c).and_then(resolved))
        };
        Ok(Lookup { main, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_policies_map_to_gateway_policies_and_unknown_ones_close() {
        assert!(matches!(policy_of("public"), AccessPolicy::Public));
        assert!(matches!(policy_of("keys"), AccessPolicy::ApiKeyScopes(_)));
        assert!(matches!(
            policy_of("gate:nonsense"),
            AccessPolicy::ApiKeyScopes(_)
        ));
        assert!(matches!(
            policy_of("whatever"),
            AccessPolicy::ApiKeyScopes(_)
        ));
        assert!(matches!(policy_of(""), AccessPolicy::ApiKeyScopes(_)));
    }
}
