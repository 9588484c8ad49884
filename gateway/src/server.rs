//! The accept loop: connection limits (in all and per client address, idle connections shed
//! first; see `conns`), a write timeout, hyper's HTTP/1.1 limits, graceful shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::admin::AdminAuth;
use crate::conns::{BUSY_ANSWER, Conns, WriteTimeout};
use crate::handlers::{AppState, ClientAddr, refuse, router};
use crate::source::ArtifactSource;
use crate::tls::{PeerCertificate, TlsFiles, TlsState};
use crate::{ApiKeyStore, Authorizer, Error, IpNet, PublicOnly, Registry, Usage};

/// Limits and settings of a gateway. `Default` gives values fit for a public deployment.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The grant key repositories granted to this gateway on the network are wrapped to (see
    /// `names`); with a network source, such repositories are served without registration.
    pub grant_secret: Option<Arc<cairn_encryption::GatewaySecret>>,
    /// Connections served at once. Past it, a new connection makes the longest-idle one close
    /// (from the address holding the most connections); with none idle it gets `503`.
    pub connections_max: usize,
    /// Connections one client address may hold; past it, a new one from that address makes
    /// that address's longest-idle connection close, or gets `503`.
    pub connections_per_client_max: usize,
    /// Time a client may take no byte of a response before its connection is closed.
    pub write_timeout: Duration,
    /// Response bodies streamed at once (bodies over `SMALL_BODY_MAX` bytes); each holds a
    /// reader thread and its read-ahead (about 25 MiB), so this bounds both.
    pub streams_max: usize,
    /// Response bodies streamed at once to one client address.
    pub streams_per_client_max: usize,
    /// How long a request waits for a free stream (or small read) before it gets `503`.
    pub stream_wait: Duration,
    /// Bytes of request line and headers hyper buffers (at least 8192).
    pub header_bytes_max: usize,
    /// Longest request target; longer ones get `414`.
    pub uri_len_max: usize,
    /// Largest request body (only `paths-info` takes one); larger ones get `413`.
    pub body_bytes_max: usize,
    /// Time allowed to produce the response headers (resolving, authorizing, opening the
    /// manifest); past it the answer is `503`. Streaming the body is bounded separately: the
    /// reader gives up when the client takes no bytes for two minutes.
    pub request_timeout: Duration,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight responses before closing their connections.
    pub drain_timeout: Duration,
    /// Opened manifests kept in memory.
    pub open_cache_max: usize,
    /// Bytes of opened chunks kept in memory for ranged reads (0 turns the cache off).
    pub chunk_cache_bytes: u64,
    /// Serve HTTPS with these files (see the `tls` module); `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on an address that is not loopback (behind a TLS-terminating proxy).
    /// Without it, [`Gateway::serve`] refuses such an address unless `tls` is set.
    pub insecure_http: bool,
    /// Proxies whose `X-Forwarded-For` is believed: a request whose peer address is in one of
    /// these networks counts as coming from the address the header names (see
    /// `forwarded_client`). The header of anyone else is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Requests one HTTP/2 connection may have in progress at once.
    pub h2_streams_per_connection_max: u32,
    /// Chains whose RPC endpoints check the conditions of gated repositories and contract
    /// wallets' sign-ins. Empty: gated repositories stay closed to wallets (API keys with a
    /// scope still read them).
    pub chains: Vec<ChainRpc>,
    /// Where users reach the gateway (`https://models.example.org`): the domain and URI a
    /// sign-in message must name. `None`: the listening address, with the scheme it serves.
    pub public_origin: Option<String>,
    /// How long a chain's "yes" is believed (at most `access::chain::ALLOW_TTL`, 30 s): a
    /// holder who transfers the token away is denied at most this long after.
    pub chain_allow_ttl: Duration,
    /// Sign-in nonces one client address may get per minute (behind a proxy that is not
    /// trusted, every client shares its address: raise it there).
    pub nonces_per_client_per_minute: u32,
}

