//! Cairn's HTTP gateway: the only crate that knows HTTP.
//!
//! It streams files out of artifacts (verified bytes only, with `Range`, `HEAD`, `ETag`) and
//! speaks enough of the Hugging Face Hub API that unmodified `huggingface_hub` works with
//! `HF_ENDPOINT` pointed at it.
//!
//! - [`Registry`] maps repositories (`org/name`, models or datasets) and revisions to the read
//!   capabilities the gateway holds. Every registered artifact gets a 40-hex [`CommitId`]
//!   derived from its manifest CID; `main` points at the latest registration.
//! - [`ArtifactSource`] opens an artifact from a capability: [`LocalSource`] out of a local
//!   [`cairn_store::Store`], [`NetworkSource`] from peers through [`cairn_node::Network`].
//! - [`Authorizer`] decides, against the artifact's [`AccessPolicy`], whether a request may see
//!   it; [`PublicOnly`] is the default, [`ApiKeyAuthorizer`] admits API keys (scoped, hashed,
//!   revocable, rotatable, rate-limited, IP-restricted, audited; see [`ApiKeyStore`] and the
//!   `apikey` module docs: key format `cairn_<16 hex>_<43 base64url>`, scopes such as
//!   `read:repo:org/name`, `read:prefix:org/`, `read:artifact:<cid>`).
//! - [`Gateway::serve`] runs the server until a shutdown future completes;
//!   [`Gateway::serve_admin`] runs the admin API (JSON, loopback, bearer admin token) that
//!   [`AdminClient`] talks to; [`run_gateway`] does both for the binary.
//!
//! # Endpoints
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `ok` |
//! | GET | `/metrics` | Prometheus/OpenMetrics text |
//! | GET | `/api/artifacts/{cid}` | JSON: `cid`, `commit`, `name`, `size`, `files: [{path, size, etag}]` |
//! | GET, HEAD | `/artifacts/{cid}/{path}` | the file's bytes |
//! | GET, HEAD | `/{org}/{name}/resolve/{rev}/{path}` | the file's bytes (model repositories) |
//! | GET, HEAD | `/datasets/{org}/{name}/resolve/{rev}/{path}` | the file's bytes (dataset repositories) |
//! | GET | `/api/{models,datasets}/{org}/{name}[/revision/{rev}]` | HF repository info: `id`, `modelId` (models), `sha`, `siblings: [{rfilename, size}]`, `private`, `gated`, `lastModified` |
//! | GET | `/api/{models,datasets}/{org}/{name}/tree/{rev}[/{path}]?recursive=` | HF tree: `[{type: file\|directory, path, size, oid}]` |
//! | POST | `/api/{models,datasets}/{org}/{name}/paths-info/{rev}` | HF paths info; body is a form (`paths=a&paths=b`) or JSON `{"paths": [...]}` |
//!
//! `{rev}` is `main` or a commit id. File answers carry `ETag` (quoted; BLAKE3 over the file's
//! size and chunk plaintext hashes, so it names the bytes), `X-Linked-Etag`, `X-Linked-Size`,
//! `X-Repo-Commit`, `Accept-Ranges: bytes`, `Content-Length`, a `Content-Type` by extension, and
//! `Cache-Control: public, max-age=31536000, immutable` when the URL names a CID or a commit id
//! (`must-revalidate` for `main`). `If-None-Match` gives `304`; `If-Range` is honoured.
//!
//! **Ranges**: one range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`) gets `206` with
//! `Content-Range`; a range starting at or past the end gets `416` with
//! `Content-Range: bytes */len`. A **multi-range** request (`bytes=0-1,5-6`) gets `200` and the
//! whole body, as RFC 9110 permits; so does a `Range` header that does not parse.
//!
//! **Errors** carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
//! `GatedRepo`) and `X-Error-Message`, as the Hub does, plus a JSON body `{"error": ...}`. No
//! `X-Xet-*` header is ever sent, so clients download over plain HTTP.
//!
//! **Streaming**: bodies are produced by the store's verifying read pipeline on a blocking
//! thread, through a bounded channel (four 1 MiB blocks of read-ahead). If a chunk cannot be
//! had or verified mid-stream, the body ends with an error and the connection is aborted: the
//! client sees a transfer shorter than `Content-Length`, never wrong or silently short data.
//!
//! **Access**: a restricted repository or artifact answers `401` (no, malformed, unknown,
//! revoked or expired key), `403` (wrong scope or client address) or `429` (over the key's
//! rate, with `Retry-After`), each with `X-Error-Code: GatedRepo`, `X-Error-Message` and a JSON
//! error body, before any byte of the artifact is read. Keys come as
//! `Authorization: Bearer <key>`, which is what `huggingface_hub` sends for `token=`.
//!
//! **Secrets**: read capabilities live only in the registry and in memory; no endpoint, log
//! line or `Debug` output shows one. API keys are stored as hashes only and the audit log
//! holds key ids, never secrets. Logs never include request headers (API keys).

mod admin;
mod apikey;
mod auth;
mod body;
mod cache;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod metrics;
mod range;
mod registry;
mod server;
mod source;

pub use admin::{
    ADMIN_ADDR_FILE, ADMIN_ANSWER_BYTES_MAX, ADMIN_BODY_BYTES_MAX, ADMIN_CLIENT_TIMEOUT,
    ADMIN_CONNECTIONS_MAX, ADMIN_REQUEST_TIMEOUT, ADMIN_TOKEN_FILE, AUDIT_LIMIT_MAX, AdminAuth,
    AdminClient, GATEWAY_ADDR_FILE, load_or_create_admin_token, run_gateway,
};
pub use apikey::{
    ALLOW_IPS_PER_KEY_MAX, AUDIT_ENTRIES_MAX, AUDIT_SYNC_EVERY, ApiKey, ApiKeyAuthorizer,
    ApiKeyStore, AuditDecision, AuditEntry, CreatedKey, IpNet, KEY_ID_LEN, KEY_LEN,
    KEY_LIFETIME_MAX_SECS, KEY_PREFIX, KEY_SECRET_LEN, KeyId, KeyInfo, KeyParseError,
    LABEL_LEN_MAX, NewKey, Op, RATE_BUCKETS_MAX, SCOPE_LEN_MAX, SCOPES_PER_KEY_MAX, Scope,
    ScopeTarget, parse_api_key,
};
pub use auth::{
    AccessPolicy, AccessRequest, Authorizer, BoxFuture, Credential, Decision, DenialKind,
    Operation, PublicOnly,
};
pub use body::{BLOCK_LEN, CLIENT_STALL_MAX, READ_AHEAD_BLOCKS};
pub use cache::CHUNK_CACHE_BYTES;
pub use error::Error;
pub use handlers::OPEN_CACHE_TTL;
pub use range::{RANGE_HEADER_LEN_MAX, RangeRequest, parse_range};
pub use registry::{
    ArtifactEntry, CommitId, REPO_PART_LEN_MAX, Registry, RepoId, RepoKind, Resolved,
};
pub use server::{Gateway, GatewayConfig};
pub use source::{ArtifactSource, Emit, LocalSource, NetworkSource, OpenArtifact};
