//! `GET /api/dynsec/v1/connected`: the clients the broker knows (connected, or offline with a saved
//! session), filtered by `username`, `clientid` or `address` (substring matches), at most
//! [`MAX_LISTED`], with when their connection started and, asked of each live connection, its
//! protocol, subscriptions and in-flight and queued deliveries; `POST /api/dynsec/v1/connected/{clientid}/kick` disconnects one (v5:
//! DISCONNECT 0x98, no will, session kept — as a dynsec kick), admin only, written to the audit
//! trail as `kickClient`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dynsec::json::Json;

use super::incoming::Peer;
use super::request::{audit_console_action, principal, query_value};
use super::{Console, json_bytes, json_error};

/// The most clients one answer lists.
const MAX_LISTED: usize = 1000;
/// How long a connection has to describe itself.
const DETAILS_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(response) = principal(&console, peer.0, &method, &headers).await {
        return response;
    }
    let username = query_value(&uri, "username").unwrap_or_default();
    let client_id = query_value(&uri, "clientid").unwrap_or_default();
    let address = query_value(&uri, "address").unwrap_or_default();
    let matching: Vec<_> = console
        .shared
        .sessions
        .client_overview()
        .into_iter()
        .filter(|c| c.client_id.contains(client_id.as_str()))
        .filter(|c| username.is_empty() || c.username.as_deref().is_some_and(|u| u.contains(username.as_str())))
        .filter(|c| c.address.to_string().contains(address.as_str()))
        .take(MAX_LISTED)
        .collect();
    // Each live connection answers between two of its own events; one that does not within
    // DETAILS_WAIT (busy, or leaving) is listed without its details.
    let details = futures_util::future::join_all(matching.iter().map(|c| {
        let pending = console.shared.sessions.describe(&c.client_id);
        async move { tokio::time::timeout(DETAILS_WAIT, pending?).await.ok()?.ok() }
    }))
    .await;
    let clients: Vec<Json> = matching
        .into_iter()
        .zip(details)
        .map(|(c, details)| {
            let mut item = Json::object()
                .with("clientid", Json::str(&c.client_id))
                .with("username", c.username.as_deref().map_or(Json::Null, Json::str))
                .with("address", Json::str(&c.address.to_string()))
                .with("connected", Json::Bool(c.since.is_some()));
            if let Some(since) = c.since {
                let millis = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                item.push("since", Json::int(millis));
            }
            if let Some(details) = details {
                let subscriptions = details.subscriptions.iter().map(|f| Json::str(f)).collect();
                item.push("protocol", Json::str(details.protocol));
                item.push("subscriptions", Json::Array(subscriptions));
                item.push("inflight", Json::int(details.in_flight as i64));
                item.push("queued", Json::int(details.queued as i64));
            }
            item
        })
        .collect();
    json_bytes(StatusCode::OK, Json::object().with("clients", Json::Array(clients)).to_compact())
}

pub(super) async fn kick(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    Path(client_id): Path<String>,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if let Err(response) = principal.require_admin() {
        return response;
    }
    let kicked = console.shared.sessions.kick_client(&client_id);
    let error = (!kicked).then_some("Client not connected");
    audit_console_action(&console, &principal, "kickClient", &[("clientid", &client_id)], error);
    match error {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(error) => json_error(StatusCode::NOT_FOUND, error),
    }
}
