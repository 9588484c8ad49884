//! The check of an API key: [`ApiKeyAuthorizer`], the [`Authorizer`] of API keys (and of the
//! client certificates bound to them).
//!
//! # Goals
//! - Let nobody read a restricted artifact without a key whose scope covers it, and fail closed:
//!   a store error, an audit write error or a panic is a denial, never a grant.
//! - Record every decision on a restricted artifact in the key store's audit logs (see the
//!   `keystore` module); a use that cannot be recorded is not allowed.
//!
//! # Verification, in order (the first failure decides)
//! | check | answer |
//! |---|---|
//! | no `Authorization: Bearer` (scheme in any case) on a restricted artifact | 404, as if missing |
//! | key does not parse | 401 |
//! | unknown key id | 401 |
//! | hash of the secret differs (constant time) | 401 |
//! | revoked | 401 |
//! | expired (including a rotated-out key past its grace) | 401 |
//! | client IP outside the key's allow-list (if any) | 403 |
//! | no scope covers the repository or artifact with the operation | 404, as if missing |
//! | over the key's rate (token bucket, per minute) | 429 (`X-Error-Code: GatedRepo`) |
//!
//! A verified client certificate (mutual TLS) bound to a key stands in for the bearer key (the
//! first rows; then the same checks from "revoked" on): see the `clientcert` module docs.
//!
//! The 401 and 403 refusals are about the key, not about what was asked: they are given on
//! every route, for public and missing repositories too (a key sent with a public request is
//! checked, as the Hub checks tokens). The 404s are the gateway's `RepoNotFound`,
//! `RevisionNotFound` or artifact-not-found answer, byte for byte, and the gateway runs this
//! same check for a missing repository, revision or artifact (see `handlers::open_repo`), so
//! neither the answer nor the time taken tells a hidden one from a missing one. No denial
//! carries an artifact byte. A public artifact asked without a key costs no check.
//!
//! Key format, scopes and IP allow-lists, and rate limits are in the `keys`, `scopes` and
//! `ratelimit` modules.

use std::net::IpAddr;
use std::sync::Arc;

use cairn_artifact::Cid;
use redb::ReadableDatabase;
use subtle::ConstantTimeEq;

use super::keys::{KeyId, parse_api_key};
use super::keystore::{APIKEYS, ApiKeyStore, AuditDecision, AuditEntry, KeyInfo, client_key, clip};
use super::ratelimit::{RATE_BUCKETS_MAX, RateLimiter};
use super::scopes::Op;
use crate::clientcert::{AuditCert, ClientCert};
use crate::registry::now;
use crate::usage::Principal;
use crate::{AccessPolicy, AccessRequest, Authorizer, BoxFuture, Decision, DenialKind};

impl ApiKeyStore {
    /// Checks a presented key (see the table in the module docs), without rate limiting; on a
    /// public artifact (`restricted` false) only the key itself is checked, not its scopes.
    /// Returns the key's record when it may proceed, or the denial.
    pub(super) fn verify(&self, q: &Query) -> Result<(KeyInfo, Option<AuditCert>), Refusal> {
        use DenialKind::*;
        let anonymous = |kind, reason: String, key_id: Option<&KeyId>| Refusal {
            kind,
            reason,
            key_id: key_id.map_or_else(|| "unknown".into(), |k| k.to_string()),
            keyed: false,
            cert: None,
        };
        let unreadable = || anonymous(Forbidden, "the key store could not be read".into(), None);
        let rtx = self.db().redb().begin_read().map_err(|_| unreadable())?;
        // A certificate bound to a key wins over a bearer header (see the `clientcert` docs).
        let by_cert = match &q.cert {
            Some(c) => self
                .key_of_certificate(&rtx, c, q.time)?
                .map(|info| (info, c.audit())),
            None => None,
        };
        let (info, cert) = match by_cert {
            Some((info, cert)) => (info, Some(cert)),
            None => (self.bearer_key(&rtx, q, anonymous)?, None),
        };
        let id = info.id.clone();
        let denied = |kind, why: &str| Refusal {
            kind,
            reason: why.to_string(),
            key_id: id.clone(),
            keyed: true,
            cert: cert.clone(),
        };
        if info.revoked {
            return Err(denied(Unauthenticated, "the API key was revoked"));
        }
        if info.expires.is_some_and(|e| q.time >= e) {
            let why = if info.rotated_to.is_some() {
                "the API key was rotated and its grace period is over"
            } else {
                "the API key has expired"
            };
            return Err(denied(Unauthenticated, why));
        }
        if !info.allow_ips.is_empty()
            && !q
                .client_ip
                .is_some_and(|ip| info.allow_ips.iter().any(|n| n.contains(ip)))
        {
            return Err(denied(
                Forbidden,
                "the API key may not be used from this address",
            ));
        }
        if !q.restricted {
            return Ok((info, cert));
        }
        let repo = q.repo.as_deref().map(|r| {
            r.strip_prefix("models/")
                .or_else(|| r.strip_prefix("datasets/"))
                .unwrap_or(r)
        });
        if !info
            .scopes
            .iter()
            .any(|s| s.covers(Op::Read, repo, &q.artifact))
        {
            return Err(denied(
                Hidden,
                "the API key has no scope for this repository",
            ));
        }
        Ok((info, cert))
    }

