//! Routes and handlers: the native endpoints and the Hugging Face-compatible surface.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_artifact::{Artifact, ChunkCache, Cid, FileEntry};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::hook::{
    AccessPolicy, AccessRequest, Credential, Decision, DenialKind, Operation,
};
use crate::body::{SMALL_BODY_MAX, StreamLimits, read_small, stream_file};
use crate::cache::ChunkLru;
use crate::metrics::{MethodLabel, Metrics, RequestLabels, RouteLabels};
use crate::range::{RangeRequest, parse_range};
use crate::registry::{ArtifactEntry, CommitId, Lookup, RepoId, RepoKind, Resolved};
use crate::source::{ArtifactSource, OpenArtifact};
use crate::usage::{self, CountingBody, Principal, RequestTag, Usage};
use crate::{Authorizer, Error, GatewayConfig, Registry};

/// The caller's socket address and `METHOD /path` (no query string, clipped), put in request
/// extensions by the accept loop, and the client certificate the TLS handshake verified, read
/// by [`read_client_cert`].
#[derive(Clone, Debug)]
pub(crate) struct ClientAddr(
    pub SocketAddr,
    pub Arc<str>,
    pub Option<Arc<crate::ClientCert>>,
);

pub(crate) struct AppState {
    pub registry: Arc<Registry>,
    pub source: Arc<dyn ArtifactSource>,
    pub authorizer: Arc<dyn Authorizer>,
    pub metrics: Arc<Metrics>,
    pub config: GatewayConfig,
    /// Opened artifacts by manifest CID, so `HEAD` and ranged reads do not fetch and decrypt the
    /// manifest each time. Bounded (the oldest goes when `config.open_cache_max` is reached)
    /// and short-lived ([`OPEN_CACHE_TTL`]): a holder record replaced after a repair, or a
    /// holder that came back, is noticed soon.
    opened: Mutex<OpenedMap>,
    /// Opened chunks shared by every request.
    pub chunks: Arc<ChunkLru>,
    /// Bounds on body readers (threads and read-ahead memory).
    pub streams: Arc<StreamLimits>,
    /// Requests, bytes and denials per principal (see `usage`).
    pub usage: Arc<Usage>,
    /// Bytes of safetensors headers held at once by tensor reads (see `tensors`).
    pub tensor_headers: Arc<tokio::sync::Semaphore>,
    /// Wallet sign-in and the chains gates are checked on; `None`: no `/auth` endpoints, and
    /// gated repositories stay closed.
    pub siwe: Option<Arc<crate::access::siwe::Siwe>>,
    /// Nonces handed out per client address (see `access::routes`).
    pub nonce_limiter: crate::access::routes::NonceLimiter,
    /// Repositories granted to this gateway on the network (see `names`); `None` when it reads
    /// a local store or has no grant key.
    pub names: Option<Arc<crate::names::NameResolver>>,
}

/// How long an opened artifact (manifest, private part, holder record) is reused before it is
/// opened again: long enough that a burst of range requests pays the lookup once.
pub const OPEN_CACHE_TTL: Duration = Duration::from_secs(30);

type St = State<Arc<AppState>>;
type OpenedMap = HashMap<Cid, (Instant, Arc<dyn OpenArtifact>)>;

impl AppState {
    pub fn new(
        registry: Arc<Registry>,
        source: Arc<dyn ArtifactSource>,
        authorizer: Arc<dyn Authorizer>,
        config: GatewayConfig,
        usage: Arc<Usage>,
        siwe: Option<Arc<crate::access::siwe::Siwe>>,
    ) -> Self {
        let chunks = Arc::new(ChunkLru::new(config.chunk_cache_bytes));
        let names = match (source.network(), config.grant_secret.clone()) {
            (Some(net), Some(secret)) => {
                Some(Arc::new(crate::names::NameResolver::new(net, secret)))
            }
            _ => None,
        };
        let nonce_limiter =
            crate::access::routes::NonceLimiter::new(config.nonces_per_client_per_minute);
        let streams = Arc::new(StreamLimits::new(
            config.streams_max,
            config.streams_per_client_max,
            config.stream_wait,
        ));
        Self {
            registry,
            metrics: Arc::new(Metrics::new(
                &chunks,
                streams.open.clone(),
                source.clone(),
                &usage,
                siwe.as_ref().map(|s| s.chains().as_ref()),
            )),
            usage,
            source,
            authorizer,
            streams,
            config,
            opened: Mutex::new(HashMap::new()),
            chunks,
            tensor_headers: Arc::new(tokio::sync::Semaphore::new(
                crate::tensors::TENSOR_HEADER_BYTES_MAX as usize,
            )),
            siwe,
            nonce_limiter,
            names,
        }
    }

