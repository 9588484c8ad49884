//! The gateway's [`Authorizer`]: API keys, wallet sessions and on-chain gates together.
//!
//! | policy | no credential | API key | wallet session |
//! |---|---|---|---|
//! | `Public` | served | served (a bad key: 401) | served (a bad session: 401) |
//! | `ApiKeyScopes` | looks missing (404) | served when a scope covers it | looks missing (404) |
//! | `Gated` listing | shown (`gated` in model info) | shown | shown |
//! | `Gated` file read | 403 `GatedRepo` | served when a scope covers it, else 403 `GatedRepo` | served when the address passes the gate at the time of the request, else 403 `GatedRepo` |
//!
//! A gated repository is visible, as on the Hugging Face Hub, so that clients raise
//! `GatedRepoError` and users learn they need to sign in. Authorization is decided when a
//! request starts: a download that started is not cut when the holder transfers the token
//! away; the next request (or `Range`) is checked again, with the chain's answer at most
//! [`super::chain::ALLOW_TTL`] old.
//!
//! Every decision on a gated file read by a session goes to the audit log (the session, the
//! address, the condition that decided and the block it was read at), as do denials without a
//! credential (aggregated per client address, as for API keys).

use std::sync::Arc;

use crate::access::chain::Chains;
use crate::access::hook::{
    AccessPolicy, AccessRequest, Authorizer, BoxFuture, Credential, Decision, DenialKind, Operation,
};
use crate::access::keycheck::ApiKeyAuthorizer;
use crate::access::keystore::{ApiKeyStore, AuditDecision, AuditEntry, client_key};
use crate::access::siwe::{SESSION_PREFIX, SessionCheck, Siwe};
use crate::usage::Principal;

/// API keys, wallet sessions and on-chain gates (see the module docs).
pub struct AccessAuthorizer {
    keys: ApiKeyAuthorizer,
    siwe: Arc<Siwe>,
    chains: Arc<Chains>,
}

impl AccessAuthorizer {
    /// Checks API keys in `keys`, sessions in `siwe`, and gates on `siwe`'s chains.
    pub fn new(keys: Arc<ApiKeyStore>, siwe: Arc<Siwe>) -> Self {
        let chains = siwe.chains().clone();
        Self {
            keys: ApiKeyAuthorizer::new(keys),
            siwe,
            chains,
        }
    }

    /// Appends an anonymous denial to the audit log, off the runtime's workers. Awaited, so
    /// a flood of anonymous requests waits on it instead of queueing blocking tasks without
    /// bound (requests in flight are bounded by the connection limits).
    async fn audit_anonymous(&self, entry: AuditEntry) {
        let store = self.keys.store().clone();
        let r = tokio::task::spawn_blocking(move || store.append_anonymous(entry)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "audit log append failed");
        }
    }
}

fn gated(reason: impl Into<String>) -> Decision {
    Decision::Deny {
        kind: DenialKind::Gated,
        reason: reason.into(),
    }
}

fn entry(
    request: &AccessRequest<'_>,
    key_id: String,
    decision: &Decision,
    reason: String,
) -> AuditEntry {
    let (d, status) = match decision {
        Decision::Allow => (AuditDecision::Allow, 200),
        Decision::Deny { kind, .. } => (AuditDecision::Deny, kind.status()),
    };
    AuditEntry {
        seq: 0,
        time: crate::registry::now(),
        key_id,
        client_ip: request.client_ip.map(|i| i.to_string()),
        route: request.route.chars().take(200).collect(),
        repo: request
            .repo
            .map(str::to_string)
            .unwrap_or_else(|| format!("artifact:{}", request.artifact)),
        decision: d,
        status,
        reason,
        count: 1,
        client_cert: None,
    }
}

