//! The gateway's one error type, and how each error becomes an HTTP answer.

use std::path::PathBuf;

/// Errors of the gateway.
///
/// Messages never contain a read capability or an API key: both are secrets, and error
/// messages end up in logs and in `X-Error-Message` headers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository of that kind and id is registered in this gateway.
    #[error("repository {repo} is not registered in this gateway")]
    RepoNotFound {
        /// `models/org/name` or `datasets/org/name`.
        repo: String,
    },
    /// The repository exists but the revision (a branch name or a commit id) does not.
    #[error("revision {revision} of {repo} is not registered; use `main` or a 40-hex commit id")]
    RevisionNotFound {
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
    },
    /// The artifact has no file or directory at that path.
    #[error("{what} has no file {path}")]
    EntryNotFound {
        /// The repository revision or artifact CID.
        what: String,
        /// The path asked for.
        path: String,
    },
    /// The gateway holds no capability for that artifact CID.
    #[error("artifact {cid} is not served by this gateway")]
    ArtifactNotFound {
        /// The CID (or the string that was not a CID).
        cid: String,
    },
    /// The caller may not read this repository or artifact.
    #[error("access to {what} is denied: {reason}")]
    Denied {
        /// The repository or artifact.
        what: String,
        /// Why, in words safe to show to the caller.
        reason: String,
        /// Whether credentials were missing (401), insufficient (403) or over their rate (429).
        kind: crate::DenialKind,
    },
    /// No API key with that id is stored.
    #[error("API key {id} does not exist; `GET /admin/keys` lists the keys")]
    KeyNotFound {
        /// The key id asked for.
        id: String,
    },
    /// An address that must be loopback (the admin API, the admin client's URL) is not.
    #[error(
        "{what} must be a loopback address (127.0.0.1 or ::1): the admin API speaks plain HTTP"
    )]
    NotLoopback {
        /// The address or URL given.
        what: String,
    },
    /// A TLS file (certificate, key, client CA) is missing, unreadable, malformed, expired, or
    /// the key does not match the certificate.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what fixes it.
        reason: String,
    },
    /// Plain HTTP was asked on an address that is not loopback, where API keys and tokens would
    /// cross the network in clear.
    #[error(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: credentials would cross the network in clear; serve HTTPS with a certificate and key, or allow plain HTTP explicitly behind a TLS-terminating proxy"
    )]
    PlainHttpOnNetwork {
        /// The listen address.
        addr: std::net::SocketAddr,
    },
    /// The admin API answered with an error, or its answer could not be read.
    #[error("admin API {url} answered {status}: {message}")]
    Admin {
        /// The URL asked.
        url: String,
        /// The HTTP status (0 when there was no answer).
        status: u16,
        /// The server's error message, or what went wrong reading it.
        message: String,
    },
    /// A repository id is not `org/name` with allowed characters.
    #[error("invalid repository id {id:?}: {reason}")]
    BadRepoId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A request was malformed (a body that is not a form or JSON, a path that is too long).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A chain's RPC endpoint could not be used (wrong chain id, no answer), or the public
    /// origin is not an origin. The reason never holds the RPC URL's path or credentials.
    #[error("{reason}")]
    Chain {
        /// What is wrong.
        reason: String,
    },
    /// Every slot of a bounded resource (body streams, reads) is taken and none came free in
    /// time; the client should retry later (`503` with `Retry-After`).
    #[error("{what}: all {limit} are busy; retry later")]
    Busy {
        /// What ran out, e.g. `response streams of this client`.
        what: &'static str,
        /// How many there are.
        limit: usize,
    },
    /// The registry database failed or holds bytes it cannot read.
    #[error("gateway registry {path}: {reason}")]
    Registry {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The local store failed, or could not produce verified bytes.
    #[error(transparent)]
    Store(#[from] cairn_artifact::Error),
    /// The network client failed to open an artifact.
    #[error(transparent)]
    Network(#[from] cairn_node::Error),
    /// Binding, accepting or another socket operation failed.
    #[error("IO error for {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The Hugging Face error code and HTTP status of an error.
pub(crate) struct HttpError {
    pub status: u16,
    pub code: Option<&'static str>,
}

impl Error {
    pub(crate) fn http(&self) -> HttpError {
        let (status, code) = match self {
            Error::RepoNotFound { .. } | Error::ArtifactNotFound { .. } => {
                (404, Some("RepoNotFound"))
            }
            Error::RevisionNotFound { .. } => (404, Some("RevisionNotFound")),
            Error::EntryNotFound { .. } => (404, Some("EntryNotFound")),
            // A bad credential is refused the Hub's way: 401 without an error code (the Python
            // client then raises a plain HTTP error, not "repository not found" or "gated").
            Error::Denied {
                kind: k @ (crate::DenialKind::Unauthenticated | crate::DenialKind::Forbidden),
                ..
            } => (k.status(), None),
            Error::Denied {
                kind: crate::DenialKind::Hidden,
                ..
            } => (404, Some("RepoNotFound")),
            Error::Denied { kind, .. } => (kind.status(), Some("GatedRepo")),
            Error::BadRepoId { .. } | Error::BadRequest(_) => (400, None),
            Error::KeyNotFound { .. } => (404, None),
            Error::NotLoopback { .. }
            | Error::Admin { .. }
            | Error::Tls { .. }
            | Error::PlainHttpOnNetwork { .. }
            | Error::Chain { .. } => (500, None),
            // Data that cannot be had or verified right now: the gateway is fine, upstream is not.
            Error::Store(cairn_artifact::Error::ManifestNotFound(_)) => (404, Some("RepoNotFound")),
            Error::Store(_) | Error::Network(_) => (502, None),
            Error::Busy { .. } => (503, None),
            Error::Registry { .. } | Error::Io { .. } => (500, None),
        };
        HttpError { status, code }
    }
}
