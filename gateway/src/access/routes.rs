//! The sign-in endpoints under `/auth` (see [`super::siwe`] for the flow and its checks).
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/auth` | the sign-in page (static HTML and `/auth/page.js`, no build step) |
//! | GET | `/auth/nonce` | `{nonce, domain, uri, chains, expires_at, message_ttl_max_secs}` |
//! | POST | `/auth/siwe` | `{message, signature}` → `{token, session, address, chain_id, expires_at}` |
//! | GET | `/auth/session` | with the token: `{session, address, chain_id, expires_at}` |
//! | DELETE | `/auth/session` | with the token: signs it out (204) |
//!
//! Nonces are handed out at most `GatewayConfig::nonces_per_client_per_minute` (default
//! [`NONCES_PER_CLIENT_PER_MINUTE`]) per client address (an IPv6 client counts by its /64), so
//! one client cannot use up the table for everyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::siwe::{SessionCheck, Siwe, SiweError};
use crate::handlers::{AppState, ClientAddr, header_safe};

/// Nonces one client address may get per minute, by default.
pub const NONCES_PER_CLIENT_PER_MINUTE: u32 = 30;
/// Client addresses the nonce limiter remembers at once.
const LIMITER_CLIENTS_MAX: usize = 10_000;

type St = State<Arc<AppState>>;

const PAGE_HTML: &str = include_str!("auth.html");
const PAGE_JS: &str = include_str!("auth.js");

fn error(status: u16, msg: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(json!({ "error": msg }))).into_response();
    r.headers_mut().insert("x-error-message", header_safe(msg));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn siwe_of(st: &AppState) -> Result<&Arc<Siwe>, Response> {
    st.siwe.as_ref().ok_or_else(|| {
        error(
            404,
            "this gateway has no wallet sign-in (start it with --chain)",
        )
    })
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /auth`: the sign-in page. Its script comes from the same origin only (CSP), so a
/// script injected into the page by anyone else does not run.
pub(crate) async fn page(State(st): St, uri: axum::http::Uri) -> Response {
    if let Err(r) = siwe_of(&st) {
        return r;
    }
    if uri.path() == "/auth/page.js" {
        return (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            PAGE_JS,
        )
            .into_response();
    }
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE_HTML,
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

/// Per-client nonce budget.
pub(crate) struct NonceLimiter {
    clients: Mutex<HashMap<String, (Instant, u32)>>,
    per_minute: u32,
}

impl NonceLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            per_minute,
        }
    }

    fn take(&self, client: &str) -> bool {
        let now = Instant::now();
        let window = Duration::from_secs(60);
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= LIMITER_CLIENTS_MAX && !m.contains_key(client) {
            m.retain(|_, (start, _)| now.duration_since(*start) < window);
            if m.len() >= LIMITER_CLIENTS_MAX {
                return false;
            }
        }
        let e = m.entry(client.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= window {
            *e = (now, 0);
        }
        if e.1 >= self.per_minute {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// `GET /auth/nonce`.
pub(crate) async fn nonce(State(st): St, client: Option<axum::Extension<ClientAddr>>) -> Response {
    let siwe = match siwe_of(&st) {
        Ok(s) => s.clone(),
        Err(r) => return r,
    };
    let key = crate::access::keystore::client_key(client.map(|c| c.0.0.ip()));
    if !st.nonce_limiter.take(&key) {
        return error(
            429,
            &format!(
                "at most {} sign-in nonces a minute per client",
                st.nonce_limiter.per_minute
            ),
        );
    }
    match tokio::task::spawn_blocking(move || siwe.issue_nonce()).await {
        Ok(Ok(a)) => no_store(axum::Json(a).into_response()),
        Ok(Err(e)) => error(e.status(), &e.to_string()),
        Err(_) => error(500, "the nonce could not be issued"),
    }
}

/// `POST /auth/siwe`.
pub(crate) async fn sign_in(State(st): St, body: Bytes) -> Response {
    let siwe = match siwe_of(&st) {
        Ok(s) => s.clone(),
        Err(r) => return r,
    };
    match siwe.sign_in(&body).await {
        Ok(n) => {
            st.siwe_outcomes("ok");
            no_store(
                axum::Json(json!({
                    "token": n.token,
                    "session": n.session.id,
                    "address": n.session.address.to_checksum(None),
                    "chain_id": n.session.chain_id,
                    "expires_at": n.session.expires_at,
                }))
                .into_response(),
            )
        }
        Err(e) => {
            st.siwe_outcomes(e.class());
            tracing::info!(class = e.class(), "sign-in refused");
            error(e.status(), &e.to_string())
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::access::hook::bearer_token)
        .map(str::to_string)
}

async fn session_of(st: &AppState, headers: &HeaderMap) -> Result<super::siwe::Session, Response> {
    let siwe = siwe_of(st)?.clone();
    let Some(token) = bearer(headers) else {
        return Err(error(
            401,
            "send the session token as Authorization: Bearer <token>",
        ));
    };
    match tokio::task::spawn_blocking(move || siwe.check_token(&token)).await {
        Ok(SessionCheck::Valid(s)) => Ok(s),
        Ok(SessionCheck::Invalid(why)) => Err(error(401, why)),
        Err(_) => Err(error(500, "the session check failed")),
    }
}

/// `GET /auth/session`: who the token is.
pub(crate) async fn whoami(State(st): St, headers: HeaderMap) -> Response {
    match session_of(&st, &headers).await {
        Ok(s) => no_store(
            axum::Json(json!({
                "session": s.id,
                "address": s.address.to_checksum(None),
                "chain_id": s.chain_id,
                "expires_at": s.expires_at,
            }))
            .into_response(),
        ),
        Err(r) => r,
    }
}

/// `DELETE /auth/session`: signs the token out.
pub(crate) async fn sign_out(State(st): St, headers: HeaderMap) -> Response {
    let s = match session_of(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let siwe = match siwe_of(&st) {
        Ok(x) => x.clone(),
        Err(r) => return r,
    };
    match tokio::task::spawn_blocking(move || siwe.revoke(&s.id)).await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        _ => error(500, "the session could not be revoked"),
    }
}

impl SiweError {
    /// Shown to the caller as JSON, with the status of [`SiweError::status`].
    pub fn into_response(self) -> Response {
        error(self.status(), &self.to_string())
    }
}
