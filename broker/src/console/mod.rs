//! The admin console: what a `protocol http_api` listener serves (docs/console.md).
//!
//! - mosquitto 2.1's read-only HTTP API, `/api/v1/{systree,listeners,version}` ([`mosquitto_api`]);
//! - `/healthz`, `/readyz` ([`health`]) and `/metrics` in the Prometheus text format ([`prometheus`]);
//! - this broker's REST API under `/api/dynsec/v1/` ([`rest`]): every dynsec command family, run
//!   through [`crate::security::Security::control`] exactly as an MQTT `$CONTROL` request is
//!   (same engine, durability, kicks, audit trail), plus connected clients, the audit trail,
//!   explain, application tokens and the OpenAPI description;
//! - the web UI ([`ui`]), its assets compiled into the binary.
//!
//! Who may do what is decided by [`auth`] from the dynsec store itself. This file owns the shared
//! state and the router; the HTTP plumbing (body limit, secure headers, bad input as 4xx) is here
//! too, so that no handler can forget it.

// A handler's early exit is the HTTP answer itself (`Result<_, Response>`), made once per request.
#![allow(clippy::result_large_err)]

mod auth;
mod connected;
mod explain;
mod health;
mod incoming;
mod mosquitto_api;
mod openapi;
mod prometheus;
mod request;
mod rest;
mod route_table;
mod sessions;
mod tokens;
mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::routing::router_link::Rumqttd;
use crate::shared::{Listener, Shared};

/// The largest request body the console reads; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every console handler shares.
pub(crate) struct Console {
    shared: Arc<Shared<Rumqttd>>,
    /// The `protocol http_api` listener this console serves (its security options decide the
    /// 2.1 API's access; its id is the sender listener of console commands).
    listener: Arc<Listener>,
    started: Instant,
    /// Set once every listener of the broker is bound.
    listeners_bound: Arc<AtomicBool>,
    tokens: tokens::Tokens,
    sessions: sessions::Sessions,
}

impl Console {
    fn engine(&self) -> Option<Arc<dynsec::Dynsec>> {
        self.shared.security.dynsec_engine()
    }

    fn tls(&self) -> bool {
        self.listener.tls.is_some()
    }
}

/// Serves one `protocol http_api` listener until the task is aborted.
pub(crate) async fn serve(
    shared: Arc<Shared<Rumqttd>>,
    listener: Arc<Listener>,
    socket: TcpListener,
    listeners_bound: Arc<AtomicBool>,
) {
    let handshake_timeout = shared.config.gate.connect_timeout;
    let incoming = match incoming::Incoming::start(
        socket,
        listener.tls.clone(),
        handshake_timeout,
        listener.settings.max_connections,
    ) {
        Ok(incoming) => incoming,
        Err(error) => {
            tracing::error!(%error, "console: cannot serve the http_api listener");
            return;
        }
    };
    let tokens = tokens::Tokens::open(shared.security.dynsec_engine().map(|engine| engine.path()));
    let console = Arc::new(Console {
        shared,
        listener,
        started: Instant::now(),
        listeners_bound,
        tokens,
        sessions: sessions::Sessions::default(),
    });
    let app = router(console).into_make_service_with_connect_info::<incoming::Peer>();
    if let Err(error) = axum::serve(incoming, app).await {
        tracing::error!(%error, "console: server stopped");
    }
}

/// Every route, with the body limit and the headers every answer carries.
fn router(console: Arc<Console>) -> Router {
    Router::new()
        .merge(mosquitto_api::routes())
        .merge(health::routes())
        .merge(prometheus::routes())
        .merge(rest::routes())
        .merge(ui::routes())
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "Not found.\n") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(secure_headers))
        .with_state(console)
}

/// Headers on every answer: no sniffing, no framing, no referrer, a strict content policy (the
/// UI loads nothing from elsewhere), and no caching of anything an admin sees.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A plain-text answer.
fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// A JSON answer from bytes already encoded.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], Body::from(body)).into_response()
}

/// `{"error": message}` with `status`.
fn json_error(status: StatusCode, message: &str) -> Response {
    let body = dynsec::json::Json::object().with("error", dynsec::json::Json::str(message)).to_compact();
    json_bytes(status, body)
}

/// Seconds since the console started (its own uptime, for `/healthz`).
fn uptime(console: &Console) -> Duration {
    console.started.elapsed()
}

fn is_set(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Acquire)
}
