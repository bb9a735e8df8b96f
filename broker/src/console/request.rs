//! What every console handler needs of a request: who makes it ([`principal`]), its query
//! parameters, and the audit trail entry of a console-only action.

use std::net::SocketAddr;

use axum::extract::Query;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use dynsec::json::Json;

use super::Console;
use super::auth::{self, Principal, Via};
use crate::security::audit::ControlOrigin;

/// Authenticates, with a 401/403 answer on failure.
pub(super) async fn principal(
    console: &Console,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, Response> {
    auth::authenticate(console, peer.ip(), method, headers).await
}

/// One query parameter, decoded.
pub(super) fn query_value(uri: &axum::http::Uri, name: &str) -> Option<String> {
    let Query(pairs): Query<Vec<(String, String)>> = Query::try_from_uri(uri).ok()?;
    pairs.into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

/// Where a console request comes from, for the audit trail.
pub(super) fn origin(principal: &Principal) -> ControlOrigin {
    if principal.via == Via::Session { ControlOrigin::Ui } else { ControlOrigin::Rest }
}

/// Writes a console-only action (a kick, a token) to the audit trail as a command of its own.
pub(super) fn audit_console_action(
    console: &Console,
    principal: &Principal,
    command: &str,
    fields: &[(&str, &str)],
    error: Option<&str>,
) {
    let Some(log) = console.shared.security.audit_log() else { return };
    let mut item = Json::object().with("command", Json::str(command));
    for (key, value) in fields {
        item.push(key, Json::str(value));
    }
    let request = Json::object().with("commands", Json::Array(vec![item])).to_compact();
    let mut answer = Json::object().with("command", Json::str(command));
    if let Some(error) = error {
        answer.push("error", Json::str(error));
    }
    let response = Json::object().with("responses", Json::Array(vec![answer])).to_compact();
    log.record(origin(principal), auth::CONSOLE_CLIENT_ID, Some(&principal.username), &request, &response);
}