    /// A repository's `main` and revision `rev`: the registry's, or, for a repository it does
    /// not hold, what is granted to this gateway on the network (see `names`).
    pub(crate) async fn lookup(
        &self,
        kind: RepoKind,
        repo: &RepoId,
        rev: &str,
    ) -> Result<Lookup, Error> {
        let local = self.registry.lookup(kind, repo, rev)?;
        match &self.names {
            Some(names) if local.main.is_none() => names.lookup(kind, repo, rev).await,
            _ => Ok(local),
        }
    }

    /// Counts a sign-in outcome (`ok` or the refusal's class).
    pub fn siwe_outcomes(&self, class: &'static str) {
        self.metrics
            .sign_ins
            .get_or_create(&crate::metrics::OutcomeLabels { outcome: class })
            .inc();
    }

    /// Turns on wallet sign-in and gate checks (before the gateway is shared), registering the
    /// chain metrics.
    pub fn set_siwe(&mut self, siwe: Arc<crate::access::siwe::Siwe>) {
        let metrics = Arc::get_mut(&mut self.metrics).expect("metrics not shared yet");
        metrics.register_chains(siwe.chains());
        self.siwe = Some(siwe);
    }

    async fn open(&self, entry: &ArtifactEntry) -> Result<Arc<dyn OpenArtifact>, Error> {
        let cid = entry.cid();
        if let Some((at, a)) = self.lock().get(&cid)
            && at.elapsed() < OPEN_CACHE_TTL
        {
            return Ok(a.clone());
        }
        let a = self.source.open(&entry.cap).await?;
        let now = Instant::now();
        let mut cache = self.lock();
        cache.retain(|_, (at, _)| now.duration_since(*at) < OPEN_CACHE_TTL);
        if cache.len() >= self.config.open_cache_max
            && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k)
        {
            cache.remove(&oldest);
        }
        cache.insert(cid, (now, a.clone()));
        Ok(a)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenedMap> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the authorizer whether `artifact` under `policy` may be shown: `Ok(true)` to
    /// serve, `Ok(false)` when it must look missing, an error for a refused credential (401,
    /// 403) or rate (429).
    async fn authorize(
        &self,
        policy: &AccessPolicy,
        artifact: Cid,
        repo: Option<&str>,
        operation: Operation,
        req: &RequestInfo,
    ) -> Result<bool, Error> {
        let request = AccessRequest {
            repo,
            artifact,
            operation,
            client_ip: req.client.map(|c| c.ip()),
            route: &req.route,
            credential: req.credential.as_ref(),
            client_cert: req.client_cert.as_ref(),
        };
        let (decision, principal) = self.authorizer.authorize_as(policy, &request).await;
        let denied = decision != Decision::Allow;
        usage::report(principal, denied);
        if let (Principal::Key(_), Some(ip)) = (principal, request.client_ip) {
            let status = match &decision {
                Decision::Allow => 200,
                Decision::Deny { kind, .. } => kind.status(),
            };
            let what = repo.map_or_else(|| format!("artifact:{artifact}"), str::to_string);
            self.usage
                .note_use(principal, ip, &req.route, &what, status)
                .await;
        }
        match decision {
            Decision::Allow => Ok(true),
            Decision::Deny { kind, reason } => {
                tracing::info!(repo, %artifact, ?operation, status = kind.status(), "access denied");
                if kind == DenialKind::Hidden {
                    return Ok(false);
                }
                Err(Error::Denied {
                    what: repo
                        .map(str::to_string)
                        .unwrap_or_else(|| artifact.to_string()),
                    reason,
                    kind,
                })
            }
        }
    }
}

/// What the handlers need from the request besides the path.
pub(crate) struct RequestInfo {
    pub client: Option<SocketAddr>,
    route: Arc<str>,
    credential: Option<Credential>,
    client_cert: Option<Arc<crate::ClientCert>>,
}

impl RequestInfo {
    pub fn from(headers: &HeaderMap, client: Option<ClientAddr>) -> Self {
        let credential = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(Credential::from_authorization);
        let route = client
            .as_ref()
            .map_or_else(|| Arc::from("unknown"), |c| c.1.clone());
        Self {
            client_cert: client.as_ref().and_then(|c| c.2.clone()),
            client: client.map(|c| c.0),
            route,
            credential,
        }
    }
}

/// An error answer: status, `X-Error-Code`, `X-Error-Message`, a JSON body, and the commit id
/// when one is known (the HF client caches "file does not exist at this commit").
pub(crate) struct ApiError {
    pub error: Error,
    pub commit: Option<CommitId>,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self {
            error,
            commit: None,
        }
    }
}

