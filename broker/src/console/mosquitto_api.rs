//! mosquitto 2.1's HTTP API on an `http_api` listener: GET `/api/v1/systree`, `/api/v1/listeners`
//! and `/api/v1/version`, with 2.1.2's bodies (`src/http_api.c`: cJSON_Print's tab-indented JSON
//! for the first two, the bare version string for the third; `Access-Control-Allow-Origin: *`),
//! its access rule (HTTP Basic credentials, or none, go through the listener's authentication
//! with client id `http-api`, then the URL path must pass a `publishClientReceive` ACL check;
//! otherwise 401 with `WWW-Authenticate: Basic realm="Mosquitto API"` and `Not authorised`), and
//! its 405 `Invalid HTTP Method` for anything but GET.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use dynsec::json::Json;

use super::Console;
use super::auth;
use super::incoming::Peer;
use crate::config::ListenerProtocol;
use crate::metrics::{METRICS, Metrics};
use crate::security::Access;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/api/v1/systree", any(answer))
        .route("/api/v1/listeners", any(answer))
        .route("/api/v1/version", any(answer))
}

async fn answer(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "Invalid HTTP Method\n").into_response();
    }
    let path = uri.path();
    let allowed = match auth::listener_login(&console, peer.0, &headers, "http-api").await {
        Some(authz) => authz.allows(Access::Receive, path),
        None => false,
    };
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Mosquitto API\"")],
            "Not authorised\n",
        )
            .into_response();
    }
    let body = match path {
        "/api/v1/systree" => systree(&console).to_pretty(),
        "/api/v1/listeners" => listeners(&console).to_pretty(),
        _ => env!("CARGO_PKG_VERSION").as_bytes().to_vec(),
    };
    (StatusCode::OK, [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body).into_response()
}

/// 2.1.2's `$SYS` values in its order (its `metrics[]` table, then the uptime), read now rather
/// than at the last `$SYS` refresh. Counters this broker does not keep (queued outgoing packets)
/// are 0.
fn systree(console: &Console) -> Json {
    static CLIENTS_MAXIMUM: AtomicU64 = AtomicU64::new(0);
    let clients = console.shared.sessions.client_counts();
    let maximum = CLIENTS_MAXIMUM.fetch_max(clients.total, Ordering::Relaxed).max(clients.total);
    let (router_retained, router_bytes) = METRICS.retained();
    let (sys_retained, sys_bytes) = console.shared.sys.retained_count();
    let retained = router_retained + sys_retained;
    let (subscriptions, shared_subscriptions) = METRICS.subscriptions();
    let m = &METRICS;
    let values: [(&str, u64); 22] = [
        ("$SYS/broker/clients/total", clients.total),
        ("$SYS/broker/clients/maximum", maximum),
        ("$SYS/broker/clients/disconnected", clients.total.saturating_sub(clients.connected)),
        ("$SYS/broker/clients/connected", clients.connected),
        ("$SYS/broker/clients/expired", Metrics::get(&m.clients_expired)),
        ("$SYS/broker/messages/stored", retained),
        ("$SYS/broker/store/messages/bytes", router_bytes + sys_bytes),
        ("$SYS/broker/subscriptions/count", subscriptions),
        ("$SYS/broker/shared_subscriptions/count", shared_subscriptions),
        ("$SYS/broker/retained messages/count", retained),
        ("$SYS/broker/messages/received", Metrics::get(&m.packets_received)),
        ("$SYS/broker/messages/sent", Metrics::get(&m.packets_sent)),
        ("$SYS/broker/bytes/received", Metrics::get(&m.bytes_received)),
        ("$SYS/broker/bytes/sent", Metrics::get(&m.bytes_sent)),
        ("$SYS/broker/publish/bytes/received", Metrics::get(&m.publish_bytes_received)),
        ("$SYS/broker/publish/bytes/sent", Metrics::get(&m.publish_bytes_sent)),
        ("$SYS/broker/packet/out/count", 0),
        ("$SYS/broker/packet/out/bytes", 0),
        ("$SYS/broker/connections/socket/count", Metrics::get(&m.sockets_accepted)),
        ("$SYS/broker/publish/messages/dropped", Metrics::get(&m.publish_dropped)),
        ("$SYS/broker/publish/messages/received", Metrics::get(&m.publish_received)),
        ("$SYS/broker/publish/messages/sent", Metrics::get(&m.publish_sent)),
    ];
    let mut tree = Json::object();
    for (topic, value) in values {
        tree.push(topic, Json::int(value as i64));
    }
    tree.with("$SYS/broker/uptime", Json::int(super::uptime(console).as_secs() as i64))
}

/// `{"listeners":[{port, protocol, tls, mtls, allow_anonymous}]}` with 2.1.2's protocol names.
fn listeners(console: &Console) -> Json {
    let config = &console.shared.config;
    let bound = console.shared.broker_api.bound_ports();
    let items = config
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let port = bound.and_then(|ports| ports.get(index)).copied().unwrap_or(listener.port);
            let protocol = match listener.protocol {
                ListenerProtocol::Mqtt => "mqtt",
                ListenerProtocol::Websockets => "websockets",
                ListenerProtocol::HttpApi => "httpapi",
            };
            let security = config.security_for(crate::config::ListenerId(index));
            Json::object()
                .with("port", Json::int(port.into()))
                .with("protocol", Json::str(protocol))
                .with("tls", Json::Bool(listener.tls.certfile.is_some() && listener.tls.keyfile.is_some()))
                .with("mtls", Json::Bool(listener.tls.require_certificate))
                .with("allow_anonymous", Json::Bool(security.allow_anonymous))
        })
        .collect();
    Json::object().with("listeners", Json::Array(items))
}