    /// The key record of the request's bearer key, if its secret matches.
    fn bearer_key(
        &self,
        rtx: &redb::ReadTransaction,
        q: &Query,
        anonymous: impl Fn(DenialKind, String, Option<&KeyId>) -> Refusal,
    ) -> Result<KeyInfo, Refusal> {
        use DenialKind::*;
        let Some(token) = &q.token else {
            return Err(anonymous(
                Hidden,
                "no API key (Authorization: Bearer cairn_...)".into(),
                None,
            ));
        };
        let key = parse_api_key(token)
            .map_err(|e| anonymous(Unauthenticated, format!("malformed API key: {e}"), None))?;
        let id = key.id().to_string();
        let unreadable = || anonymous(Forbidden, "the key store could not be read".into(), None);
        let t = rtx.open_table(APIKEYS).map_err(|_| unreadable())?;
        let rec = self
            .record(&t, &id)
            .map_err(|_| unreadable())?
            .ok_or_else(|| anonymous(Unauthenticated, "unknown API key".into(), None))?;
        let stored = data_encoding::HEXLOWER
            .decode(rec.hash.as_bytes())
            .map_err(|_| unreadable())?;
        // A key bound to a certificate stores no hash, so no secret matches it.
        if rec.info.client_cert.is_some()
            || !bool::from(key.hash().as_slice().ct_eq(stored.as_slice()))
        {
            // Someone holds the id but not the secret: anonymous, like any guess.
            return Err(anonymous(
                Unauthenticated,
                "unknown API key".into(),
                Some(&key.id()),
            ));
        }
        Ok(rec.info)
    }
}

/// Why [`ApiKeyStore::verify`] refused a request.
pub(crate) struct Refusal {
    pub(crate) kind: DenialKind,
    pub(crate) reason: String,
    /// The key id to audit (`unknown` when none parsed).
    pub(crate) key_id: String,
    /// Whether the key's secret matched, or a verified client certificate came with the
    /// request: the entry goes to the keys' log, else to the anonymous one.
    pub(crate) keyed: bool,
    /// The client certificate the request came by, when it decided.
    pub(crate) cert: Option<AuditCert>,
}

/// A request, owned, for the blocking check.
pub(super) struct Query {
    /// Whether the artifact's policy is restricted (else only the key itself is checked).
    pub(super) restricted: bool,
    pub(super) token: Option<String>,
    pub(super) repo: Option<String>,
    pub(super) artifact: Cid,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) route: String,
    pub(super) time: u64,
    /// The verified client certificate of the connection, if any.
    pub(super) cert: Option<Arc<ClientCert>>,
}

/// The [`Authorizer`] of API keys: restricted artifacts are served to keys whose scopes cover
/// them, every decision on a restricted artifact is audited, and any failure denies.
pub struct ApiKeyAuthorizer {
    store: Arc<ApiKeyStore>,
    limiter: Arc<RateLimiter>,
}

impl ApiKeyAuthorizer {
    /// Checks requests against the keys in `store`.
    pub fn new(store: Arc<ApiKeyStore>) -> Self {
        Self {
            store,
            limiter: Arc::new(RateLimiter::new(RATE_BUCKETS_MAX)),
        }
    }

    /// The key store.
    pub fn store(&self) -> &Arc<ApiKeyStore> {
        &self.store
    }
}

/// The decision alone (the key store's tests).
#[cfg(test)]
pub(super) fn decide(store: &ApiKeyStore, limiter: &RateLimiter, q: &Query) -> Decision {
    decide_as(store, limiter, q).0
}

/// A restricted request for `models/{repo}` with bearer `token`, from 127.0.0.1, now (the key
/// store's tests).
#[cfg(test)]
pub(super) fn query(token: Option<String>, repo: &str) -> Query {
    Query {
        restricted: true,
        token,
        repo: Some(format!("models/{repo}")),
        artifact: cairn_artifact::manifest_cid(b"x"),
        client_ip: Some("127.0.0.1".parse().unwrap()),
        route: "GET /x".into(),
        time: now(),
        cert: None,
    }
}