pub(crate) fn header_safe(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                ' '
            }
        })
        .take(512)
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("error"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let h = self.error.http();
        let msg = self.error.to_string();
        if h.status >= 500 {
            tracing::warn!(error = %msg, "request failed");
        }
        // The Hub's words for a bad token, which `huggingface_hub` tells from "not found"; the
        // body says why.
        let header_msg = if h.status == 401 {
            "Invalid credentials in Authorization header".to_string()
        } else {
            msg.clone()
        };
        let mut resp = (
            StatusCode::from_u16(h.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({ "error": msg })),
        )
            .into_response();
        let hm = resp.headers_mut();
        if let Some(code) = h.code {
            hm.insert("x-error-code", HeaderValue::from_static(code));
        }
        hm.insert("x-error-message", header_safe(&header_msg));
        if h.status == 401 {
            hm.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(c) = self.commit {
            hm.insert("x-repo-commit", header_safe(&c.to_string()));
        }
        if h.status == 429 || h.status == 503 {
            // A token comes back within a minute at the lowest rate.
            hm.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Builds the router over `state`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let body_max = state.config.body_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/auth", get(crate::access::routes::page))
        .route("/auth/page.js", get(crate::access::routes::page))
        .route("/auth/nonce", get(crate::access::routes::nonce))
        .route("/auth/siwe", post(crate::access::routes::sign_in))
        .route(
            "/auth/session",
            get(crate::access::routes::whoami).delete(crate::access::routes::sign_out),
        )
        .route("/metrics", get(metrics))
        .route("/api/artifacts/{cid}", get(artifact_info))
        .route("/artifacts/{cid}/{*path}", get(artifact_file))
        .route("/api/models/{org}/{name}", get(repo_info::<false>))
        .route("/api/datasets/{org}/{name}", get(repo_info::<true>))
        .route(
            "/api/models/{org}/{name}/revision/{rev}",
            get(repo_info_rev::<false>),
        )
        .route(
            "/api/datasets/{org}/{name}/revision/{rev}",
            get(repo_info_rev::<true>),
        )
        .route(
            "/api/models/{org}/{name}/tree/{rev}",
            get(tree_root::<false>),
        )
        .route(
            "/api/datasets/{org}/{name}/tree/{rev}",
            get(tree_root::<true>),
        )
        .route(
            "/api/models/{org}/{name}/tree/{rev}/{*path}",
            get(tree_path::<false>),
        )
        .route(
            "/api/datasets/{org}/{name}/tree/{rev}/{*path}",
            get(tree_path::<true>),
        )
        .route(
            "/api/models/{org}/{name}/paths-info/{rev}",
            post(paths_info::<false>),
        )
        .route(
            "/api/datasets/{org}/{name}/paths-info/{rev}",
            post(paths_info::<true>),
        )
        .route("/{org}/{name}/resolve/{rev}/{*path}", get(resolve::<false>))
        .route(
            "/datasets/{org}/{name}/resolve/{rev}/{*path}",
            get(resolve::<true>),
        )
        .route(
            "/{org}/{name}/tensors/{rev}/{*path}",
            get(crate::tensors::tensors::<false>),
        )
        .route(
            "/datasets/{org}/{name}/tensors/{rev}/{*path}",
            get(crate::tensors::tensors::<true>),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_max))
        .layer(middleware::from_fn(read_client_cert))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Reads the client certificate the TLS handshake verified (mutual TLS) into the request's
/// [`ClientAddr`], where the handlers find it beside the address. Read per request: a
/// certificate is a few hundred bytes and revocation is checked per request anyway.
async fn read_client_cert(mut req: Request, next: Next) -> Response {
    if let Some(pc) = req
        .extensions()
        .get::<crate::tls::PeerCertificate>()
        .cloned()
        && let Some(c) = req.extensions_mut().get_mut::<ClientAddr>()
    {
        c.2 = Some(Arc::new(crate::ClientCert::from_der(&pc.0)));
    }
    next.run(req).await
}

/// Metrics, the request timeout and one log line per request (method, route, status, time;
/// never headers, so neither API keys nor anything else secret).
async fn observe(State(st): St, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = MethodLabel::of(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // The handler reports who it authorized into the tag (see `usage`).
    let tag = Arc::new(RequestTag::default());
    let handled = usage::tagged(
        tag.clone(),
        tokio::time::timeout(st.config.request_timeout, next.run(req)),
    );
    let resp = match handled.await {
        Ok(r) => r,
        Err(_) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                "the response could not be started within the request timeout",
            )
                .into_response();
            r.headers_mut().insert(
                "x-error-message",
                HeaderValue::from_static("request timeout"),
            );
            r
        }
    };
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    st.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status,
        })
        .inc();
    st.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(method = method.as_str(), %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    let (principal, denied) = tag.take();
    let sink = st.usage.request_done(principal, denied);
    resp.map(|b| Body::new(CountingBody::new(b, sink)))
}

/// `ok`, or `degraded` (still 200: the gateway serves what needs no chain) with the chains
/// whose RPC does not answer, so gated reads are being denied.
async fn healthz(State(st): St) -> String {
    match st.siwe.as_ref().map(|s| s.chains().unhealthy()) {
        Some(down) if !down.is_empty() => {
            let ids: Vec<String> = down.iter().map(u64::to_string).collect();
            format!(
                "degraded: no answer from the RPC of chain {}\n",
                ids.join(", ")
            )
        }
        _ => "ok\n".into(),
    }
}

