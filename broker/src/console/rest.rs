//! The REST API under `/api/dynsec/v1/` (docs/console.md has the table; `openapi.json` describes
//! it). Each dynsec route is a [`Spec`]: the command it runs and where its fields come from (path
//! segments, the JSON body, the query string). The command goes through
//! [`crate::security::Security::control`], the function an MQTT `$CONTROL` PUBLISH reaches: the
//! same engine, the same answer once durable, the same audit trail; its kicks go to the same
//! session registry. The answer is the command's `data` (200) or its MQTT error text with a status
//! (404 not found, 409 exists, 500 not saved, 400 otherwise). `POST /commands` takes a whole
//! `$CONTROL` payload and returns the MQTT response unchanged.
//!
//! The console's own resources sit beside them: login/logout/me, connected clients and kicks
//! ([`super::connected`]), the audit trail, explain ([`super::explain`]), tokens, OpenAPI.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use dynsec::json::{self, Json};

use super::auth::{self, Level, Principal, Via};
use super::incoming::Peer;
use super::request::{audit_console_action, origin, principal, query_value};
use super::route_table::{PREFIX, Spec, dynsec_routes};
use super::{Console, json_bytes, json_error};
use crate::security::ControlSender;

pub(super) fn routes() -> Router<Arc<Console>> {
    let mut router = Router::new();
    for (method, path, spec) in dynsec_routes() {
        let spec: &'static Spec = Box::leak(Box::new(spec));
        let handler = move |state, peer, request| run_spec(state, peer, spec, request);
        let route: MethodRouter<Arc<Console>> = match method {
            Method::GET => get(handler),
            Method::POST => post(handler),
            Method::PUT => put(handler),
            Method::DELETE => delete(handler),
            _ => axum::routing::patch(handler),
        };
        router = router.route(&format!("{PREFIX}{path}"), route);
    }
    router
        .route(&format!("{PREFIX}/commands"), post(batch))
        .route(&format!("{PREFIX}/login"), post(login))
        .route(&format!("{PREFIX}/logout"), post(logout))
        .route(&format!("{PREFIX}/me"), get(me))
        .route(&format!("{PREFIX}/audit"), get(audit))
        .route(&format!("{PREFIX}/tokens"), get(list_tokens).post(create_token))
        .route(&format!("{PREFIX}/tokens/{{id}}"), delete(revoke_token))
        .route(&format!("{PREFIX}/connected"), get(super::connected::list))
        .route(&format!("{PREFIX}/connected/{{clientid}}/kick"), post(super::connected::kick))
        .route(&format!("{PREFIX}/explain"), get(super::explain::explain))
        .route(&format!("{PREFIX}/openapi.json"), get(super::openapi::serve))
}

/// The JSON object of a request body (an empty body is an empty object).
pub(super) fn body_object(body: &[u8]) -> Result<Json, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::object());
    }
    match json::parse(body) {
        Ok(value @ Json::Object(_)) => Ok(value),
        Ok(_) => Err(json_error(StatusCode::BAD_REQUEST, "the request body must be a JSON object")),
        Err(e) => Err(json_error(StatusCode::BAD_REQUEST, &format!("the request body is not valid JSON: {e}"))),
    }
}

fn is_read_command(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("list") || lower.starts_with("get")
}

/// Runs a `$CONTROL` payload as `principal`, through the same function as MQTT; applies its kicks.
/// Returns the MQTT response payload.
pub(super) async fn control(console: &Console, principal: &Principal, payload: Vec<u8>) -> Result<Vec<u8>, Response> {
    let sender = ControlSender {
        client_id: auth::CONSOLE_CLIENT_ID.into(),
        username: Some(principal.username.as_str().into()),
        listener: console.listener.id,
        origin: origin(principal),
    };
    let Some(pending) = console.shared.security.control(sender, auth::REQUEST_TOPIC, payload) else {
        return Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "dynamic security is not configured for this listener",
        ));
    };
    let outcome = pending.await;
    for target in &outcome.kicks {
        let kicked = console.shared.sessions.kick(target);
        tracing::info!(?target, kicked, "console: kick");
    }
    match outcome.replies.into_iter().next() {
        Some(reply) => Ok(reply.payload),
        None => Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, "the command produced no answer (see the log)")),
    }
}

