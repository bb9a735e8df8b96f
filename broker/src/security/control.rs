//! `$CONTROL/dynamic-security/v1`: a request is executed by the engine on the blocking pool, its
//! reply is published on the response topic, and the kicks it caused are handed to the gate.
//! Which listeners serve the endpoint is the chain's decision ([`super::chain`]). Every request is
//! written to the audit trail ([`super::audit`]) once answered.

use std::sync::Arc;

use dynsec::Dynsec;
use dynsec::commands::Admin;

use super::audit::{AuditLog, ControlOrigin};
use crate::logging::client_text;
use crate::security::{BoxFuture, ControlOutcome, ControlReply, ControlSender, KickTarget};

pub const DYNSEC_REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const DYNSEC_RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The largest payload MQTT can carry; larger replies are dropped, as mosquitto does.
const MAX_PAYLOAD: usize = 268_435_455;

/// Runs one request on the blocking pool; resolves once its effect is durable.
pub(super) fn control_request(
    engine: Arc<Dynsec>,
    audit: Option<Arc<AuditLog>>,
    sender: ControlSender,
    payload: Vec<u8>,
) -> BoxFuture<ControlOutcome> {
    Box::pin(async move {
        let (admin, origin) = admin_of(sender);
        let result = tokio::task::spawn_blocking(move || {
            let result = engine.handle_control(&payload, admin.clone());
            if let Some(audit) = audit {
                audit.record(origin, &admin.client_id, admin.username.as_deref(), &payload, &result.response);
            }
            result
        })
        .await;
        outcome(result)
    })
}

/// The same, through the cluster's replicated log: resolves once the change is in JetStream.
pub(super) fn cluster_control_request(
    log: Arc<crate::cluster::security_log::SecurityLog>,
    audit: Option<Arc<AuditLog>>,
    sender: ControlSender,
    payload: Vec<u8>,
) -> BoxFuture<ControlOutcome> {
    Box::pin(async move {
        let (admin, origin) = admin_of(sender);
        let result = log.control(payload.clone(), admin.clone()).await;
        if let Some(audit) = audit {
            audit.record(origin, &admin.client_id, admin.username.as_deref(), &payload, &result.response);
        }
        outcome(Ok(result))
    })
}

/// Who sent a request, as the engine's log lines and the audit trail name them (made safe for a
/// log line here), and where it came from.
fn admin_of(sender: ControlSender) -> (Admin, ControlOrigin) {
    let admin = Admin {
        client_id: client_text(&sender.client_id).to_string(),
        username: sender.username.map(|u| client_text(&u).to_string()),
    };
    (admin, sender.origin)
}

/// The reply and kicks of an engine's answer.
fn outcome(result: Result<dynsec::ControlResult, tokio::task::JoinError>) -> ControlOutcome {
    match result {
        Ok(result) => {
            let replies = if result.response.len() <= MAX_PAYLOAD {
                vec![ControlReply { topic: DYNSEC_RESPONSE_TOPIC.to_owned(), payload: result.response }]
            } else {
                tracing::warn!(
                    "dynsec reply of {} bytes exceeds the MQTT payload limit; dropped",
                    result.response.len()
                );
                Vec::new()
            };
            ControlOutcome { replies, kicks: KickTarget::all_of(&result.kicks) }
        }
        Err(e) => {
            tracing::error!("dynsec control request failed: {e}");
            ControlOutcome::default()
        }
    }
}