/// The decision, and who it was for: the key when its secret matched, else anonymous.
fn decide_as(store: &ApiKeyStore, limiter: &RateLimiter, q: &Query) -> (Decision, Principal) {
    let (decision, key_id, keyed, reason, cert) = match store.verify(q) {
        // A key used on a public artifact: nothing to audit, it is not a use of the key's
        // rights.
        Ok((info, _)) if !q.restricted => {
            return (Decision::Allow, principal_of(&info.id, true));
        }
        // A public artifact asked with a certificate bound to no key and no bearer key: the
        // certificate was checked (readable, not revoked), there is nothing else to check.
        Err(r) if !q.restricted && r.kind == DenialKind::Hidden => {
            return (Decision::Allow, Principal::Anonymous);
        }
        Ok((info, cert)) => {
            if info
                .rate_per_minute
                .is_some_and(|r| !limiter.take(info.bucket(), r))
            {
                let reason = "the API key is over its rate limit".to_string();
                (
                    Decision::Deny {
                        kind: DenialKind::RateLimited,
                        reason: reason.clone(),
                    },
                    info.id,
                    true,
                    reason,
                    cert,
                )
            } else {
                (Decision::Allow, info.id, true, "allowed".into(), cert)
            }
        }
        Err(r) => (
            Decision::Deny {
                kind: r.kind,
                reason: r.reason.clone(),
            },
            r.key_id,
            r.keyed,
            r.reason,
            r.cert,
        ),
    };
    let status = match &decision {
        Decision::Allow => 200,
        Decision::Deny { kind, .. } => kind.status(),
    };
    let entry = AuditEntry {
        seq: 0,
        time: q.time,
        key_id,
        client_ip: if keyed {
            q.client_ip.map(|i| i.to_string())
        } else {
            Some(client_key(q.client_ip))
        },
        route: clip(&q.route),
        repo: clip(
            &q.repo
                .clone()
                .unwrap_or_else(|| format!("artifact:{}", q.artifact)),
        ),
        decision: if decision == Decision::Allow {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        },
        status,
        reason,
        count: 1,
        client_cert: cert,
    };
    let principal = principal_of(&entry.key_id, keyed);
    let res = if keyed {
        store.append_audit(entry)
    } else {
        store.append_anonymous(entry)
    };
    let decision = match (res, decision) {
        (Ok(()), d) => d,
        (Err(e), Decision::Allow) => {
            // An unaudited use is not allowed.
            tracing::warn!(error = %e, "audit log append failed; denying");
            Decision::Deny {
                kind: DenialKind::Forbidden,
                reason: "the audit log could not be written".into(),
            }
        }
        (Err(e), d) => {
            // Already a denial: it stands as it is, so that a full disk changes no answer.
            tracing::warn!(error = %e, "audit log append failed");
            d
        }
    };
    (decision, principal)
}

/// The principal of a decision on key `id`: the key when its secret matched (`keyed`).
fn principal_of(id: &str, keyed: bool) -> Principal {
    match KeyId::parse(id) {
        Some(k) if keyed => Principal::Key(k),
        _ => Principal::Anonymous,
    }
}

impl Authorizer for ApiKeyAuthorizer {
    fn authorize<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(async move { self.authorize_as(policy, request).await.0 })
    }

    fn authorize_as<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, (Decision, Principal)> {
        Box::pin(async move {
            let restricted = match policy {
                // A public artifact asked without a key costs no check.
                AccessPolicy::Public
                    if request.credential.is_none() && request.client_cert.is_none() =>
                {
                    return (Decision::Allow, Principal::Anonymous);
                }
                AccessPolicy::Public => false,
                AccessPolicy::ApiKeyScopes(_) | AccessPolicy::Gated(_) => true,
            };
            let q = Query {
                restricted,
                token: request.credential.map(|c| match c {
                    crate::Credential::Bearer(t) => t.clone(),
                }),
                repo: request.repo.map(str::to_string),
                artifact: request.artifact,
                client_ip: request.client_ip,
                route: request.route.to_string(),
                time: now(),
                cert: request.client_cert.cloned(),
            };
            let (store, limiter) = (self.store.clone(), self.limiter.clone());
            // redb reads and the audit commit block: keep them off the runtime's workers.
            tokio::task::spawn_blocking(move || decide_as(&store, &limiter, &q))
                .await
                .unwrap_or_else(|_| {
                    let d = Decision::Deny {
                        kind: DenialKind::Forbidden,
                        reason: "the key check failed".into(),
                    };
                    (d, Principal::Anonymous)
                })
        })
    }
}