/// The status of a dynsec error text (the text itself is returned as MQTT gives it).
fn error_status(error: &str) -> StatusCode {
    let lower = error.to_ascii_lowercase();
    if lower.contains("not found") {
        StatusCode::NOT_FOUND
    } else if lower.contains("already exists") {
        StatusCode::CONFLICT
    } else if lower.starts_with("internal error") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn run_spec(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    spec: &'static Spec,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let principal = match principal(&console, peer.0, &parts.method, &parts.headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if !is_read_command(spec.command)
        && let Err(response) = principal.require_admin()
    {
        return response;
    }
    let mut command = if spec.body {
        let Ok(bytes) = axum::body::to_bytes(body, super::MAX_BODY_BYTES).await else {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than 1 MiB");
        };
        match body_object(&bytes) {
            Ok(object) => object,
            Err(response) => return response,
        }
    } else {
        Json::object()
    };
    if let Json::Object(members) = &mut command {
        members.retain(|(key, _)| !key.eq_ignore_ascii_case(b"command"));
        members.insert(0, (b"command".to_vec(), Json::str(spec.command)));
    }
    if !spec.path.is_empty() {
        let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await else {
            return json_error(StatusCode::BAD_REQUEST, "invalid path");
        };
        for (key, value) in params.iter() {
            if let Some(field) = spec.path.iter().find(|name| **name == key) {
                set(&mut command, field, Json::str(value));
            }
        }
    }
    if !spec.query.is_empty() {
        let query: Query<Vec<(String, String)>> = match Query::try_from_uri(&parts.uri) {
            Ok(query) => query,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid query string: {e}")),
        };
        for (key, value) in query.0 {
            let Some((name, typed)) = spec.query.iter().find(|(name, _)| *name == key) else { continue };
            let value = match (*typed, value.as_str()) {
                (false, text) => Json::str(text),
                (true, "true") => Json::Bool(true),
                (true, "false") => Json::Bool(false),
                (true, number) => match number.parse::<i64>() {
                    Ok(n) => Json::int(n),
                    Err(_) => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            &format!("query parameter {name}: expected a number or a boolean"),
                        );
                    }
                },
            };
            set(&mut command, name, value);
        }
    }
    let payload = Json::object().with("commands", Json::Array(vec![command])).to_compact();
    let response = match control(&console, &principal, payload).await {
        Ok(response) => response,
        Err(response) => return response,
    };
    single_answer(&response)
}

/// Replaces or adds an object member.
fn set(object: &mut Json, key: &str, value: Json) {
    if let Json::Object(members) = object {
        members.retain(|(k, _)| !k.eq_ignore_ascii_case(key.as_bytes()));
        members.push((key.as_bytes().to_vec(), value));
    }
}

/// The REST answer of a one-command MQTT response.
fn single_answer(response: &[u8]) -> Response {
    let parsed = json::parse(response).ok();
    let first = parsed.as_ref().and_then(|r| r.get("responses")).and_then(Json::as_array).and_then(|r| r.first());
    let Some(first) = first else {
        return json_bytes(StatusCode::INTERNAL_SERVER_ERROR, response.to_vec());
    };
    if let Some(error) = first.get("error") {
        let text = error.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        return json_bytes(error_status(&text), first.to_compact());
    }
    let data = first.get("data").cloned().unwrap_or_else(Json::object);
    json_bytes(StatusCode::OK, data.to_compact())
}

/// `POST /commands`: a whole `$CONTROL/dynamic-security/v1` payload; the MQTT response as is.
async fn batch(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if principal.level != Level::Admin {
        // A read-only caller may send a batch of reads only; the envelope is the engine's to check.
        let doc = match json::parse(&body) {
            Ok(doc) => doc,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("the request body is not valid JSON: {e}")),
        };
        let commands = doc.get("commands").and_then(Json::as_array).unwrap_or(&[]);
        let all_reads = commands.iter().all(|c| {
            c.get("command")
                .and_then(Json::as_bytes)
                .is_some_and(|name| is_read_command(&String::from_utf8_lossy(name)))
        });
        if !all_reads && let Err(response) = principal.require_admin() {
            return response;
        }
    }
    match control(&console, &principal, body.to_vec()).await {
        Ok(response) => json_bytes(StatusCode::OK, response),
        Err(response) => response,
    }
}