async fn metrics(State(st): St) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    Error::BadRequest("no such endpoint".into()).into()
}

pub(crate) fn kind_of(dataset: bool) -> RepoKind {
    if dataset {
        RepoKind::Dataset
    } else {
        RepoKind::Model
    }
}

/// The policy a missing repository, revision or artifact is checked against (see
/// [`open_repo`]).
const STAND_IN: AccessPolicy = AccessPolicy::ApiKeyScopes(Vec::new());

/// The artifact a missing repository is checked against: no registration names it.
fn missing_cid() -> Cid {
    cairn_artifact::manifest_cid(b"cairn-gateway: no artifact")
}

/// Resolves and authorizes a repository revision and opens its artifact.
///
/// Without a credential that covers it, a restricted repository or revision is answered
/// exactly as a missing one (`RepoNotFound`, or `RevisionNotFound` in a repository the caller
/// may see), and a missing one goes through the same authorization, against a restricted
/// stand-in, so that the time taken does not tell them apart either.
pub(crate) async fn open_repo(
    st: &AppState,
    kind: RepoKind,
    org: &str,
    name: &str,
    rev: &str,
    op: Operation,
    info: &RequestInfo,
) -> ApiResult<(RepoId, Resolved, Arc<dyn OpenArtifact>)> {
    let label = format!("{}/{org}/{name}", kind.plural());
    let no_repo = || Error::RepoNotFound {
        repo: label.clone(),
    };
    let repo = RepoId::new(org, name).map_err(|_| no_repo())?;
    let Lookup { main, revision } = st.lookup(kind, &repo, rev).await?;
    let (policy, artifact) = match (&revision, &main) {
        (Some(r), _) => (r.entry.policy.clone(), r.entry.cid()),
        (None, Some(m)) => (STAND_IN, m.entry.cid()),
        (None, None) => (STAND_IN, missing_cid()),
    };
    let allowed = st
        .authorize(&policy, artifact, Some(&label), op, info)
        .await?;
    let had_revision = revision.is_some();
    let resolved = match revision {
        Some(r) if allowed => r,
        _ => {
            // The repository shows (and a revision can be missing from it) when its `main` is
            // public, or when the caller was allowed `main` (the stand-in carries main's CID).
            let visible = main
                .as_ref()
                .is_some_and(|m| !m.entry.policy.is_restricted() || (!had_revision && allowed));
            return Err(if visible {
                Error::RevisionNotFound {
                    repo: label,
                    revision: rev.chars().take(100).collect(),
                }
            } else {
                no_repo()
            }
            .into());
        }
    };
    let art = st.open(&resolved.entry).await.map_err(|e| ApiError {
        error: e,
        commit: Some(resolved.commit),
    })?;
    Ok((repo, resolved, art))
}

/// Authorizes and opens an artifact asked by CID; a restricted one without a covering
/// credential is answered as a missing one, which gets the same check (see [`open_repo`]).
async fn open_cid(
    st: &AppState,
    cid: &str,
    op: Operation,
    info: &RequestInfo,
) -> ApiResult<(ArtifactEntry, Arc<dyn OpenArtifact>)> {
    let not_found = || Error::ArtifactNotFound {
        cid: cid.chars().take(100).collect(),
    };
    let parsed = parse_url_cid(cid).ok_or_else(not_found)?;
    let entry = st.registry.artifact(&parsed)?;
    let policy = entry.as_ref().map_or(STAND_IN, |e| e.policy.clone());
    let allowed = st.authorize(&policy, parsed, None, op, info).await?;
    let entry = match entry {
        Some(e) if allowed => e,
        _ => return Err(not_found().into()),
    };
    let art = st.open(&entry).await?;
    Ok((entry, art))
}

/// The file's ETag value (unquoted): BLAKE3 over its size and its chunks' plaintext hashes,
/// so equal bytes give equal tags whatever artifact they are in, and no byte needs reading.
fn file_etag(art: &Artifact<'_>, f: &FileEntry) -> String {
    let mut h = blake3::Hasher::new_derive_key("cairn-gateway 2025 file etag v1");
    h.update(&f.size.to_le_bytes());
    let first = f.first_chunk as usize;
    for c in &art.private.chunks[first..first + f.chunk_count as usize] {
        h.update(&c.hash);
    }
    h.finalize().to_hex().to_string()
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("jsonl") => "application/jsonl",
        Some("txt") => "text/plain; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        Some("csv") => "text/csv; charset=utf-8",
        Some("parquet") => "application/vnd.apache.parquet",
        _ => "application/octet-stream",
    }
}