impl Authorizer for AccessAuthorizer {
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
            let session_token = match request.credential {
                Some(Credential::Bearer(t)) if t.starts_with(SESSION_PREFIX) => Some(t.clone()),
                _ => None,
            };
            let Some(token) = session_token else {
                // API keys, client certificates, or nothing.
                return match policy {
                    AccessPolicy::Gated(_) if request.operation == Operation::List => {
                        // Listing a gated repository is open; a bad key is still refused.
                        if request.credential.is_none() && request.client_cert.is_none() {
                            (Decision::Allow, Principal::Anonymous)
                        } else {
                            let (d, p) =
                                self.keys.authorize_as(&AccessPolicy::Public, request).await;
                            (d, p)
                        }
                    }
                    AccessPolicy::Gated(g) => {
                        if request.credential.is_none() && request.client_cert.is_none() {
                            let d = gated(
                                "this repository is gated: sign in with a wallet that holds its access token (GET /auth)",
                            );
                            let mut e = entry(
                                request,
                                "unknown".into(),
                                &d,
                                format!("no credential; gate {g}"),
                            );
                            e.client_ip = Some(client_key(request.client_ip));
                            self.audit_anonymous(e).await;
                            return (d, Principal::Anonymous);
                        }
                        // A key with an explicit scope covering the repository reads it; any
                        // other valid key is told the repository is gated.
                        let (d, p) = self
                            .keys
                            .authorize_as(&AccessPolicy::ApiKeyScopes(Vec::new()), request)
                            .await;
                        match d {
                            Decision::Deny {
                                kind: DenialKind::Hidden,
                                ..
                            } => (
                                gated(
                                    "this repository is gated and the API key has no scope for it",
                                ),
                                p,
                            ),
                            d => (d, p),
                        }
                    }
                    _ => self.keys.authorize_as(policy, request).await,
                };
            };
            let siwe = self.siwe.clone();
            let check = match siwe.check_token_cached(&token) {
                Some(c) => c,
                None => tokio::task::spawn_blocking(move || siwe.check_token(&token))
                    .await
                    .unwrap_or(SessionCheck::Invalid("the session check failed")),
            };
            let session = match check {
                SessionCheck::Valid(s) => s,
                SessionCheck::Invalid(why) => {
                    return (
                        Decision::Deny {
                            kind: DenialKind::Unauthenticated,
                            reason: why.into(),
                        },
                        Principal::Anonymous,
                    );
                }
            };
            let gate = match policy {
                AccessPolicy::Public => return (Decision::Allow, Principal::Anonymous),
                AccessPolicy::ApiKeyScopes(_) => {
                    return (
                        Decision::Deny {
                            kind: DenialKind::Hidden,
                            reason: "a wallet session does not open a private repository".into(),
                        },
                        Principal::Anonymous,
                    );
                }
                AccessPolicy::Gated(_) if request.operation == Operation::List => {
                    return (Decision::Allow, Principal::Anonymous);
                }
                AccessPolicy::Gated(g) => g,
            };
            let outcome = self.chains.check_gate(gate, session.address).await;
            let d = if outcome.met {
                Decision::Allow
            } else {
                gated(format!(
                    "{} does not pass this repository's gate ({})",
                    session.address.to_checksum(None),
                    outcome.why
                ))
            };
            let reason = format!(
                "address {}: {}",
                session.address.to_checksum(None),
                outcome.why
            );
            let e = entry(request, format!("siwe:{}", session.id), &d, reason);
            let store = self.keys.store().clone();
            let appended = tokio::task::spawn_blocking(move || store.append_audit(e))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match (appended, d) {
                (Ok(()), d) => (d, Principal::Anonymous),
                (Err(e), Decision::Allow) => {
                    // An unaudited use is not allowed.
                    tracing::warn!(error = %e, "audit log append failed; denying");
                    (
                        Decision::Deny {
                            kind: DenialKind::Forbidden,
                            reason: "the audit log could not be written".into(),
                        },
                        Principal::Anonymous,
                    )
                }
                (Err(_), d) => (d, Principal::Anonymous),
            }
        })
    }
}
