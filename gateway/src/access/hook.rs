//! The authorization hook.
//!
//! Every request that would reveal an artifact (its file list or its bytes) is first checked:
//! the gateway builds an [`AccessRequest`] (what is asked, by whom, from where) and asks its
//! [`Authorizer`] for a [`Decision`] against the artifact's [`AccessPolicy`]. Nothing of the
//! artifact is read before the answer is `Allow`.
//!
//! [`PublicOnly`] serves public artifacts and denies every restricted one;
//! [`crate::ApiKeyAuthorizer`] (the `keycheck` module) admits API keys; the gateway's own,
//! `authorizer::AccessAuthorizer`, adds wallet sessions and on-chain gates
//! ([`AccessPolicy::Gated`], ERC-20/721/1155 balances checked over JSON-RPC), which is why the
//! enum is `#[non_exhaustive]` and the check is asynchronous. Authorizers must fail closed: an
//! error while checking is a denial, never a grant.
//!
//! # What a denial looks like
//! A caller without a credential that covers a restricted repository, revision or artifact is
//! answered exactly as if it did not exist ([`DenialKind::Hidden`]: `404`, `RepoNotFound`), and
//! the gateway runs the same check for a missing one, so neither the answer nor the work done
//! tells them apart. A credential that is itself bad (malformed, unknown, revoked, expired) is
//! refused with `401` on every route, public or missing repositories included, as the Hugging
//! Face Hub does: that says nothing about what exists.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::usage::Principal;

/// Who may read an artifact. Stored with the artifact in the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AccessPolicy {
    /// Anyone who can reach the gateway.
    #[default]
    Public,
    /// Only callers presenting an API key whose scopes cover the repository (or, when asked by
    /// CID, the artifact) being requested. The strings are free-form labels kept with the
    /// policy (e.g. a team name) for a later grouping feature; [`crate::ApiKeyAuthorizer`] does
    /// not consult them today, it checks the key's own scopes.
    ApiKeyScopes(Vec<String>),
    /// Anyone may see the repository and list its files; its bytes go to callers whose wallet
    /// session's address passes the on-chain gate, or whose API key has a scope covering it
    /// (marketplace backends). See the `access` module.
    Gated(crate::access::policy::Gate),
}

impl AccessPolicy {
    /// Whether the artifact is shown as `private` in Hugging Face repository info (and hidden
    /// from callers without a covering key). A gated repository is not private: it is shown,
    /// with `gated`, so that clients know to sign in.
    pub fn is_restricted(&self) -> bool {
        matches!(self, AccessPolicy::ApiKeyScopes(_))
    }

    /// The gate, for a gated repository.
    pub fn gate(&self) -> Option<&crate::access::policy::Gate> {
        match self {
            AccessPolicy::Gated(g) => Some(g),
            _ => None,
        }
    }

    /// How much the policy keeps out: public 0, gated 1, API keys only 2. An artifact asked by
    /// CID gets the strictest policy of the revisions that name it.
    pub fn strictness(&self) -> u8 {
        match self {
            AccessPolicy::Public => 0,
            AccessPolicy::Gated(_) => 1,
            AccessPolicy::ApiKeyScopes(_) => 2,
        }
    }
}

/// What a request wants to do with an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Read repository information or a file listing.
    List,
    /// Read file bytes (including `HEAD`, which reveals sizes and ETags).
    Read,
}

/// Credentials presented with a request. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// `Authorization: Bearer <token>` (what `huggingface_hub` sends with `token=`).
    Bearer(String),
}