/// The file at `path`, by binary search: `Manifest::open` refuses a file list that is not
/// sorted and unique, so the list is its own index.
pub(crate) fn find_file<'a>(files: &'a [FileEntry], path: &str) -> Option<&'a FileEntry> {
    files
        .binary_search_by(|f| f.path.as_str().cmp(path))
        .ok()
        .map(|i| &files[i])
}

/// Whether `dir` (no trailing slash) is a directory of the artifact: some file's path starts
/// with `dir/`. Those paths sort together, right where `dir/` would go.
fn is_dir(files: &[FileEntry], dir: &str) -> bool {
    if dir.is_empty() {
        return false;
    }
    let i = files.partition_point(|f| {
        // f.path < "dir/", without building the string.
        let p = f.path.as_bytes();
        let n = dir.len().min(p.len());
        match p[..n].cmp(&dir.as_bytes()[..n]) {
            std::cmp::Ordering::Equal => p.len() <= dir.len() || p[dir.len()] < b'/',
            o => o == std::cmp::Ordering::Less,
        }
    });
    files
        .get(i)
        .and_then(|f| f.path.strip_prefix(dir))
        .is_some_and(|r| r.starts_with('/'))
}

/// The CID in an `/artifacts/{cid}` or `/api/artifacts/{cid}` URL, in any multibase the `cid`
/// crate reads; `None` for anything else.
pub(crate) fn parse_url_cid(s: &str) -> Option<Cid> {
    Cid::try_from(s).ok()
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, RFC 9110 13.1.2) or is `*`.
pub(crate) fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/").trim_matches('"') == etag
    })
}

/// Whether a `Range` may apply given the request's `If-Range` (RFC 9110 13.1.5): only while the
/// representation is the one the client has, by strong comparison with `quoted`, the ETag as
/// sent. A date, a weak tag or a value that is not visible ASCII never matches, so the client
/// gets the whole file rather than a piece of another version.
pub(crate) fn if_range_allows(if_range: Option<&HeaderValue>, quoted: &str) -> bool {
    if_range.is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == quoted))
}

/// Answers `GET`/`HEAD` for one file: validators, ranges and the body (read first when small,
/// streamed otherwise).
#[allow(clippy::too_many_arguments)]
async fn serve_file(
    st: &AppState,
    method: &Method,
    headers: &HeaderMap,
    art: Arc<dyn OpenArtifact>,
    path: &str,
    commit: Option<CommitId>,
    immutable: bool,
    client: Option<std::net::IpAddr>,
) -> ApiResult<Response> {
    let a = art.artifact();
    let file = find_file(&a.private.files, path)
        .ok_or_else(|| ApiError {
            error: Error::EntryNotFound {
                what: commit.map_or_else(|| a.cid.to_string(), |c| c.to_string()),
                path: path.chars().take(200).collect(),
            },
            commit,
        })?
        .clone();
    let etag = file_etag(&a, &file);
    let quoted = format!("\"{etag}\"");
    let len = file.size;
    let mut b = Response::builder()
        .header(header::ETAG, &quoted)
        .header("x-linked-etag", &quoted)
        .header("x-linked-size", len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type(path))
        .header(
            header::CACHE_CONTROL,
            if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=0, must-revalidate"
            },
        );
    if let Some(c) = commit {
        b = b.header("x-repo-commit", c.to_string());
    }
    let built = |b: axum::http::response::Builder, body: Body| {
        b.body(body)
            .expect("headers built from checked values are valid")
    };
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag)
    {
        return Ok(built(b.status(StatusCode::NOT_MODIFIED), Body::empty()));
    }
    let if_range_ok = if_range_allows(headers.get(header::IF_RANGE), &quoted);
    let range = match headers.get(header::RANGE) {
        Some(v) if if_range_ok => parse_range(v.as_bytes(), len),
        _ => RangeRequest::Full,
    };
    let (status, range) = match range {
        RangeRequest::Full => (StatusCode::OK, 0..len),
        RangeRequest::Partial(r) => {
            b = b.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{len}", r.start, r.end - 1),
            );
            (StatusCode::PARTIAL_CONTENT, r)
        }
        RangeRequest::Unsatisfiable => {
            return Ok(built(
                b.status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .header(header::CONTENT_LENGTH, 0),
                Body::empty(),
            ));
        }
    };
    b = b
        .status(status)
        .header(header::CONTENT_LENGTH, range.end - range.start);
    if method == Method::HEAD {
        return Ok(built(b, Body::empty()));
    }
    // Ranged reads fill the chunk cache; whole-file reads only look in it (see `cache`).
    let cache: Arc<dyn ChunkCache + Send> = if status == StatusCode::PARTIAL_CONTENT {
        st.chunks.clone()
    } else {
        Arc::new(st.chunks.lookup_only())
    };
    if range.end - range.start <= SMALL_BODY_MAX {
        let bytes = read_small(&st.streams, art, file, range, cache, &st.metrics).await?;
        return Ok(built(b, Body::from(bytes)));
    }
    let permit = st.streams.stream(client).await?;
    let body = stream_file(art, file, range, cache, st.metrics.clone(), permit);
    Ok(built(b, Body::new(body)))
}