/// A chain id and the URL of its JSON-RPC endpoint. `Debug` shows the URL without its path,
/// query or credentials (hosted endpoints carry an API key there).
#[derive(Clone, PartialEq, Eq)]
pub struct ChainRpc {
    /// The EIP-155 chain id; the endpoint's `eth_chainId` must say the same.
    pub id: u64,
    /// `http(s)://…`.
    pub url: String,
}

impl std::fmt::Debug for ChainRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}",
            self.id,
            crate::access::chain::redact_url(&self.url)
        )
    }
}

impl std::str::FromStr for ChainRpc {
    type Err = String;

    /// `<chain id>=<RPC URL>`, as `cairn gateway --chain` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, url) = s.split_once('=').ok_or_else(|| {
            "expected <chain id>=<RPC URL>, e.g. 31337=http://127.0.0.1:8545".to_string()
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a chain id"))?;
        if id == 0 {
            return Err("chain id 0 is not a chain".into());
        }
        let url = url.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "chain {id}: the RPC URL must start with http:// or https:// (got {})",
                crate::access::chain::redact_url(&url)
            ));
        }
        Ok(ChainRpc { id, url })
    }
}

impl GatewayConfig {
    /// Refuses plain HTTP on an address that is not loopback, unless `insecure_http` says a
    /// TLS-terminating proxy is in front.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), Error> {
        if self.tls.is_none() && !self.insecure_http && !addr.ip().is_loopback() {
            return Err(Error::PlainHttpOnNetwork { addr });
        }
        Ok(())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            grant_secret: None,
            connections_max: 1024,
            connections_per_client_max: 64,
            write_timeout: Duration::from_secs(30),
            streams_max: 32,
            streams_per_client_max: 8,
            stream_wait: Duration::from_secs(10),
            header_bytes_max: 64 * 1024,
            uri_len_max: 8 * 1024,
            body_bytes_max: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            open_cache_max: 256,
            chunk_cache_bytes: crate::cache::CHUNK_CACHE_BYTES,
            tls: None,
            insecure_http: false,
            trusted_proxies: Vec::new(),
            h2_streams_per_connection_max: 16,
            chains: Vec::new(),
            public_origin: None,
            chain_allow_ttl: crate::access::chain::ALLOW_TTL,
            nonces_per_client_per_minute: crate::access::routes::NONCES_PER_CLIENT_PER_MINUTE,
        }
    }
}

