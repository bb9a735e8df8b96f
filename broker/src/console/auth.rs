//! Who is calling the console, and what they may do (docs/console.md, "Access").
//!
//! Every credential ends at a dynsec client; there is no anonymous access to `/api/dynsec/`:
//! - HTTP Basic: the username and password go through the listener's authentication chain
//!   ([`crate::security::Security::authenticate`], client id `console`), so a failed login is
//!   throttled exactly as a failed MQTT CONNECT from that address is, and counts against the same
//!   buckets; the username must then be a dynsec client;
//! - `Authorization: Bearer <token>`: an application token ([`super::tokens`]);
//! - the UI's session cookie ([`super::sessions`]), whose unsafe requests must carry the session's
//!   CSRF token in `X-CSRF-Token`.
//!
//! Rights are read from the client's dynsec roles on every request, so a change applies at once:
//! **admin** when `publishClientSend` allows `$CONTROL/dynamic-security/v1` (what sending a
//! command over MQTT needs); **read-only** when not, but `subscribe` allows
//! `$CONTROL/dynamic-security/v1/response` (what reading the answers needs): list*/get* commands,
//! connected clients, audit, explain, metrics in the UI. Otherwise 403. A token's scope can only
//! narrow its owner's rights.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dynsec::acl::{AccessKind, Decision};

use super::Console;
use crate::security::{ClientAuthz, ConnectDecision, ConnectRequest, Protocol};

pub(super) const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub(super) const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The client id console logins and ACL checks use.
pub(super) const CONSOLE_CLIENT_ID: &str = "console";
/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "dynsec_console";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    ReadOnly,
    Admin,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::ReadOnly => "read",
            Level::Admin => "admin",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Basic,
    Token,
    Session,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(super) struct Principal {
    pub username: String,
    pub level: Level,
    pub via: Via,
}

impl Principal {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), Response> {
        match self.level {
            Level::Admin => Ok(()),
            Level::ReadOnly => Err(super::json_error(
                StatusCode::FORBIDDEN,
                "read-only access: this needs publishClientSend on $CONTROL/dynamic-security/v1",
            )),
        }
    }
}

/// `Authorization: Basic` credentials, if the header holds some.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let username = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((username, decoded[colon + 1..].to_vec()))
}

pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A cookie's value from the request.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The listener's authentication chain for optional Basic credentials (mosquitto 2.1's rule for
/// its HTTP API: no credentials is an anonymous login). `None`: refused.
pub(super) async fn listener_login(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    client_id: &str,
) -> Option<Arc<dyn ClientAuthz>> {
    let (username, password) = match basic_credentials(headers) {
        Some((username, password)) => (Some(username), Some(password)),
        None => (None, None),
    };
    match login(console, peer, client_id, username, password).await {
        ConnectDecision::Accept { authz, .. } => Some(authz),
        _ => None,
    }
}

async fn login(
    console: &Console,
    peer: SocketAddr,
    client_id: &str,
    username: Option<String>,
    password: Option<Vec<u8>>,
) -> ConnectDecision {
    let request = ConnectRequest {
        listener: console.listener.id,
        peer,
        client_id: client_id.into(),
        username: username.filter(|u| !u.is_empty()).map(Into::into),
        password: password.filter(|p| !p.is_empty()),
        tls: None,
        protocol: Protocol::V5,
    };
    console.shared.security.authenticate(request).await
}

/// Checks a username and password for the console: the listener's chain (throttled), then the
/// username must be a dynsec client with console rights.
pub(super) async fn password_login(
    console: &Console,
    peer: SocketAddr,
    username: &str,
    password: Vec<u8>,
) -> Result<Level, Response> {
    if username.is_empty() || password.is_empty() {
        return Err(unauthorised(true));
    }
    match login(console, peer, CONSOLE_CLIENT_ID, Some(username.to_owned()), Some(password)).await {
        ConnectDecision::Accept { .. } => {}
        ConnectDecision::ServerUnavailable => {
            return Err(super::json_error(StatusCode::SERVICE_UNAVAILABLE, "no password verifier free; try again"));
        }
        _ => return Err(unauthorised(true)),
    }
    rights(console, username).ok_or_else(forbidden)
}

/// The caller's rights from their dynsec roles (see the module documentation); `None`: none.
pub(super) fn rights(console: &Console, username: &str) -> Option<Level> {
    let engine = console.engine()?;
    if !engine.has_client(username) {
        return None;
    }
    let handle = engine.acl_handle(Some(username));
    let allows = |kind, topic| handle.check(kind, topic, Some(CONSOLE_CLIENT_ID)) == Decision::Allow;
    if allows(AccessKind::Publish, REQUEST_TOPIC) {
        Some(Level::Admin)
    } else if allows(AccessKind::Subscribe, RESPONSE_TOPIC) {
        Some(Level::ReadOnly)
    } else {
        None
    }
}

/// Authenticates a request to `/api/dynsec/` (see the module documentation).
pub(super) async fn authenticate(
    console: &Console,
    peer: IpAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, Response> {
    let peer = SocketAddr::new(peer, 0);
    if let Some(token) = bearer_token(headers) {
        let Some((owner, scope)) = console.tokens.verify(token) else {
            return Err(unauthorised(false));
        };
        let level = rights(console, &owner).ok_or_else(forbidden)?.min(scope);
        return Ok(Principal { username: owner, level, via: Via::Token });
    }
    if let Some((username, password)) = basic_credentials(headers) {
        let level = password_login(console, peer, &username, password).await?;
        return Ok(Principal { username, level, via: Via::Basic });
    }
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        let Some(session) = console.sessions.get(id) else {
            return Err(unauthorised(false));
        };
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !super::sessions::same_secret(sent, &session.csrf) {
                return Err(super::json_error(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token header"));
            }
        }
        let level = rights(console, &session.username).ok_or_else(forbidden)?;
        return Ok(Principal { username: session.username, level, via: Via::Session });
    }
    // The UI's own requests say so: a Basic challenge would make the browser prompt.
    let from_ui = headers.get("x-requested-with").is_some_and(|v| v.as_bytes() == b"dynsec-console");
    Err(unauthorised(!from_ui))
}

/// 401; `challenge`: with a `WWW-Authenticate` header (not for a failed session or token, where a
/// browser's password prompt would only get in the way).
pub(super) fn unauthorised(challenge: bool) -> Response {
    let mut response = super::json_error(StatusCode::UNAUTHORIZED, "not authenticated: wrong or missing credentials");
    if challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Basic realm=\"dynsec\""));
    }
    response.into_response()
}

fn forbidden() -> Response {
    super::json_error(
        StatusCode::FORBIDDEN,
        "this dynsec client has no console rights (publishClientSend or subscribe on $CONTROL/dynamic-security/...)",
    )
}