async fn resolve<const DATASET: bool>(
    State(st): St,
    method: Method,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    let info = RequestInfo::from(&headers, client.map(|c| c.0));
    let (_, resolved, art) = open_repo(
        &st,
        kind_of(DATASET),
        &org,
        &name,
        &rev,
        Operation::Read,
        &info,
    )
    .await?;
    // A URL naming the commit id is immutable; `main` moves.
    let immutable = CommitId::parse(&rev).is_some();
    serve_file(
        &st,
        &method,
        &headers,
        art,
        &path,
        Some(resolved.commit),
        immutable,
        info.client.map(|c| c.ip()),
    )
    .await
}

async fn artifact_file(
    State(st): St,
    method: Method,
    Path((cid, path)): Path<(String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    let info = RequestInfo::from(&headers, client.map(|c| c.0));
    let (entry, art) = open_cid(&st, &cid, Operation::Read, &info).await?;
    let commit = CommitId::of(&entry.cid());
    let client = info.client.map(|c| c.ip());
    serve_file(
        &st,
        &method,
        &headers,
        art,
        &path,
        Some(commit),
        true,
        client,
    )
    .await
}

async fn artifact_info(
    State(st): St,
    Path(cid): Path<String>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    let info = RequestInfo::from(&headers, client.map(|c| c.0));
    let (entry, art) = open_cid(&st, &cid, Operation::List, &info).await?;
    let a = art.artifact();
    let files: Vec<Value> = a
        .private
        .files
        .iter()
        .map(|f| json!({ "path": f.path, "size": f.size, "etag": file_etag(&a, f) }))
        .collect();
    let body = json!({
        "cid": entry.cid().to_string(),
        "commit": CommitId::of(&entry.cid()).to_string(),
        "name": a.private.name,
        "size": a.private.files.iter().map(|f| f.size).sum::<u64>(),
        "files": files,
    });
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
        axum::Json(body),
    )
        .into_response())
}