/// The HTTP gateway: a registry of repositories, a source of artifacts, an authorizer.
/// Cloning is cheap and shares everything (to serve the admin API beside the public one).
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    /// A gateway serving the repositories of `registry` out of `source`, with the
    /// [`PublicOnly`] authorizer.
    pub fn new(
        config: GatewayConfig,
        registry: Arc<Registry>,
        source: Arc<dyn ArtifactSource>,
    ) -> Self {
        Self::with_authorizer(config, registry, source, Arc::new(PublicOnly))
    }

    /// A gateway that asks `authorizer` before revealing any artifact.
    pub fn with_authorizer(
        config: GatewayConfig,
        registry: Arc<Registry>,
        source: Arc<dyn ArtifactSource>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        Self::with_usage(
            config,
            registry,
            source,
            authorizer,
            Arc::new(Usage::in_memory()),
        )
    }

    /// A gateway that asks `authorizer` before revealing any artifact and counts requests,
    /// bytes and denials per principal in `usage` (persisted when it was opened on a
    /// database: [`Usage::open`]).
    pub fn with_usage(
        config: GatewayConfig,
        registry: Arc<Registry>,
        source: Arc<dyn ArtifactSource>,
        authorizer: Arc<dyn Authorizer>,
        usage: Arc<Usage>,
    ) -> Self {
        assert!(
            config.header_bytes_max >= 8192,
            "hyper needs at least 8192 bytes of header buffer"
        );
        assert!(config.connections_max > 0 && config.open_cache_max > 0);
        assert!(config.connections_per_client_max > 0);
        assert!(config.streams_max > 0 && config.streams_per_client_max > 0);
        Self {
            state: Arc::new(AppState::new(
                registry, source, authorizer, config, usage, None,
            )),
        }
    }

    /// A gateway whose authorizer combines API keys (`keys`), wallet sessions and on-chain
    /// gates (`siwe` and its chains), and which serves the sign-in endpoints under `/auth`.
    pub fn with_access(
        config: GatewayConfig,
        registry: Arc<Registry>,
        source: Arc<dyn ArtifactSource>,
        keys: Arc<crate::ApiKeyStore>,
        usage: Arc<Usage>,
        siwe: Arc<crate::access::siwe::Siwe>,
    ) -> Self {
        let authorizer = Arc::new(crate::access::authorizer::AccessAuthorizer::new(
            keys,
            siwe.clone(),
        ));
        let mut gw = Self::with_usage(config, registry, source, authorizer.clone(), usage);
        let st = Arc::get_mut(&mut gw.state).expect("a gateway just made is not shared");
        st.set_siwe(siwe);
        gw
    }

    /// The usage counters of this gateway.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.state.usage
    }

    /// The registry this gateway serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.state.registry
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets in-flight
    /// responses finish for up to `drain_timeout`, and returns. With `config.tls`, HTTPS
    /// (HTTP/2 or HTTP/1.1 by ALPN, certificate reloaded when its files change, see the `tls`
    /// module); without, HTTP/1.1 in clear, refused on an address that is not loopback unless
    /// `config.insecure_http`.
    ///
    /// Cancel safety: dropping the returned future stops accepting at once; connections already
    /// accepted keep running on their own tasks until they end.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let cfg = self.state.config.clone();
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "reading the gateway's listen address".into(),
            source,
        })?;
        let tls = match &cfg.tls {
            Some(files) => {
                let files = files.clone();
                let state = tokio::task::spawn_blocking(move || TlsState::load(files))
                    .await
                    .map_err(|e| Error::Io {
                        what: "loading the TLS files".into(),
                        source: std::io::Error::other(e.to_string()),
                    })??;
                let s = state.summary();
                tracing::info!(subject = %s.subject, not_after = s.not_after, "serving HTTPS");
                let m = &self.state.metrics;
                state.observe(m.tls_not_after.clone(), m.tls_reload_failures.clone());
                Some(state)
            }
            None => {
                cfg.check_listen(addr)?;
                None
            }
        };
        // Reloads until this future ends (dropping the handle does not stop the task: abort it).
        let watch = tls.clone().map(|t| tokio::spawn(t.watch()));
        let app = router(self.state.clone());
        let r = serve_app(
            app,
            listener,
            &cfg,
            (cfg.connections_max, cfg.connections_per_client_max),
            tls,
            "gateway",
            shutdown,
        )
        .await;
        if let Some(w) = watch {
            w.abort();
        }
        r
    }

    /// Serves the admin API (see the `admin` module docs) on `listener`, which the caller binds,
    /// normally on 127.0.0.1, until `shutdown` completes. Every request must carry
    /// `Authorization: Bearer <auth.token>`. Keys are managed in `keys`, repositories are
    /// registered in this gateway's registry; changes take effect for the next request.
    ///
    /// Cancel safety: as for [`Gateway::serve`].
    pub async fn serve_admin(
        &self,
        listener: TcpListener,
        keys: Arc<ApiKeyStore>,
        auth: AdminAuth,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut cfg = self.state.config.clone();
        cfg.body_bytes_max = crate::admin::ADMIN_BODY_BYTES_MAX;
        cfg.request_timeout = crate::admin::ADMIN_REQUEST_TIMEOUT;
        let app = crate::admin::router(
            self.state.registry.clone(),
            keys,
            self.state.usage.clone(),
            self.state.siwe.clone(),
            auth,
            cfg.body_bytes_max,
            cfg.request_timeout,
        );
        serve_app(
            app,
            listener,
            &cfg,
            // Loopback only: every client is the same address, so it may hold them all.
            (
                crate::admin::ADMIN_CONNECTIONS_MAX,
                crate::admin::ADMIN_CONNECTIONS_MAX,
            ),
            None,
            "admin API",
            shutdown,
        )
        .await
    }
}

