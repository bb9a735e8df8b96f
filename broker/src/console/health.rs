//! `/healthz` (liveness: the console answers, so the runtime runs) and `/readyz` (readiness: every
//! listener bound, the dynsec store loaded when one is configured, the router thread alive), for
//! load balancers and orchestrators. Neither needs credentials nor tells anything sensitive.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use dynsec::json::Json;

use super::Console;

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz(State(console): State<Arc<Console>>) -> Response {
    let body = Json::object()
        .with("status", Json::str("ok"))
        .with("uptime", Json::int(super::uptime(&console).as_secs() as i64));
    super::json_bytes(StatusCode::OK, body.to_compact())
}

async fn readyz(State(console): State<Arc<Console>>) -> Response {
    let listeners = super::is_set(&console.listeners_bound);
    let configured = dynsec_configured(&console.shared.config);
    let store = !configured || console.engine().is_some();
    let router = console.shared.engine.is_running();
    let ready = listeners && store && router;
    let body = Json::object()
        .with("ready", Json::Bool(ready))
        .with("listeners", Json::Bool(listeners))
        .with("store", Json::Bool(store))
        .with("router", Json::Bool(router));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    super::json_bytes(status, body.to_compact())
}

/// Whether the configuration loads the dynamic-security plugin anywhere.
fn dynsec_configured(config: &crate::config::Config) -> bool {
    std::iter::once(&config.security)
        .chain(config.listeners.iter().filter_map(|l| l.security.as_ref()))
        .any(|security| security.dynsec().is_some_and(|plugin| plugin.option("config_file").is_some()))
}
