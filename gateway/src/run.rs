//! Starting a whole gateway the way the binary does: [`run_gateway`] opens the gateway's
//! database, hands it to the registry, the key store, the usage totals and the sign-in tables,
//! and serves the public listener and the admin API until shutdown.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::access::keystore::{AUDIT_ANON_ENTRIES_MAX, AUDIT_ENTRIES_MAX};
use crate::admin::{AdminAuth, io, load_or_create_admin_token};
use crate::db::GatewayDb;
use crate::source::ArtifactSource;
use crate::usage::{ADDRS_MAX, ADDRS_PER_KEY_MAX, USAGE_FLUSH_EVERY, USAGE_LABELLED_MAX};
use crate::{ApiKeyStore, Error, Gateway, GatewayConfig, Registry, Usage};

/// The public URL's file in the gateway directory (written by [`run_gateway`]).
pub const GATEWAY_ADDR_FILE: &str = "gateway.addr";
/// The admin URL's file in the gateway directory (written by [`run_gateway`]).
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Runs a gateway with API keys and its admin API until `shutdown` completes.
///
/// 1. Refuses an `admin_bind` that is not a loopback address ([`Error::NotLoopback`]).
/// 2. Opens (creating) `<dir>/gateway.redb` and in it the [`Registry`], the [`ApiKeyStore`]
///    and the [`Usage`] totals (and, once the chains answered, the sign-in tables): one
///    database, which they all borrow.
/// 3. Loads or creates `<dir>/admin.token` ([`load_or_create_admin_token`]).
/// 4. Binds `bind` (public, [`crate::access::authorizer::AccessAuthorizer`], [`GatewayConfig::default`]) and `admin_bind`
///    (port 0 picks a free port for either).
/// 5. Writes `<dir>/gateway.addr` and `<dir>/admin.addr`, each one line `http://ip:port` (an
///    unspecified bind address is written as loopback), atomically.
/// 6. Serves both until `shutdown` completes, drains in-flight requests (up to the drain
///    timeout), removes the two `.addr` files and returns.
///
/// Errors: [`Error::Registry`] when the database cannot be opened (another gateway using `dir`),
/// [`Error::Io`] when a listener cannot be bound or a file written.
///
/// Cancel safety: dropping the future stops accepting at once and leaves the `.addr` files
/// behind; prefer completing `shutdown`.
pub async fn run_gateway(
    dir: &Path,
    bind: SocketAddr,
    admin_bind: SocketAddr,
    source: Arc<dyn ArtifactSource>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run_gateway_with(
        dir,
        bind,
        admin_bind,
        GatewayConfig::default(),
        source,
        shutdown,
    )
    .await
}