/// The accept loop shared by the public and the admin listener: connection limits (in all, per
/// client address), TLS when given, hyper's limits, graceful shutdown. It never stops accepting:
/// a connection there is no room for is answered `503` and closed at once (over TLS, closed).
async fn serve_app(
    app: axum::Router,
    listener: TcpListener,
    cfg: &GatewayConfig,
    (connections_max, per_client_max): (usize, usize),
    tls: Option<Arc<TlsState>>,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let conns = Conns::new(connections_max, per_client_max);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.header_bytes_max)
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_streams_per_connection_max)
        .max_header_list_size(u32::try_from(cfg.header_bytes_max).unwrap_or(u32::MAX))
        // A client resetting streams as fast as it opens them ("rapid reset") is cut off.
        .max_pending_accept_reset_streams(H2_PENDING_RESETS_MAX)
        .max_local_error_reset_streams(H2_LOCAL_RESETS_MAX)
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    // Plain HTTP stays HTTP/1.1 (no cleartext HTTP/2); HTTP/2 comes by ALPN over TLS.
    let plain = http.clone().http1_only();
    let trusted: Arc<[IpNet]> = cfg.trusted_proxies.clone().into();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, what, tls = tls.is_some(), "listening");
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(mut slot) = conns.admit(peer.ip()) else {
            // Best effort: the socket buffer of a new connection has room for these bytes. A
            // TLS client would read them as garbage: it is only closed.
            if tls.is_none() {
                let _ = stream.try_write(BUSY_ANSWER);
            }
            tracing::debug!(%peer, what, "no connection slot free; refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = WriteTimeout::new(stream, cfg.write_timeout);
        let ctx = ConnCtx {
            app: app.clone(),
            peer,
            uri_len_max: cfg.uri_len_max,
            conns: conns.clone(),
            conn_id: slot.id(),
            trusted: trusted.clone(),
            cert: None,
        };
        let watcher = graceful.watcher();
        let handshake_timeout = cfg.header_read_timeout;
        let (tls, http, plain) = (tls.clone(), http.clone(), plain.clone());
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => {
                        let conn = plain.serve_connection(TokioIo::new(io), service(ctx));
                        watcher.watch(conn).await
                    }
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                        // A client that never finishes its handshake holds a slot no longer
                        // than one that never sends its headers.
                        let io = match tokio::time::timeout(handshake_timeout, acceptor.accept(io))
                            .await
                        {
                            Ok(Ok(io)) => io,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                        let cert = io
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| PeerCertificate(Arc::new(c.clone().into_owned())));
                        let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                        let svc = service(ConnCtx { cert, ..ctx });
                        let http = if h2 {
                            http.http2_only()
                        } else {
                            http.http1_only()
                        };
                        let conn = http.serve_connection(TokioIo::new(io), svc);
                        watcher.watch(conn).await
                    }
                }
            };
            tokio::select! {
                r = served => if let Err(e) = r {
                    // Includes bodies aborted because a read failed mid-stream, and clients cut
                    // off by the write timeout.
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                // Shed to make room (it was idle): dropping it closes the socket.
                _ = &mut slot.shed => tracing::debug!(%peer, "idle connection shed"),
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(what, "shutting down");
    if tokio::time::timeout(cfg.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            what,
            "some connections were still busy at the end of the drain timeout"
        );
    }
    Ok(())
}

