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
//!   [`access`] module, one file per job: key format `cairn_<16 hex>_<43 base64url>`, scopes
//!   such as `read:repo:org/name`, `read:prefix:org/`, `read:artifact:<cid>`), and the gateway's
//!   own authorizer adds wallet sign-ins and on-chain gates.
//! - [`Usage`] counts requests, response body bytes and denials per [`Principal`] (`key:<id>`
//!   for a verified key, else `anonymous`): Prometheus counters over a bounded label set, daily
//!   totals in `gateway.redb` (`cairn apikey usage`), and an audit note on a key's first use
//!   from each client address (see the `usage` module docs and `docs/usage-metrics.md`).
//! - [`Gateway::serve`] runs the server until a shutdown future completes;
//!   [`Gateway::serve_admin`] runs the admin API (JSON, loopback, bearer admin token) that
//!   [`AdminClient`] talks to; [`run_gateway`] does both for the binary, over one
//!   `gateway.redb` that the registry, the key store, the sign-in tables and the usage totals
//!   share.
//!
//! # Endpoints
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `ok` |
//! | GET | `/metrics` | Prometheus/OpenMetrics text (usage per principal: `cairn_gateway_usage_*`) |
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
//! Bodies of at most [`SMALL_BODY_MAX`] bytes are read before the answer (a failure is then a
//! `502`).
//!
//! **Limits** ([`GatewayConfig`]): streamed bodies at once, in all and per client address
//! (`503` with `Retry-After` when none comes free in time); connections in all and per client
//! address, the longest-idle one closed to make room for a new one (with none idle, a new
//! connection gets `503`); a write timeout for clients that take no byte; at most
//! [`PATHS_INFO_MAX`] paths per paths-info request (`400`). Metric labels come from closed
//! sets: a made-up method is counted as `OTHER`.
//!
//! **Access**: without a key whose scope covers it, a restricted repository, revision or
//! artifact answers exactly as a missing one (`404`, `RepoNotFound` or `RevisionNotFound`,
//! the same headers and body), after the same check a missing one gets, so neither the answer
//! nor its timing tells them apart. A key that is itself bad (malformed, unknown, revoked,
//! expired) gets `401` with `X-Error-Message: Invalid credentials in Authorization header` on
//! every route, public ones included, as the Hub answers a bad token; a key used from an
//! address outside its allow-list gets `403`; a covering key over its rate gets `429`
//! (`X-Error-Code: GatedRepo`, `Retry-After`). Nothing of the artifact is read before the
//! answer is known. Keys come as `Authorization: Bearer <key>` (the scheme in any case),
//! which is what `huggingface_hub` sends for `token=`, or as a client certificate (mutual TLS)
//! bound to a key by one of its names ([`CertName`]), which then acts as that key and wins over
//! a bearer header; certificates are revocable by serial number or fingerprint per request
//! (see the `clientcert` module docs and docs/mtls.md).
//!
//! **Secrets**: read capabilities live only in the registry and in memory; no endpoint, log
//! line or `Debug` output shows one. API keys are stored as hashes only and the audit log
//! holds key ids, never secrets. Logs never include request headers (API keys).

pub mod access;
mod admin;
mod body;
mod cache;
mod clientcert;
mod conns;
mod db;
mod devcert;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod metrics;
mod names;
mod range;
mod registry;
mod run;
mod server;
mod source;
mod tensors;
mod tls;
mod usage;

pub use access::hook::{
    AccessPolicy, AccessRequest, Authorizer, BoxFuture, Credential, Decision, DenialKind,
    Operation, PublicOnly,
};
pub use access::keycheck::ApiKeyAuthorizer;
pub use access::keys::{
    ApiKey, KEY_ID_LEN, KEY_LEN, KEY_PREFIX, KEY_SECRET_LEN, KeyId, KeyParseError, parse_api_key,
};
pub use access::keystore::{
    AUDIT_ANON_ENTRIES_MAX, AUDIT_ANON_WINDOW_SECS, AUDIT_ENTRIES_MAX, AUDIT_SYNC_EVERY,
    ApiKeyStore, AuditDecision, AuditEntry, CreatedKey, KEY_LIFETIME_MAX_SECS, KeyInfo,
    LABEL_LEN_MAX, NewKey,
};
pub use access::ratelimit::RATE_BUCKETS_MAX;
pub use access::scopes::{
    ALLOW_IPS_PER_KEY_MAX, IpNet, Op, SCOPE_LEN_MAX, SCOPES_PER_KEY_MAX, Scope, ScopeTarget,
};
pub use admin::{
    ADMIN_ANSWER_BYTES_MAX, ADMIN_BODY_BYTES_MAX, ADMIN_CLIENT_TIMEOUT, ADMIN_CONNECTIONS_MAX,
    ADMIN_REQUEST_TIMEOUT, ADMIN_TOKEN_FILE, AUDIT_LIMIT_MAX, AdminAuth, AdminClient,
    load_or_create_admin_token,
};
pub use body::{BLOCK_LEN, CLIENT_STALL_MAX, READ_AHEAD_BLOCKS, SMALL_BODY_MAX, SMALL_READS_MAX};
pub use cache::CHUNK_CACHE_BYTES;
pub use clientcert::{
    AuditCert, CERT_DER_LEN_MAX, CERT_NAME_LEN_MAX, CERT_NAMES_MAX, CERT_REVOCATIONS_MAX,
    CERT_SERIAL_LEN_MAX, CertError, CertName, CertNameKind, CertRevocation, ClientCert,
    ClientIdentity, RevokeCert, RevokedCert, cert_sha256,
};
pub use devcert::{IssuedCert, LocalCa, LocalTls, write_key, write_local_tls};
pub use error::Error;
pub use handlers::{OPEN_CACHE_TTL, PATHS_INFO_MAX};
pub use names::{NAME_CACHE_MAX, NAME_CACHE_TTL, NAME_LOOKUPS_MAX, NameResolver, policy_of};
pub use range::{RANGE_HEADER_LEN_MAX, RangeRequest, parse_range};
pub use registry::{
    ArtifactEntry, CommitId, Lookup, REPO_PART_LEN_MAX, Registry, RepoId, RepoKind, Resolved,
};
pub use run::{ADMIN_ADDR_FILE, GATEWAY_ADDR_FILE, run_gateway, run_gateway_with};
pub use server::{ChainRpc, Gateway, GatewayConfig};
pub use source::{ArtifactSource, LocalSource, NetworkSource, OpenArtifact, Pieces};
pub use tensors::{TENSOR_HEADER_BYTES_MAX, TENSORS_QUERY_PARAM};
pub use tls::{
    ALPN, CertSummary, PEM_CERTS_MAX, PEM_FILE_BYTES_MAX, PeerCertificate, RELOAD_POLL, TlsFiles,
};
pub use usage::{
    ADDRS_MAX, ADDRS_PER_KEY_MAX, FIRST_USE_REASON, Principal, USAGE_FLUSH_EVERY,
    USAGE_LABELLED_MAX, USAGE_RETENTION_DAYS, USAGE_ROWS_MAX, Usage, UsageCounts, UsageRow,
};