/// [`run_gateway`] with the limits of `config` (streams, connections per client address...).
pub async fn run_gateway_with(
    dir: &Path,
    bind: SocketAddr,
    admin_bind: SocketAddr,
    config: GatewayConfig,
    source: Arc<dyn ArtifactSource>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    if !admin_bind.ip().is_loopback() {
        return Err(Error::NotLoopback {
            what: format!("the admin bind address {admin_bind}"),
        });
    }
    // Refusals come before anything is bound or written (a bad certificate, plain HTTP on a
    // network address): the operator gets one clear error and no half-started gateway.
    config.check_listen(bind)?;
    if let Some(files) = config.tls.clone() {
        tokio::task::spawn_blocking(move || crate::tls::TlsState::load(files).map(|_| ()))
            .await
            .map_err(|e| Error::Io {
                what: "loading the TLS files".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let d = dir.to_path_buf();
    let (db, registry, keys, usage, token) = tokio::task::spawn_blocking(move || {
        let db = Arc::new(GatewayDb::open(&d)?);
        let registry = Arc::new(Registry::open_in(db.clone())?);
        let keys = Arc::new(ApiKeyStore::open_in(
            db.clone(),
            AUDIT_ENTRIES_MAX,
            AUDIT_ANON_ENTRIES_MAX,
        )?);
        let usage = Arc::new(Usage::open_in(
            db.clone(),
            keys.clone(),
            USAGE_LABELLED_MAX,
            ADDRS_PER_KEY_MAX,
            ADDRS_MAX,
        )?);
        let token = load_or_create_admin_token(&d)?;
        Ok::<_, Error>((db, registry, keys, usage, token))
    })
    .await
    .map_err(|e| Error::Io {
        what: "opening the gateway database".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    // Every chain answers with the id it was given before anything is served: a gateway must
    // not start believing the wrong chain.
    let specs: Vec<(u64, String)> = config
        .chains
        .iter()
        .map(|c| (c.id, c.url.clone()))
        .collect();
    let chains = Arc::new(
        crate::access::chain::Chains::connect(&specs, config.chain_allow_ttl)
            .await
            .map_err(|reason| Error::Chain { reason })?,
    );
    let public = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(io(format!("binding the gateway on {bind}")))?;
    let admin = tokio::net::TcpListener::bind(admin_bind)
        .await
        .map_err(io(format!("binding the admin API on {admin_bind}")))?;
    let public_addr = public
        .local_addr()
        .map_err(io("reading the gateway's address".into()))?;
    let admin_addr = admin
        .local_addr()
        .map_err(io("reading the admin API's address".into()))?;
    let (gw_file, admin_file) = (dir.join(GATEWAY_ADDR_FILE), dir.join(ADMIN_ADDR_FILE));
    let public_url = url_with_scheme(scheme, public_addr);
    let origin =
        crate::access::siwe::Origin::parse(config.public_origin.as_deref().unwrap_or(&public_url))
            .map_err(|reason| Error::Chain { reason })?;
    let siwe = {
        let chains = chains.clone();
        tokio::task::spawn_blocking(move || {
            crate::access::siwe::Siwe::open_in(db, origin, chains).map(Arc::new)
        })
        .await
        .map_err(|e| Error::Io {
            what: "opening the sign-in tables".into(),
            source: std::io::Error::other(e.to_string()),
        })??
    };
    chains.spawn_health_probe();
    let gw = Gateway::with_access(
        config,
        registry,
        source,
        keys.clone(),
        usage.clone(),
        siwe.clone(),
    );
    write_atomically(&gw_file, &format!("{public_url}\n"))?;
    write_atomically(&admin_file, &format!("{}\n", url_of(admin_addr)))?;
    tracing::info!(gateway = %public_url, admin = %url_of(admin_addr), "gateway running");

    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|v| *v).await;
    };
    let stop = tx.clone();
    let trigger = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    let public = async {
        let r = gw.clone().serve(public, stopped(rx.clone())).await;
        // The public side stopped (or failed): the admin API goes with it.
        let _ = stop.send(true);
        r
    };
    let admin = gw.serve_admin(admin, keys, AdminAuth { token }, stopped(rx.clone()));
    let flush = usage
        .clone()
        .flush_every(USAGE_FLUSH_EVERY, stopped(rx.clone()));
    let all = async { tokio::join!(admin, public, flush) };
    tokio::pin!(all, trigger);
    let (a, b, _) = tokio::select! {
        r = &mut all => r,
        _ = &mut trigger => all.await,
    };
    // Once more after the drain: bodies that ended during it counted their last bytes.
    let u = usage.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || u.flush()).await {
        tracing::warn!(error = %e, "the last usage counts were not written");
    }
    let _ = std::fs::remove_file(&gw_file);
    let _ = std::fs::remove_file(&admin_file);
    a.and(b)
}

/// `http://addr`, with an unspecified address (0.0.0.0, ::) replaced by loopback so that the URL
/// can be used from this machine.
fn url_of(addr: SocketAddr) -> String {
    url_with_scheme("http", addr)
}

fn url_with_scheme(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    cairn_store::write_private_replace(path, text.as_bytes())
        .map_err(io(format!("writing {}", path.display())))
}
