//! The admin API: lets the `cairn` CLI manage a running gateway (redb allows one process per
//! database, so the CLI cannot open `gateway.redb` itself while the gateway runs).
//!
//! # Participants
//! The gateway serves the admin API on its own listener, normally bound to 127.0.0.1 (
//! [`crate::run_gateway`] refuses anything but a loopback address); the CLI talks to it with
//! [`AdminClient`], which refuses non-loopback URLs, since the API speaks plain HTTP.
//!
//! # Authentication
//! Every request carries `Authorization: Bearer <admin token>` (the scheme in any case),
//! compared in constant time. The
//! token is 43 base64url characters (32 random bytes) created at first start in
//! `<gateway dir>/admin.token`, mode 0600 ([`load_or_create_admin_token`]); whoever can read
//! that file administers the gateway. Missing or wrong token: `401` with a JSON error.
//!
//! # Endpoints (JSON in and out; errors are `{"error": "..."}` with a 4xx/5xx status)
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/admin/repos` | `{kind: "Model"\|"Dataset", repo: "org/name", cap: "<read capability>", policy?: "Public"\|{"ApiKeyScopes": []}}`; without `policy` the repository keeps the policy of its `main` (public when new) | `{commit, restricted}` |
//! | POST | `/admin/keys` | [`NewKey`]: `{label, scopes: ["read:repo:org/name"], expires_in_secs?, allow_ips?: ["10.0.0.0/8"], rate_per_minute?, client_cert?: "cn:backend-1"}` | [`CreatedKey`] `{id, key, expires}`; the key is shown this once; with `client_cert` the key is bound to that certificate name and `key` is empty (it has no secret) |
//! | GET | `/admin/keys` | | `[`[`KeyInfo`]`]`: no secrets, no hashes |
//! | POST | `/admin/keys/{id}/revoke` | | `{id, revoked: true}` |
//! | POST | `/admin/keys/{id}/rotate` | `{grace_secs}` | [`CreatedKey`] of the new key |
//! | POST | `/admin/certs/revoke` | [`RevokeCert`]: `{serial: "<hex>"}` or `{sha256: "<hex>"}`, `label?` | [`RevokedCert`] `{serial\|sha256, time, label}` (the first entry, when revoked before) |
//! | GET | `/admin/certs/revoked` | | `[`[`RevokedCert`]`]` |
//! | GET | `/admin/audit?limit=N[&anonymous=true]` | | the latest N (default 100, at most [`AUDIT_LIMIT_MAX`]) [`AuditEntry`]s of keys, oldest first; with `anonymous=true`, of the aggregated denials of requests without a valid key |
//! | GET | `/admin/usage[?since=<unix secs>]` | | `[`[`UsageRow`]`]`: `{day, day_start, principal, requests, bytes, denials}` per principal and UTC day, from the day holding `since` (default: every day kept), oldest first; counts in memory are flushed first |
//!
//! Limits: bodies up to [`ADMIN_BODY_BYTES_MAX`], [`ADMIN_CONNECTIONS_MAX`] connections,
//! [`ADMIN_REQUEST_TIMEOUT`] per request; the client reads answers up to
//! [`ADMIN_ANSWER_BYTES_MAX`] and gives up after [`ADMIN_CLIENT_TIMEOUT`].
//!
//! The capability sent to `POST /admin/repos` is a secret: it travels over loopback only and is
//! never logged or echoed.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cairn_artifact::ReadCap;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::access::keystore::{ApiKeyStore, AuditEntry, CreatedKey, KeyInfo, NewKey};
use crate::clientcert::{RevokeCert, RevokedCert};
use crate::usage::{Usage, UsageRow};
use crate::{AccessPolicy, CommitId, Error, Registry, RepoId, RepoKind};

/// Largest admin request body.
pub const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;
/// Admin connections served at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// Time the admin API has to answer.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most audit entries one `GET /admin/audit` returns.
pub const AUDIT_LIMIT_MAX: usize = 10_000;
/// Largest answer [`AdminClient`] reads.
pub const ADMIN_ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Time [`AdminClient`] waits for a whole answer.
pub const ADMIN_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The admin token's file in the gateway directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin API's credentials. `Debug` hides the token.
#[derive(Clone)]
pub struct AdminAuth {
    /// The bearer token every admin request must carry.
    pub token: String,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth(<redacted>)")
    }
}

/// Maps an I/O error to [`Error::Io`] about `what`.
pub(crate) fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Reads `<dir>/admin.token`, or creates it (32 random bytes, base64url, mode 0600) if absent.
/// An existing file readable by group or others is refused: chmod it to 0600.
pub fn load_or_create_admin_token(dir: &Path) -> Result<String, Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;
    cairn_store::create_dir_private(dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(ADMIN_TOKEN_FILE);
    let bad = |why: &str| Error::Io {
        what: format!("reading the admin token {}", path.display()),
        source: std::io::Error::other(why.to_string()),
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            #[cfg(unix)]
            {
                let mode = std::fs::metadata(&path)
                    .map_err(io(format!("reading {}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(bad(
                        "the file is readable by group or others; run chmod 600 on it",
                    ));
                }
            }
            let t = s.trim();
            if t.len() < 32 || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "the file does not hold a token (32 to 256 printable characters); delete it to make a new one",
                ));
            }
            Ok(t.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 32];
            rand::rng().fill_bytes(&mut b);
            let token = data_encoding::BASE64URL_NOPAD.encode(&b);
            let mut f = cairn_store::private_options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io(format!("creating {}", path.display())))?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(io(format!("writing {}", path.display())))?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
        Err(e) => Err(Error::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

struct AdminState {
    registry: Arc<Registry>,
    keys: Arc<ApiKeyStore>,
    usage: Arc<Usage>,
    siwe: Option<Arc<crate::access::siwe::Siwe>>,
    token: String,
}

type St = State<Arc<AdminState>>;

/// An error answer of the admin API.
struct AdminError(Error);

impl From<Error> for AdminError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = self.0.to_string();
        if status.is_server_error() {
            tracing::warn!(error = %msg, "admin request failed");
        }
        (status, axum::Json(json!({ "error": msg }))).into_response()
    }
}

fn plain_error(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, axum::Json(json!({ "error": msg }))).into_response();
    r.headers_mut()
        .insert("x-error-message", crate::handlers::header_safe(msg));
    r
}

/// The admin API's routes: bodies up to `body_bytes_max`, answers within `timeout`.
pub(crate) fn router(
    registry: Arc<Registry>,
    keys: Arc<ApiKeyStore>,
    usage: Arc<Usage>,
    siwe: Option<Arc<crate::access::siwe::Siwe>>,
    auth: AdminAuth,
    body_bytes_max: usize,
    timeout: Duration,
) -> Router {
    let st = Arc::new(AdminState {
        registry,
        keys,
        usage,
        siwe,
        token: auth.token,
    });
    Router::new()
        .route("/admin/repos", post(register))
        .route("/admin/repos/policy", post(set_policy))
        .route("/admin/keys", post(create_key).get(list_keys))
        .route("/admin/keys/{id}/revoke", post(revoke_key))
        .route("/admin/keys/{id}/rotate", post(rotate_key))
        .route("/admin/certs/revoke", post(revoke_cert))
        .route("/admin/certs/revoked", get(revoked_certs))
        .route("/admin/audit", get(audit))
        .route("/admin/usage", get(usage_totals))
        .route("/admin/sessions", get(list_sessions))
        .route("/admin/sessions/{id}/revoke", post(revoke_session))
        .route("/admin/chains/cache/clear", post(clear_chain_cache))
        .fallback(|| async { plain_error(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(middleware::from_fn_with_state(st.clone(), check_token))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => plain_error(StatusCode::SERVICE_UNAVAILABLE, "admin request timeout"),
                }
            },
        ))
        .with_state(st)
}

/// Refuses requests without the admin token, before any body is read.
async fn check_token(State(st): St, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::access::hook::bearer_token)
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(st.token.as_bytes())) {
        tracing::info!(route = %req.uri().path(), "admin request with a missing or wrong token");
        let mut r = plain_error(
            StatusCode::UNAUTHORIZED,
            "the admin API needs Authorization: Bearer <the token in admin.token>",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

/// Runs blocking store work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            AdminError(Error::Io {
                what: "an admin task".into(),
                source: std::io::Error::other(e.to_string()),
            })
        })?
        .map_err(AdminError)
}

/// `GET /admin/sessions`: wallet sessions not yet expired (no secret: ids and addresses).
async fn list_sessions(State(st): St) -> Result<Response, AdminError> {
    let Some(siwe) = st.siwe.clone() else {
        return Ok(axum::Json(json!({ "sessions": [] })).into_response());
    };
    let list = blocking(move || siwe.sessions(AUDIT_LIMIT_MAX)).await?;
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "address": s.address.to_checksum(None),
                "chain_id": s.chain_id,
                "created_at": s.created_at,
                "expires_at": s.expires_at,
                "revoked": s.revoked,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "sessions": rows })).into_response())
}

/// `POST /admin/sessions/{id}/revoke`.
async fn revoke_session(
    State(st): St,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, AdminError> {
    let Some(siwe) = st.siwe.clone() else {
        return Err(Error::KeyNotFound { id }.into());
    };
    let shown = id.clone();
    if !blocking(move || siwe.revoke(&id)).await? {
        return Err(Error::KeyNotFound { id: shown }.into());
    }
    Ok(axum::Json(json!({ "id": shown, "revoked": true })).into_response())
}

/// `POST /admin/chains/cache/clear`: forgets cached chain answers (after a known reorg, or to
/// apply a transfer at once).
async fn clear_chain_cache(State(st): St) -> Response {
    if let Some(s) = &st.siwe {
        s.chains().clear_cache();
    }
    axum::Json(json!({ "cleared": true })).into_response()
}

/// `POST /admin/repos`.
#[derive(Serialize, Deserialize)]
struct RegisterBody {
    kind: RepoKind,
    repo: String,
    cap: String,
    /// `None` keeps the policy of the repository's `main` (public for a new repository).
    #[serde(default)]
    policy: Option<AccessPolicy>,
}

#[derive(Serialize, Deserialize)]
struct RegisterAnswer {
    commit: String,
    /// Whether the revision is restricted (readable with an API key only).
    #[serde(default)]
    restricted: bool,
    /// The revision's gate, in shorthand, when it is gated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate: Option<String>,
}

/// `POST /admin/repos/policy`: a new policy for a repository's `main` (the gate changed or
/// removed).
#[derive(Serialize, Deserialize)]
struct PolicyBody {
    kind: RepoKind,
    repo: String,
    policy: AccessPolicy,
}

/// Refuses a gate this gateway cannot check: bounds, and every chain it names configured.
fn check_gate(st: &AdminState, policy: Option<&AccessPolicy>) -> Result<(), Error> {
    if let Some(AccessPolicy::Gated(g)) = policy {
        g.check_bounds()
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let configured = st
            .siwe
            .as_ref()
            .map(|s| s.chains().ids())
            .unwrap_or_default();
        if let Some(c) = g.chains().into_iter().find(|c| !configured.contains(c)) {
            return Err(Error::BadRequest(format!(
                "the gate names chain {c}, which this gateway does not check (start it with --chain {c}=<RPC URL>)"
            )));
        }
    }
    Ok(())
}

async fn set_policy(
    State(st): St,
    axum::Json(b): axum::Json<PolicyBody>,
) -> Result<Response, AdminError> {
    let repo: RepoId = b.repo.parse()?;
    check_gate(&st, Some(&b.policy))?;
    let reg = st.registry.clone();
    let (commit, policy) = blocking(move || {
        let main = reg
            .lookup(b.kind, &repo, "main")?
            .main
            .ok_or_else(|| Error::RepoNotFound {
                repo: format!("{}/{repo}", b.kind.plural()),
            })?;
        reg.register_keeping(b.kind, &repo, &main.entry.cap, Some(b.policy))
    })
    .await?;
    Ok(axum::Json(RegisterAnswer {
        commit: commit.to_string(),
        restricted: policy.is_restricted(),
        gate: policy.gate().map(|g| g.to_string()),
    })
    .into_response())
}

async fn register(
    State(st): St,
    axum::Json(b): axum::Json<RegisterBody>,
) -> Result<Response, AdminError> {
    let repo: RepoId = b.repo.parse()?;
    // The parse error never echoes the capability (a secret).
    let cap: ReadCap = b
        .cap
        .parse()
        .map_err(|_| Error::BadRequest("`cap` is not a read capability".into()))?;
    check_gate(&st, b.policy.as_ref())?;
    let reg = st.registry.clone();
    let (commit, policy) =
        blocking(move || reg.register_keeping(b.kind, &repo, &cap, b.policy)).await?;
    Ok(axum::Json(RegisterAnswer {
        commit: commit.to_string(),
        restricted: policy.is_restricted(),
        gate: policy.gate().map(|g| g.to_string()),
    })
    .into_response())
}

async fn create_key(
    State(st): St,
    axum::Json(new): axum::Json<NewKey>,
) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    let created = blocking(move || keys.create(new)).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn list_keys(State(st): St) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    Ok(axum::Json(blocking(move || keys.list()).await?).into_response())
}

async fn revoke_key(State(st): St, UrlPath(id): UrlPath<String>) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    let id2 = id.clone();
    blocking(move || keys.revoke(&id2)).await?;
    Ok(axum::Json(json!({ "id": id, "revoked": true })).into_response())
}

#[derive(Serialize, Deserialize)]
struct RotateBody {
    grace_secs: u64,
}

async fn rotate_key(
    State(st): St,
    UrlPath(id): UrlPath<String>,
    axum::Json(b): axum::Json<RotateBody>,
) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    let created = blocking(move || keys.rotate(&id, Duration::from_secs(b.grace_secs))).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn revoke_cert(
    State(st): St,
    axum::Json(r): axum::Json<RevokeCert>,
) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    let revoked = blocking(move || keys.revoke_cert(r)).await?;
    Ok((StatusCode::CREATED, axum::Json(revoked)).into_response())
}

async fn revoked_certs(State(st): St) -> Result<Response, AdminError> {
    let keys = st.keys.clone();
    Ok(axum::Json(blocking(move || keys.revoked_certs()).await?).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
    #[serde(default)]
    anonymous: bool,
}

async fn audit(State(st): St, Query(q): Query<AuditQuery>) -> Result<Response, AdminError> {
    let limit = q.limit.unwrap_or(100).min(AUDIT_LIMIT_MAX);
    let keys = st.keys.clone();
    let entries = if q.anonymous {
        blocking(move || keys.audit_anonymous(limit)).await?
    } else {
        blocking(move || keys.audit(limit)).await?
    };
    Ok(axum::Json(entries).into_response())
}

#[derive(Deserialize)]
struct UsageQuery {
    #[serde(default)]
    since: u64,
}

async fn usage_totals(State(st): St, Query(q): Query<UsageQuery>) -> Result<Response, AdminError> {
    let usage = st.usage.clone();
    let rows = blocking(move || usage.totals(q.since)).await?;
    Ok(axum::Json(rows).into_response())
}

/// A client of the admin API, for the CLI. Plain HTTP to loopback addresses only.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminClient({}, <token redacted>)", self.base)
    }
}

impl AdminClient {
    /// A client of the admin API at `base_url` (`http://127.0.0.1:port`, as in `admin.addr`),
    /// authenticating with `token`. [`Error::NotLoopback`] for anything but `http://` to a
    /// loopback address or `localhost`.
    pub fn new(base_url: &str, token: String) -> Result<Self, Error> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let not = || Error::NotLoopback {
            what: format!(
                "the admin URL {:?}",
                base.chars().take(200).collect::<String>()
            ),
        };
        let uri: hyper::Uri = base.parse().map_err(|_| not())?;
        if uri.scheme_str() != Some("http")
            || uri
                .path_and_query()
                .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(not());
        }
        let host = uri.host().ok_or_else(not)?;
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(not());
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Self {
            base,
            token,
            client,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let err = |status: u16, message: String| Error::Admin {
            url: url.clone(),
            status,
            message,
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| err(0, e.to_string()))?;
        let run = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| err(0, format!("no answer ({e}); is the gateway running?")))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), ADMIN_ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| err(status, format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(ADMIN_CLIENT_TIMEOUT, run)
            .await
            .map_err(|_| err(0, "no answer within the timeout".into()))??;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(500).collect());
            return Err(err(status, message));
        }
        serde_json::from_slice(&bytes).map_err(|e| err(status, format!("unreadable answer: {e}")))
    }

    fn json(v: &impl Serialize) -> Result<Option<Vec<u8>>, Error> {
        serde_json::to_vec(v)
            .map(Some)
            .map_err(|e| Error::BadRequest(e.to_string()))
    }

    /// Registers `cap` as a revision of `repo` with `policy` and moves `main` to it.
    pub async fn register(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        cap: &ReadCap,
        policy: AccessPolicy,
    ) -> Result<CommitId, Error> {
        self.register_keeping(kind, repo, cap, Some(policy))
            .await
            .map(|(c, _)| c)
    }

    /// Registers `cap` as a revision of `repo` and moves `main` to it; with `policy` `None`
    /// the revision gets the policy of the repository's current `main` (public when new).
    /// Returns the commit id and whether the revision is restricted.
    pub async fn register_keeping(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        cap: &ReadCap,
        policy: Option<AccessPolicy>,
    ) -> Result<(CommitId, bool), Error> {
        let (commit, restricted, _) = self.register_gated(kind, repo, cap, policy).await?;
        Ok((commit, restricted))
    }

    /// Registers like [`AdminClient::register_keeping`] and also says the revision's gate (in
    /// shorthand) when it is gated.
    pub async fn register_gated(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        cap: &ReadCap,
        policy: Option<AccessPolicy>,
    ) -> Result<(CommitId, bool, Option<String>), Error> {
        let body = Self::json(&RegisterBody {
            kind,
            repo: repo.to_string(),
            cap: cap.to_string(),
            policy,
        })?;
        self.registered("/admin/repos", body).await
    }

    /// Gives `repo`'s `main` a new policy (a gate set, changed or removed).
    pub async fn set_policy(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        policy: AccessPolicy,
    ) -> Result<(CommitId, bool, Option<String>), Error> {
        let body = Self::json(&PolicyBody {
            kind,
            repo: repo.to_string(),
            policy,
        })?;
        self.registered("/admin/repos/policy", body).await
    }

    /// POSTs `body` to a registering endpoint and reads its answer: the commit id, whether
    /// the revision is restricted, and its gate in shorthand.
    async fn registered(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(CommitId, bool, Option<String>), Error> {
        let a: RegisterAnswer = self.call(hyper::Method::POST, path, body).await?;
        let commit = CommitId::parse(&a.commit).ok_or_else(|| Error::Admin {
            url: format!("{}{path}", self.base),
            status: 200,
            message: "the answer's commit is not 40 hex digits".into(),
        })?;
        Ok((commit, a.restricted, a.gate))
    }

    /// Revokes a wallet session by id.
    pub async fn revoke_session(&self, id: &str) -> Result<(), Error> {
        check_id(id)?;
        let _: serde_json::Value = self
            .call(
                hyper::Method::POST,
                &format!("/admin/sessions/{id}/revoke"),
                None,
            )
            .await?;
        Ok(())
    }

    /// Creates a key; the answer holds the secret, shown this once.
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey, Error> {
        let body = Self::json(&new)?;
        self.call(hyper::Method::POST, "/admin/keys", body).await
    }

    /// Every key, without secrets or hashes.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, Error> {
        self.call(hyper::Method::GET, "/admin/keys", None).await
    }

    /// Revokes key `id` (16 hex).
    pub async fn revoke_key(&self, id: &str) -> Result<(), Error> {
        check_id(id)?;
        let _: serde_json::Value = self
            .call(
                hyper::Method::POST,
                &format!("/admin/keys/{id}/revoke"),
                None,
            )
            .await?;
        Ok(())
    }

    /// Rotates key `id`: a new key, and the old one expires after `grace`.
    pub async fn rotate_key(&self, id: &str, grace: Duration) -> Result<CreatedKey, Error> {
        check_id(id)?;
        let body = Self::json(&RotateBody {
            grace_secs: grace.as_secs(),
        })?;
        self.call(
            hyper::Method::POST,
            &format!("/admin/keys/{id}/rotate"),
            body,
        )
        .await
    }

    /// Revokes client certificates by serial number or fingerprint, from the next request on
    /// (open connections included). Returns the list's entry (the first one, if revoked before).
    pub async fn revoke_cert(&self, r: RevokeCert) -> Result<RevokedCert, Error> {
        let body = Self::json(&r)?;
        self.call(hyper::Method::POST, "/admin/certs/revoke", body)
            .await
    }

    /// Every revoked client certificate.
    pub async fn revoked_certs(&self) -> Result<Vec<RevokedCert>, Error> {
        self.call(hyper::Method::GET, "/admin/certs/revoked", None)
            .await
    }

    /// The latest `limit` audit entries of keys (at most [`AUDIT_LIMIT_MAX`]), oldest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.call(
            hyper::Method::GET,
            &format!("/admin/audit?limit={}", limit.min(AUDIT_LIMIT_MAX)),
            None,
        )
        .await
    }

    /// The latest `limit` aggregated entries of anonymous denials, oldest first.
    pub async fn audit_anonymous(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.call(
            hyper::Method::GET,
            &format!(
                "/admin/audit?limit={}&anonymous=true",
                limit.min(AUDIT_LIMIT_MAX)
            ),
            None,
        )
        .await
    }
}

impl AdminClient {
    /// Daily totals per principal from the UTC day holding Unix second `since` on (0: every
    /// day kept), oldest first.
    pub async fn usage(&self, since: u64) -> Result<Vec<UsageRow>, Error> {
        self.call(
            hyper::Method::GET,
            &format!("/admin/usage?since={since}"),
            None,
        )
        .await
    }
}

/// Key ids go into URL paths: only 16 lowercase hex digits.
fn check_id(id: &str) -> Result<(), Error> {
    if crate::KeyId::parse(id).is_none() {
        return Err(Error::KeyNotFound {
            id: id.chars().take(40).collect(),
        });
    }
    Ok(())
}