/// Streams a client may reset before the server has accepted them (HTTP/2).
const H2_PENDING_RESETS_MAX: usize = 20;
/// Streams the server may reset for a client's protocol errors before closing the connection.
const H2_LOCAL_RESETS_MAX: usize = 64;
/// An idle HTTP/2 connection is pinged this often...
const H2_PING_EVERY: Duration = Duration::from_secs(30);
/// ...and closed when a ping is not answered within this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What every request of one connection shares.
struct ConnCtx {
    app: axum::Router,
    peer: SocketAddr,
    uri_len_max: usize,
    conns: Arc<Conns>,
    conn_id: u64,
    trusted: Arc<[IpNet]>,
    cert: Option<PeerCertificate>,
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the address its
/// `X-Forwarded-For` names. The header is read from the right (each proxy appends the address
/// it received the request from): trusted proxies are skipped, and the first address that is
/// not one is the client. A malformed entry ends the walk at the last trusted hop, so a client
/// cannot pass anything off by writing the header itself: what it writes lies left of the
/// address the proxy appended. At most [`FORWARDED_HOPS_MAX`] entries are read.
pub(crate) fn forwarded_client(
    peer: IpAddr,
    trusted: &[IpNet],
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for hop in values
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .take(FORWARDED_HOPS_MAX)
    {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// Most `X-Forwarded-For` entries read.
pub(crate) const FORWARDED_HOPS_MAX: usize = 16;

fn service(
    ConnCtx {
        app,
        peer,
        uri_len_max,
        conns,
        conn_id,
        trusted,
        cert,
    }: ConnCtx,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let app = app.clone();
        let client = SocketAddr::new(forwarded_client(peer.ip(), &trusted, req.headers()), 0);
        let client = if client.ip() == peer.ip() {
            peer
        } else {
            client
        };
        if let Some(c) = &cert {
            req.extensions_mut().insert(c.clone());
        }
        // Busy from the request until its response body is done (or dropped).
        let busy = conns.busy(conn_id);
        async move {
            let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
            if uri_len > uri_len_max {
                return Ok(refuse(
                    StatusCode::URI_TOO_LONG,
                    "the request URI is too long",
                ));
            }
            // The route for audit logs: never the query string, bounded (the method too:
            // a client may make one up, as long as its headers allow).
            let method: String = req.method().as_str().chars().take(16).collect();
            let route: String = format!("{method} {}", req.uri().path())
                .chars()
                .take(256)
                .collect();
            req.extensions_mut()
                .insert(ClientAddr(client, Arc::from(route), None));
            let resp = app.oneshot(req.map(axum::body::Body::new)).await?;
            Ok(resp.map(|b| {
                axum::body::Body::new(BusyBody {
                    inner: b,
                    _busy: busy,
                })
            }))
        }
    })
}

/// A response body that keeps its connection marked busy until it is done or dropped.
struct BusyBody {
    inner: axum::body::Body,
    _busy: crate::conns::Busy,
}

impl http_body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_hops_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "::1".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.0.0.2");
        for (peer, headers, want) in [
            // Not a trusted peer: the header is ignored.
            (ip("192.0.2.7"), vec!["1.2.3.4"], "192.0.2.7"),
            // A trusted proxy naming the client.
            (proxy, vec!["1.2.3.4"], "1.2.3.4"),
            // Client-written entries left of the appended one are never reached.
            (proxy, vec!["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
            // A chain of trusted proxies is walked through.
            (proxy, vec!["1.2.3.4, 10.0.0.9"], "1.2.3.4"),
            (proxy, vec!["1.2.3.4", "10.0.0.9"], "1.2.3.4"),
            // Every hop trusted: the leftmost one (the first proxy) is all we know.
            (proxy, vec!["10.0.0.8, 10.0.0.9"], "10.0.0.8"),
            // Malformed: stop at the last trusted hop.
            (proxy, vec!["1.2.3.4, bogus"], "10.0.0.2"),
            (proxy, vec!["1.2.3.4, 10.0.0.9, "], "10.0.0.2"),
            (proxy, vec!["1.2.3.4:80"], "10.0.0.2"),
            // No header: the proxy itself.
            (proxy, vec![], "10.0.0.2"),
            // IPv6.
            (ip("::1"), vec!["2001:db8::1"], "2001:db8::1"),
        ] {
            assert_eq!(
                forwarded_client(peer, &trusted, &xff(&headers)),
                ip(want),
                "{peer} {headers:?}"
            );
        }
        // At most FORWARDED_HOPS_MAX entries are read.
        let long = vec!["10.0.0.9"; 40].join(", ");
        let h = xff(&[&format!("1.2.3.4, {long}")]);
        assert_eq!(forwarded_client(proxy, &trusted, &h), ip("10.0.0.9"));
        // Nobody trusted: never read.
        assert_eq!(forwarded_client(proxy, &[], &xff(&["1.2.3.4"])), proxy);
    }
}