impl Credential {
    /// The credential of an `Authorization` header value: `Bearer <token>`, the scheme in any
    /// case (RFC 9110 §11.1). `None` for another scheme.
    pub fn from_authorization(value: &str) -> Option<Self> {
        bearer_token(value).map(|t| Credential::Bearer(t.to_string()))
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1), trimmed.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("bearer") || !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim())
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// One request for access, as an [`Authorizer`] sees it.
#[derive(Clone, Debug)]
pub struct AccessRequest<'a> {
    /// `models/org/name` or `datasets/org/name` when asked by name; `None` when asked by CID.
    pub repo: Option<&'a str>,
    /// The artifact's manifest CID.
    pub artifact: cairn_artifact::Cid,
    /// What is asked.
    pub operation: Operation,
    /// The caller's address (the peer socket address the gateway sees).
    pub client_ip: Option<IpAddr>,
    /// `METHOD /path` of the request, without the query string (for audit logs).
    pub route: &'a str,
    /// The credentials presented, if any.
    pub credential: Option<&'a Credential>,
    /// The client certificate the TLS handshake verified (mutual TLS), if any.
    pub client_cert: Option<&'a Arc<crate::ClientCert>>,
}

/// Why access was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenialKind {
    /// Credentials that are not valid (malformed, unknown, revoked, expired): 401, whatever
    /// was asked.
    Unauthenticated,
    /// Valid credentials that may not be used here (from this client address), or a check that
    /// failed: 403.
    Forbidden,
    /// Valid credentials used too often: 429.
    RateLimited,
    /// A gated repository's bytes asked by a caller who does not pass its gate (or has no
    /// credential): 403 with `X-Error-Code: GatedRepo`, which Hugging Face clients raise as
    /// `GatedRepoError`.
    Gated,
    /// No credential, or none that covers what was asked: answered exactly as if it did not
    /// exist (404), see the module docs.
    Hidden,
}

impl DenialKind {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            DenialKind::Unauthenticated => 401,
            DenialKind::Forbidden => 403,
            DenialKind::RateLimited => 429,
            DenialKind::Gated => 403,
            DenialKind::Hidden => 404,
        }
    }
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request.
    Allow,
    /// Refuse it; the reason is shown to the caller, so it must not contain secrets.
    Deny {
        /// 401, 403 or 429.
        kind: DenialKind,
        /// Shown to the caller in `X-Error-Message`.
        reason: String,
    },
}

/// A boxed future, as returned by the gateway's object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides whether a request may proceed. Implementations must fail closed.
pub trait Authorizer: Send + Sync + 'static {
    /// Checks `request` against `policy`.
    fn authorize<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Decision>;

    /// Checks `request` against `policy`, and names who the decision was for: the
    /// [`Principal`] the gateway counts the request's usage under (see the `usage` module).
    /// Only a credential the authorizer verified may be named, never one a client merely sent.
    /// The default names nobody ([`Principal::Anonymous`]).
    fn authorize_as<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, (Decision, Principal)> {
        Box::pin(async move { (self.authorize(policy, request).await, Principal::Anonymous) })
    }
}

/// Serves public artifacts and hides every restricted one (it has no key store).
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicOnly;

impl Authorizer for PublicOnly {
    fn authorize<'a>(
        &'a self,
        policy: &'a AccessPolicy,
        _request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Decision> {
        let d = match policy {
            AccessPolicy::Public => Decision::Allow,
            AccessPolicy::ApiKeyScopes(_) => Decision::Deny {
                kind: DenialKind::Hidden,
                reason: "this gateway serves no restricted repository".into(),
            },
            AccessPolicy::Gated(_) if _request.operation == Operation::List => Decision::Allow,
            AccessPolicy::Gated(_) => Decision::Deny {
                kind: DenialKind::Gated,
                reason: "this gateway checks no chain: a gated repository stays closed".into(),
            },
        };
        Box::pin(std::future::ready(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (h, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("bEaReR\tabc", Some("abc")),
            ("Bearer ", Some("")),
            ("Bearerabc", None),
            ("Basic abc", None),
            ("Bear", None),
            ("", None),
            ("Bearér abc", None),
        ] {
            assert_eq!(bearer_token(h), want, "{h:?}");
        }
    }
}
