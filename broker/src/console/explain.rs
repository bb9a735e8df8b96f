//! `GET /api/dynsec/v1/explain?username=U|clientid=C&topic=T&action=A`: which rule decides whether
//! a client may do `A` (`publishClientSend`, `publishClientReceive`, `subscribe`, `unsubscribe`)
//! on `T`. Decision and rule both come from [`dynsec::Dynsec::explain`], which runs the ACL
//! check's own evaluation and names what decided (role, ACL type, topic, priority, allow; a role
//! refusing wildcard subscriptions; or the default access), so an explanation cannot disagree with
//! what a PUBLISH meets. This file only reads the query and words the answer.
//! With only a client id, the username of its live connection (or saved session) is used.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use dynsec::acl::{AccessKind, DecidedBy, Decision, Explanation};
use dynsec::json::Json;

use super::incoming::Peer;
use super::request::{principal, query_value};
use super::{Console, json_bytes, json_error};

pub(super) async fn explain(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(response) = principal(&console, peer.0, &method, &headers).await {
        return response;
    }
    let Some(engine) = console.engine() else {
        return json_error(StatusCode::NOT_FOUND, "dynamic security is not configured");
    };
    let topic = query_value(&uri, "topic").unwrap_or_default();
    if topic.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "topic is required");
    }
    let kind = match query_value(&uri, "action").as_deref().unwrap_or("publishClientSend") {
        "publishClientSend" | "publish" => AccessKind::Publish,
        "publishClientReceive" | "receive" => AccessKind::Receive,
        "subscribe" => AccessKind::Subscribe,
        "unsubscribe" => AccessKind::Unsubscribe,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "action must be publishClientSend, publishClientReceive, subscribe or unsubscribe",
            );
        }
    };
    let client_id = query_value(&uri, "clientid").filter(|c| !c.is_empty());
    let username = match query_value(&uri, "username").filter(|u| !u.is_empty()) {
        Some(username) => Some(username),
        None => client_id.as_deref().and_then(|id| {
            let known = console.shared.sessions.client_overview();
            known.into_iter().find(|c| &*c.client_id == id).and_then(|c| c.username.map(|u| u.to_string()))
        }),
    };
    let explanation = engine.explain(username.as_deref(), kind, &topic, client_id.as_deref());
    let mut body = describe(&explanation, &topic);
    let verdict = if explanation.decision == Decision::Allow { "allow" } else { "deny" };
    body.push("decision", Json::str(verdict));
    // Deferred: no dynsec rule decided; the chain then denies unless an acl_file allows.
    body.push("deferred", Json::Bool(explanation.decision == Decision::Defer));
    body.push("username", username.as_deref().map_or(Json::Null, Json::str));
    body.push("topic", Json::str(&topic));
    json_bytes(StatusCode::OK, body.to_compact())
}

/// The roles visited, the deciding rule and a sentence saying why.
fn describe(explanation: &Explanation, topic: &str) -> Json {
    let roles = Json::Array(explanation.roles.iter().map(|r| Json::str(r)).collect());
    let reason = match &explanation.decided_by {
        DecidedBy::NotAClient => return Json::object().with("reason", Json::str("not a dynsec client: dynsec defers")),
        DecidedBy::WildcardSubscriptionsDenied { role } => {
            format!("role {role} does not allow wildcard subscriptions")
        }
        DecidedBy::Default if topic.starts_with("$CONTROL") => {
            "no ACL matches; default access never applies to $CONTROL topics".to_owned()
        }
        DecidedBy::Default => format!(
            "no ACL matches; the default access for this action is {}",
            // With no ACL matching, the decision is the default's.
            if explanation.decision == Decision::Allow { "allow" } else { "deny" }
        ),
        DecidedBy::Acl { role, acl_type, topic: acl_topic, priority, allow, fail_closed } => {
            let rule = Json::object()
                .with("role", Json::str(role))
                .with("acltype", Json::str(acl_type.name()))
                .with("topic", Json::str(acl_topic))
                .with("priority", Json::int((*priority).into()))
                .with("allow", Json::Bool(*allow));
            let mut reason = format!(
                "the first matching ACL, in role order then priority order, is {} {} (priority {}) in role {}",
                acl_type.name(),
                acl_topic,
                priority,
                role
            );
            if *fail_closed {
                reason.push_str("; it uses %c or %u and the client id or username contains +, # or /, so it denies");
            }
            return Json::object().with("roles", roles).with("rule", rule).with("reason", Json::str(&reason));
        }
    };
    Json::object().with("roles", roles).with("reason", Json::str(&reason))
}