/// `2024-11-16T00:27:02.000Z` from Unix seconds (the form `huggingface_hub` parses).
pub(crate) fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn repo_info_impl(
    st: &AppState,
    dataset: bool,
    org: &str,
    name: &str,
    rev: &str,
    headers: &HeaderMap,
    client: Option<ClientAddr>,
) -> ApiResult<Response> {
    let info = RequestInfo::from(headers, client);
    let kind = kind_of(dataset);
    let (repo, resolved, art) = open_repo(st, kind, org, name, rev, Operation::List, &info).await?;
    let a = art.artifact();
    let siblings: Vec<Value> = a
        .private
        .files
        .iter()
        .map(|f| json!({ "rfilename": f.path, "size": f.size, "blobId": file_etag(&a, f) }))
        .collect();
    let when = iso8601(resolved.entry.registered_at);
    let commit = resolved.commit.to_string();
    let mut body = json!({
        "_id": commit,
        "id": repo.to_string(),
        "author": repo.org(),
        "sha": commit,
        "lastModified": when,
        "createdAt": when,
        "private": resolved.entry.policy.is_restricted(),
        // As the Hub says it: `"auto"` for a gated repository (access follows a rule, here an
        // on-chain one), `false` otherwise.
        "gated": if resolved.entry.policy.gate().is_some() { json!("auto") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": a.private.files.iter().map(|f| f.size).sum::<u64>(),
    });
    if !dataset {
        body["modelId"] = Value::String(repo.to_string());
    }
    Ok(axum::Json(body).into_response())
}

async fn repo_info<const DATASET: bool>(
    State(st): St,
    Path((org, name)): Path<(String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    repo_info_impl(
        &st,
        DATASET,
        &org,
        &name,
        "main",
        &headers,
        client.map(|c| c.0),
    )
    .await
}

async fn repo_info_rev<const DATASET: bool>(
    State(st): St,
    Path((org, name, rev)): Path<(String, String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    repo_info_impl(
        &st,
        DATASET,
        &org,
        &name,
        &rev,
        &headers,
        client.map(|c| c.0),
    )
    .await
}

#[derive(Deserialize)]
struct TreeQuery {
    recursive: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn dir_oid(cid: &Cid, path: &str) -> String {
    let mut h = blake3::Hasher::new_derive_key("cairn-gateway 2025 directory oid v1");
    h.update(&cid.to_bytes());
    h.update(path.as_bytes());
    h.finalize().to_hex()[..40].to_string()
}

fn file_json(a: &Artifact<'_>, f: &FileEntry) -> Value {
    json!({ "type": "file", "path": f.path, "size": f.size, "oid": file_etag(a, f) })
}

fn dir_json(a: &Artifact<'_>, path: &str) -> Value {
    json!({ "type": "directory", "path": path, "size": 0, "oid": dir_oid(&a.cid, path) })
}

/// The tree under `prefix` ("" for the root): direct children, or everything when `recursive`.
/// `None` when `prefix` is not a directory.
fn tree(a: &Artifact<'_>, prefix: &str, recursive: bool) -> Option<Vec<Value>> {
    let prefix = prefix.trim_matches('/');
    let mut dirs = BTreeMap::new();
    let mut files = Vec::new();
    let mut any = false;
    for f in &a.private.files {
        let rest = if prefix.is_empty() {
            f.path.as_str()
        } else {
            match f
                .path
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(r) => r,
                None => continue,
            }
        };
        any = true;
        let base = f.path.len() - rest.len();
        if recursive {
            for (i, _) in rest.match_indices('/') {
                dirs.insert(f.path[..base + i].to_string(), ());
            }
            files.push(file_json(a, f));
        } else if let Some(i) = rest.find('/') {
            dirs.insert(f.path[..base + i].to_string(), ());
        } else {
            files.push(file_json(a, f));
        }
    }
    if !any && !prefix.is_empty() {
        return None;
    }
    let mut out: Vec<Value> = dirs.keys().map(|d| dir_json(a, d)).collect();
    out.extend(files);
    Some(out)
}

async fn tree_impl(
    st: &AppState,
    dataset: bool,
    (org, name, rev): (&str, &str, &str),
    path: &str,
    q: &TreeQuery,
    headers: &HeaderMap,
    client: Option<ClientAddr>,
) -> ApiResult<Response> {
    let info = RequestInfo::from(headers, client);
    let (_, resolved, art) =
        open_repo(st, kind_of(dataset), org, name, rev, Operation::List, &info).await?;
    let a = art.artifact();
    let entries = tree(&a, path, truthy(&q.recursive)).ok_or_else(|| ApiError {
        error: Error::EntryNotFound {
            what: resolved.commit.to_string(),
            path: path.chars().take(200).collect(),
        },
        commit: Some(resolved.commit),
    })?;
    Ok(axum::Json(entries).into_response())
}

async fn tree_root<const DATASET: bool>(
    State(st): St,
    Path((org, name, rev)): Path<(String, String, String)>,
    Query(q): Query<TreeQuery>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    tree_impl(
        &st,
        DATASET,
        (&org, &name, &rev),
        "",
        &q,
        &headers,
        client.map(|c| c.0),
    )
    .await
}

async fn tree_path<const DATASET: bool>(
    State(st): St,
    Path((org, name, rev, path)): Path<(String, String, String, String)>,
    Query(q): Query<TreeQuery>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
) -> ApiResult<Response> {
    tree_impl(
        &st,
        DATASET,
        (&org, &name, &rev),
        &path,
        &q,
        &headers,
        client.map(|c| c.0),
    )
    .await
}

/// Most paths one `paths-info` request may ask about; more get `400`. Each path costs a
/// binary search over the file list, so a request costs at most this many of them.
pub const PATHS_INFO_MAX: usize = 1000;

/// The `paths` of a `paths-info` body: a form (`paths=a&paths=b`, as `huggingface_hub` sends)
/// or JSON (`{"paths": ["a", "b"]}` or `{"paths": "a"}`). Refuses more than [`PATHS_INFO_MAX`]
/// as soon as it has counted them.
pub(crate) fn parse_paths(content_type: &str, body: &[u8]) -> Result<Vec<String>, Error> {
    let too_many = || {
        Error::BadRequest(format!(
            "paths-info asks about more than {PATHS_INFO_MAX} paths, the limit per request"
        ))
    };
    if content_type.starts_with("application/json") {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Paths {
            One(String),
            Many(Vec<Value>),
        }
        #[derive(Deserialize)]
        struct Body {
            paths: Option<Paths>,
        }
        let v: Body = serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("paths-info body is not JSON: {e}")))?;
        match v.paths {
            Some(Paths::One(s)) => Ok(vec![s]),
            Some(Paths::Many(a)) if a.len() > PATHS_INFO_MAX => Err(too_many()),
            Some(Paths::Many(a)) => Ok(a
                .into_iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect()),
            None => Err(Error::BadRequest("paths-info body has no `paths`".into())),
        }
    } else {
        let mut paths = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if k == "paths" || k == "paths[]" {
                if paths.len() == PATHS_INFO_MAX {
                    return Err(too_many());
                }
                paths.push(v.into_owned());
            }
        }
        Ok(paths)
    }
}

