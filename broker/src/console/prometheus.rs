//! `/metrics` in the Prometheus (OpenMetrics) text format, built with `prometheus-client` from
//! the counters the broker already keeps ([`crate::metrics`]) at each scrape, so that scraping
//! costs nothing between scrapes and the hot path keeps its plain atomics. Names follow
//! mosquitto-exporter's `broker_*` and EMQX's authentication/authorization vocabulary; the
//! list is in docs/console.md. Access: as mosquitto 2.1's API (the listener's authentication,
//! then a `publishClientReceive` check on `/metrics`), so Prometheus' `basic_auth` works; or a
//! console session or token (the UI's live chart).

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Console;
use super::incoming::Peer;
use crate::metrics::{ACL_TYPES, KICK_REASONS, METRICS, Metrics, SECURITY};
use crate::security::Access;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    // The UI's session or a token (the live chart), else mosquitto 2.1's rule.
    let console_caller = super::auth::cookie(&headers, super::auth::SESSION_COOKIE).is_some()
        || super::auth::bearer_token(&headers).is_some();
    let allowed = if console_caller {
        super::auth::authenticate(&console, peer.0.ip(), &axum::http::Method::GET, &headers).await.is_ok()
    } else {
        match super::auth::listener_login(&console, peer.0, &headers, "http-api").await {
            Some(authz) => authz.allows(Access::Receive, "/metrics"),
            None => false,
        }
    };
    if !allowed && console_caller {
        // The UI's chart: no Basic challenge, which would make the browser prompt.
        return super::plain(StatusCode::UNAUTHORIZED, "Not authorised\n");
    }
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Mosquitto API\"")],
            "Not authorised\n",
        )
            .into_response();
    }
    let mut text = String::new();
    if encode(&mut text, &registry(&console)).is_err() {
        return super::plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded\n");
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AclLabels {
    acl_type: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstGauge::new(value as i64));
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

/// A registry holding every value as of now.
fn registry(console: &Console) -> Registry {
    let mut r = Registry::default();
    let clients = console.shared.sessions.client_counts();
    let (subscriptions, shared_subscriptions) = METRICS.subscriptions();
    let (retained, retained_bytes) = METRICS.retained();
    let m = &METRICS;
    gauge(&mut r, "broker_clients_connected", "Clients with a live connection", clients.connected);
    gauge(&mut r, "broker_sessions", "Sessions: live clients and saved persistent sessions", clients.total);
    gauge(&mut r, "broker_subscriptions", "Subscriptions held by sessions", subscriptions);
    gauge(&mut r, "broker_shared_subscriptions", "Shared subscriptions held by sessions", shared_subscriptions);
    gauge(&mut r, "broker_retained_messages", "Retained messages held by the router", retained);
    gauge(&mut r, "broker_retained_bytes", "Payload bytes of the retained messages", retained_bytes);
    counter(
        &mut r,
        "broker_messages_received",
        "PUBLISH packets received from clients",
        Metrics::get(&m.publish_received),
    );
    counter(&mut r, "broker_messages_sent", "PUBLISH packets sent to clients", Metrics::get(&m.publish_sent));
    counter(
        &mut r,
        "broker_messages_dropped",
        "Deliveries dropped although authorised (larger than the receiver's maximum packet size)",
        Metrics::get(&m.publish_dropped),
    );
    counter(
        &mut r,
        "broker_publish_bytes_received",
        "Payload bytes of PUBLISH packets received",
        Metrics::get(&m.publish_bytes_received),
    );
    counter(
        &mut r,
        "broker_publish_bytes_sent",
        "Payload bytes of PUBLISH packets sent",
        Metrics::get(&m.publish_bytes_sent),
    );
    counter(&mut r, "broker_bytes_received", "Bytes read from MQTT clients", Metrics::get(&m.bytes_received));
    counter(&mut r, "broker_bytes_sent", "Bytes written to MQTT clients", Metrics::get(&m.bytes_sent));
    counter(&mut r, "broker_packets_received", "MQTT control packets received", Metrics::get(&m.packets_received));
    counter(&mut r, "broker_packets_sent", "MQTT control packets sent", Metrics::get(&m.packets_sent));
    counter(&mut r, "broker_sockets_accepted", "Sockets accepted on MQTT listeners", Metrics::get(&m.sockets_accepted));
    counter(
        &mut r,
        "broker_client_auth_success",
        "Logins with a username that were accepted",
        Metrics::get(&SECURITY.auth_success),
    );
    counter(
        &mut r,
        "broker_client_auth_failure",
        "Logins with a username that were refused (throttled ones included)",
        Metrics::get(&SECURITY.auth_failure),
    );
    let acl = Family::<AclLabels, Counter>::default();
    for (acl_type, (deny, allow)) in ACL_TYPES.iter().zip(SECURITY.acl_decisions()) {
        acl.get_or_create(&AclLabels { acl_type, result: "allow" }).inc_by(allow);
        acl.get_or_create(&AclLabels { acl_type, result: "deny" }).inc_by(deny);
    }
    r.register("broker_authorization", "ACL decisions by dynsec ACL type and result", acl);
    let kicks = Family::<ReasonLabels, Counter>::default();
    for (reason, count) in KICK_REASONS.iter().zip(SECURITY.kicks()) {
        kicks.get_or_create(&ReasonLabels { reason }).inc_by(count);
    }
    r.register("broker_kicks", "Clients disconnected by an administrative change, by reason", kicks);
    r.register(
        "dynsec_control_commands",
        "Dynamic-security commands (MQTT and console) by name and result",
        SECURITY.control_commands.clone(),
    );
    r.register(
        "dynsec_password_verification_seconds",
        "Time one password verification took on a verifier thread",
        SECURITY.password_verification.clone(),
    );
    if let Some(engine) = console.engine() {
        let journal = dynsec::store::Store::journal_path_for(&engine.path());
        let journal_bytes = std::fs::metadata(journal).map_or(0, |m| m.len());
        gauge(
            &mut r,
            "dynsec_journal_bytes",
            "Size of the dynsec store's journal (changes since the last snapshot)",
            journal_bytes,
        );
        let change_index = engine.with_model(|model| model.change_index);
        r.register("dynsec_change_index", "The dynsec configuration's changeIndex", ConstGauge::new(change_index));
    }
    r
}