fn text_field(object: &Json, key: &str) -> Option<String> {
    object.get(key).and_then(Json::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// `POST /login` `{"username","password"}`: a UI session (cookie) and its CSRF token.
async fn login(State(console): State<Arc<Console>>, ConnectInfo(peer): ConnectInfo<Peer>, body: Bytes) -> Response {
    let object = match body_object(&body) {
        Ok(object) => object,
        Err(response) => return response,
    };
    let (Some(username), Some(password)) = (text_field(&object, "username"), text_field(&object, "password")) else {
        return json_error(StatusCode::BAD_REQUEST, "username and password are required");
    };
    let level = match auth::password_login(&console, peer.0, &username, password.into_bytes()).await {
        Ok(level) => level,
        Err(mut response) => {
            // No browser prompt for the form's own failures.
            response.headers_mut().remove(header::WWW_AUTHENTICATE);
            return response;
        }
    };
    let Some((id, csrf)) = console.sessions.create(&username) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "no random bytes for a session");
    };
    let secure = if console.tls() { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        auth::SESSION_COOKIE,
        super::sessions::SESSION_LIFETIME.as_secs()
    );
    let body = Json::object()
        .with("username", Json::str(&username))
        .with("level", Json::str(level.name()))
        .with("csrf", Json::str(&csrf))
        .to_compact();
    let mut response = json_bytes(StatusCode::OK, body);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // Checked like any unsafe request (CSRF included), so a foreign page cannot log the admin out.
    if let Err(response) = principal(&console, peer.0, &method, &headers).await {
        return response;
    }
    if let Some(id) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        console.sessions.remove(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::SESSION_COOKIE);
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /me`: who the caller is, their rights, and (for a UI session) the CSRF token again.
async fn me(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let mut body = Json::object()
        .with("username", Json::str(&principal.username))
        .with("level", Json::str(principal.level.name()));
    if let Some(session) = auth::cookie(&headers, auth::SESSION_COOKIE).and_then(|id| console.sessions.get(id)) {
        body.push("csrf", Json::str(&session.csrf));
    }
    json_bytes(StatusCode::OK, body.to_compact())
}

/// `GET /audit?limit=N` (default 100, at most 1000): newest first.
async fn audit(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Err(response) = principal(&console, peer.0, &method, &headers).await {
        return response;
    }
    let limit = query_value(&uri, "limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(100).min(1000);
    let Some(log) = console.shared.security.audit_log() else {
        return json_error(StatusCode::NOT_FOUND, "no audit trail: dynamic security is not configured");
    };
    let entries = tokio::task::spawn_blocking(move || log.recent(limit)).await.unwrap_or_default();
    json_bytes(StatusCode::OK, Json::object().with("entries", Json::Array(entries)).to_compact())
}

async fn list_tokens(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let owner = (principal.level != Level::Admin).then_some(principal.username.as_str());
    json_bytes(StatusCode::OK, Json::object().with("tokens", Json::Array(console.tokens.list(owner))).to_compact())
}

/// `POST /tokens` `{"name", "scope": "read"|"admin", "expiresIn": seconds}`: the token is in the
/// answer once and never again. Tokens cannot create tokens; the scope cannot exceed the caller's.
async fn create_token(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if principal.via == Via::Token {
        return json_error(StatusCode::FORBIDDEN, "a token cannot create tokens: log in with a password");
    }
    let object = match body_object(&body) {
        Ok(object) => object,
        Err(response) => return response,
    };
    let name = text_field(&object, "name").unwrap_or_default();
    if name.is_empty() || name.len() > 100 {
        return json_error(StatusCode::BAD_REQUEST, "name is required (at most 100 bytes)");
    }
    let scope = match text_field(&object, "scope").as_deref().map(super::tokens::parse_scope) {
        None => Level::ReadOnly,
        Some(Some(scope)) => scope,
        Some(None) => return json_error(StatusCode::BAD_REQUEST, "scope must be \"read\" or \"admin\""),
    };
    if scope > principal.level {
        return json_error(StatusCode::FORBIDDEN, "a token's scope cannot exceed your own rights");
    }
    let expires_in = match object.get("expiresIn") {
        None | Some(Json::Null) => None,
        Some(Json::Number(n)) if *n > 0.0 && *n <= 10.0 * 365.0 * 86400.0 => Some(*n as i64),
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "expiresIn must be a positive number of seconds (at most 10 years)",
            );
        }
    };
    match console.tokens.create(&principal.username, &name, scope, expires_in) {
        Ok((token, description)) => {
            let mut body = description;
            body.push("token", Json::str(&token));
            audit_console_action(&console, &principal, "createToken", &[("name", &name)], None);
            json_bytes(StatusCode::CREATED, body.to_compact())
        }
        Err(error) => json_error(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

async fn revoke_token(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let principal = match principal(&console, peer.0, &method, &headers).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let owner = (principal.level != Level::Admin).then_some(principal.username.as_str());
    match console.tokens.revoke(&id, owner) {
        Ok(true) => {
            audit_console_action(&console, &principal, "revokeToken", &[("name", &id)], None);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => json_error(StatusCode::NOT_FOUND, "Token not found"),
        Err(error) => json_error(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}
