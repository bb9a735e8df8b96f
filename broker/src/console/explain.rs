//! `GET /api/dynsec/v1/explain?username=U|clientid=C&topic=T&action=A`: which rule decides whether
//! a client may do `A` (`publishClientSend`, `publishClientReceive`, `subscribe`, `unsubscribe`)
//! on `T`. The decision itself is the engine's ([`dynsec::AclHandle::check`], the check every
//! PUBLISH meets); the explanation walks the same roles in the same order (the client's roles,
//! then its groups' roles; the anonymous group's for no username) and names the first ACL that
//! matches — role, ACL type, topic, priority, allow — or the default access when none does.
//! With only a client id, the username of its live connection (or saved session) is used.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use dynsec::acl::{AccessKind, Decision, PrincipalKey, role_walk};
use dynsec::json::Json;
use dynsec::model::AclType;
use dynsec::topic::{acl_covers_filter, topic_matches_filter};

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
    let (kind, types) = match query_value(&uri, "action").as_deref().unwrap_or("publishClientSend") {
        "publishClientSend" | "publish" => (AccessKind::Publish, vec![AclType::PublishClientSend]),
        "publishClientReceive" | "receive" => (AccessKind::Receive, vec![AclType::PublishClientReceive]),
        "subscribe" => (AccessKind::Subscribe, vec![AclType::SubscribeLiteral, AclType::SubscribePattern]),
        "unsubscribe" => (AccessKind::Unsubscribe, vec![AclType::UnsubscribeLiteral, AclType::UnsubscribePattern]),
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
    let decision = engine.acl_handle(username.as_deref()).check(kind, &topic, client_id.as_deref());
    let key = PrincipalKey::for_username(username.as_deref());
    let mut body =
        engine.with_model(|model| walk(model, &key, kind, &types, &topic, client_id.as_deref(), username.as_deref()));
    let verdict = if decision == Decision::Allow { "allow" } else { "deny" };
    body.push("decision", Json::str(verdict));
    // Deferred: no dynsec rule decided; the chain then denies unless an acl_file allows.
    body.push("deferred", Json::Bool(decision == Decision::Defer));
    body.push("username", username.as_deref().map_or(Json::Null, Json::str));
    body.push("topic", Json::str(&topic));
    json_bytes(StatusCode::OK, body.to_compact())
}

/// The roles visited and the first matching ACL, as the engine evaluates them.
fn walk(
    model: &dynsec::model::Model,
    key: &PrincipalKey,
    kind: AccessKind,
    types: &[AclType],
    topic: &str,
    client_id: Option<&str>,
    username: Option<&str>,
) -> Json {
    let Some(roles) = role_walk(model, key) else {
        return Json::object().with("reason", Json::str("not a dynsec client: dynsec defers"));
    };
    let visited: Vec<Json> = roles.iter().map(|r| Json::str(&r.name)).collect();
    let substitute = |pattern: &str| {
        pattern
            .split('/')
            .map(|level| match level {
                "%c" => client_id.unwrap_or(""),
                "%u" => username.unwrap_or(""),
                other => other,
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for role in &roles {
        if kind == AccessKind::Subscribe && !role.allow_wildcard_subs && topic.contains(['+', '#']) {
            let reason = format!("role {} does not allow wildcard subscriptions", role.name);
            return Json::object().with("roles", Json::Array(visited)).with("reason", Json::str(&reason));
        }
        for acl_type in types {
            let literal = matches!(acl_type, AclType::SubscribeLiteral | AclType::UnsubscribeLiteral);
            for acl in &role.acls[acl_type.index()] {
                let matched = if literal {
                    acl.topic == topic
                } else if matches!(kind, AccessKind::Subscribe | AccessKind::Unsubscribe) {
                    acl_covers_filter(&substitute(&acl.topic), topic)
                } else {
                    topic_matches_filter(&substitute(&acl.topic), topic)
                };
                if matched {
                    let rule = Json::object()
                        .with("role", Json::str(&role.name))
                        .with("acltype", Json::str(acl_type.name()))
                        .with("topic", Json::str(&acl.topic))
                        .with("priority", Json::int(acl.priority.into()))
                        .with("allow", Json::Bool(acl.allow));
                    let reason = format!(
                        "the first matching ACL, in role order then priority order, is {} {} (priority {}) in role {}",
                        acl_type.name(),
                        acl.topic,
                        acl.priority,
                        role.name
                    );
                    return Json::object()
                        .with("roles", Json::Array(visited))
                        .with("rule", rule)
                        .with("reason", Json::str(&reason));
                }
            }
        }
    }
    let index = match kind {
        AccessKind::Publish => 0,
        AccessKind::Receive => 1,
        AccessKind::Subscribe => 2,
        AccessKind::Unsubscribe => 3,
    };
    let default = model.default_access.get(index);
    let reason = if topic.starts_with("$CONTROL") {
        "no ACL matches; default access never applies to $CONTROL topics".to_owned()
    } else {
        format!("no ACL matches; the default access for this action is {}", if default { "allow" } else { "deny" })
    };
    Json::object().with("roles", Json::Array(visited)).with("reason", Json::str(&reason))
}