/// The answer to `paths-info`: each asked path that is a file or a directory, in the order
/// asked.
fn paths_info_json(art: &dyn OpenArtifact, paths: &[String]) -> Vec<Value> {
    let a = art.artifact();
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_matches('/');
        if let Some(f) = find_file(&a.private.files, p) {
            out.push(file_json(&a, f));
        } else if is_dir(&a.private.files, p) {
            out.push(dir_json(&a, p));
        }
    }
    out
}

async fn paths_info<const DATASET: bool>(
    State(st): St,
    Path((org, name, rev)): Path<(String, String, String)>,
    headers: HeaderMap,
    client: Option<axum::Extension<ClientAddr>>,
    body: Bytes,
) -> ApiResult<Response> {
    // Parsing up to a megabyte of body and the lookups are CPU work: off the async workers.
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let paths = tokio::task::spawn_blocking(move || parse_paths(&ct, &body))
        .await
        .map_err(|e| Error::Io {
            what: "parsing a paths-info body".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let info = RequestInfo::from(&headers, client.map(|c| c.0));
    let (_, _, art) = open_repo(
        &st,
        kind_of(DATASET),
        &org,
        &name,
        &rev,
        Operation::List,
        &info,
    )
    .await?;
    let out = tokio::task::spawn_blocking(move || paths_info_json(&*art, &paths))
        .await
        .map_err(|e| Error::Io {
            what: "answering paths-info".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(axum::Json(out).into_response())
}

/// A plain response for requests refused before routing (URI too long).
pub(crate) fn refuse(status: StatusCode, message: &'static str) -> Response {
    let mut r = (status, message).into_response();
    r.headers_mut().insert(
        HeaderName::from_static("x-error-message"),
        HeaderValue::from_static(message),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn path_lookups_by_binary_search() {
        // Sorted as `Manifest::open` requires: '-' and '.' sort before '/', 'b' after it.
        let names = ["a", "a-b/x", "a.txt", "a/b/c", "a/d", "ab/e", "z"];
        let files: Vec<FileEntry> = names
            .iter()
            .map(|p| FileEntry {
                path: p.to_string(),
                size: 1,
                first_chunk: 0,
                chunk_count: 0,
            })
            .collect();
        for n in names {
            assert_eq!(find_file(&files, n).map(|f| f.path.as_str()), Some(n));
        }
        for n in ["", "a/", "a/b", "b", "zz"] {
            assert!(find_file(&files, n).is_none(), "{n}");
        }
        // The naive answer, for every prefix of every path and a few that match nothing.
        let naive = |d: &str| {
            !d.is_empty()
                && files
                    .iter()
                    .any(|f| f.path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
        };
        let mut asked: Vec<String> = ["", "a-", "a.", "b", "a/b/c/d", "zz", "a/b/"]
            .map(String::from)
            .to_vec();
        for n in names {
            for i in 0..=n.len() {
                asked.push(n[..i].to_string());
            }
        }
        for d in &asked {
            assert_eq!(is_dir(&files, d), naive(d), "{d:?}");
        }
        assert!(is_dir(&files, "a") && is_dir(&files, "a/b") && is_dir(&files, "a-b"));
    }

    #[test]
    fn paths_info_bodies_are_bounded() {
        let form: String = (0..=PATHS_INFO_MAX)
            .map(|i| format!("paths=f{i}&"))
            .collect();
        let e = parse_paths("application/x-www-form-urlencoded", form.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("1000"), "{e}");
        let json = serde_json::to_vec(&json!({ "paths": vec!["x"; PATHS_INFO_MAX + 1] })).unwrap();
        assert!(parse_paths("application/json", &json).is_err());
        let ok = parse_paths("application/json", br#"{"paths": ["a", 3, "b"]}"#).unwrap();
        assert_eq!(ok, ["a", "b"]);
        assert_eq!(
            parse_paths("application/json", br#"{"paths": "a"}"#).unwrap(),
            ["a"]
        );
        assert_eq!(
            parse_paths("", b"paths=a&expand=1&paths%5B%5D=b").unwrap(),
            ["a", "b"]
        );
    }

    #[test]
    fn etag_lists() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\", \"x\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }

    /// An `If-Range` that is not visible ASCII cannot name this representation: before the
    /// check read it as absent and applied the range (its fuzz target, `http_validators`, holds
    /// the check to that rule).
    #[test]
    fn if_range_is_strong_and_fails_closed() {
        let quoted = "\"abc\"";
        assert!(if_range_allows(None, quoted));
        assert!(if_range_allows(
            Some(&HeaderValue::from_static(" \"abc\" ")),
            quoted
        ));
        for other in ["W/\"abc\"", "\"abd\"", "Tue, 15 Nov 1994 08:12:31 GMT", ""] {
            assert!(
                !if_range_allows(Some(&HeaderValue::from_static(other)), quoted),
                "{other}"
            );
        }
        let opaque = HeaderValue::from_bytes(b"\"abc\"\xff").unwrap();
        assert!(!if_range_allows(Some(&opaque), quoted));
    }
}
