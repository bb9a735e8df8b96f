//! `GET /api/dynsec/v1/openapi.json`: an OpenAPI 3.1 description of the REST API, generated from
//! the same route table the router is built from ([`super::route_table::dynsec_routes`]), so the two
//! cannot drift apart. Served without credentials: it describes, it reveals nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dynsec::json::Json;

use super::route_table::{PREFIX, dynsec_routes};
use super::{Console, json_bytes};

/// The console's own routes: (method, path, summary, needs admin).
const CONSOLE_ROUTES: &[(&str, &str, &str, bool)] = &[
    ("post", "/commands", "Run a whole $CONTROL/dynamic-security/v1 payload; returns the MQTT response", true),
    ("post", "/login", "Log in with a dynsec username and password: session cookie and CSRF token", false),
    ("post", "/logout", "End the UI session", false),
    ("get", "/me", "The caller's username and rights (read or admin)", false),
    ("get", "/connected", "Known clients; filters: username, clientid, address", false),
    ("post", "/connected/{clientid}/kick", "Disconnect one client (as a dynsec kick)", true),
    ("get", "/audit", "The audit trail of control commands, newest first; limit", false),
    ("get", "/explain", "Which role and ACL decide: username or clientid, topic, action", false),
    ("get", "/tokens", "Application tokens (your own; an admin sees all)", false),
    ("post", "/tokens", "Create a token: name, scope (read|admin), expiresIn seconds; shown once", false),
    ("delete", "/tokens/{id}", "Revoke a token", false),
];

fn parameters(path: &str) -> Json {
    let names = path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'));
    Json::Array(
        names
            .map(|name| {
                Json::object()
                    .with("name", Json::str(name))
                    .with("in", Json::str("path"))
                    .with("required", Json::Bool(true))
                    .with("schema", Json::object().with("type", Json::str("string")))
            })
            .collect(),
    )
}

fn operation(summary: &str, path: &str, admin: bool, body: bool) -> Json {
    let responses = Json::object()
        .with("200", Json::object().with("description", Json::str("the command's data")))
        .with("400", Json::object().with("description", Json::str("invalid input; the MQTT error text")))
        .with("401", Json::object().with("description", Json::str("not authenticated")))
        .with("403", Json::object().with("description", Json::str("no rights, read-only, or CSRF token missing")))
        .with("404", Json::object().with("description", Json::str("not found")));
    let mut op = Json::object()
        .with("summary", Json::str(summary))
        .with("parameters", parameters(path))
        .with("responses", responses)
        .with("x-requires", Json::str(if admin { "admin" } else { "read" }));
    if body {
        let content = Json::object()
            .with("application/json", Json::object().with("schema", Json::object().with("type", Json::str("object"))));
        op.push("requestBody", Json::object().with("content", content));
    }
    op
}

fn document() -> Json {
    let mut paths: Vec<(String, Json)> = Vec::new();
    let mut add = |path: String, method: &str, op: Json| match paths.iter_mut().find(|(p, _)| *p == path) {
        Some((_, item)) => item.push(method, op),
        None => paths.push((path, Json::object().with(method, op))),
    };
    for (method, path, spec) in dynsec_routes() {
        let admin = !(spec.command.starts_with("list") || spec.command.starts_with("get"));
        let summary = format!("dynsec command {}", spec.command);
        let op = operation(&summary, path, admin, spec.body);
        add(format!("{PREFIX}{path}"), &method.as_str().to_ascii_lowercase(), op);
    }
    for (method, path, summary, admin) in CONSOLE_ROUTES {
        add(format!("{PREFIX}{path}"), method, operation(summary, path, *admin, *method == "post"));
    }
    let schemes = Json::object()
        .with("basic", Json::object().with("type", Json::str("http")).with("scheme", Json::str("basic")))
        .with("token", Json::object().with("type", Json::str("http")).with("scheme", Json::str("bearer")))
        .with(
            "session",
            Json::object()
                .with("type", Json::str("apiKey"))
                .with("in", Json::str("cookie"))
                .with("name", Json::str(super::auth::SESSION_COOKIE)),
        );
    let security = Json::Array(vec![
        Json::object().with("basic", Json::Array(vec![])),
        Json::object().with("token", Json::Array(vec![])),
        Json::object().with("session", Json::Array(vec![])),
    ]);
    Json::object()
        .with("openapi", Json::str("3.1.0"))
        .with(
            "info",
            Json::object().with("title", Json::str("dynsec broker console API")).with("version", Json::str("1")),
        )
        .with("paths", Json::Object(paths.into_iter().map(|(p, item)| (p.into_bytes(), item)).collect()))
        .with("components", Json::object().with("securitySchemes", schemes))
        .with("security", security)
}

pub(super) async fn serve(State(_console): State<Arc<Console>>) -> Response {
    json_bytes(StatusCode::OK, document().to_compact())
}
