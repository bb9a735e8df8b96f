//! `$CONTROL/dynamic-security/v1`: a request is executed by the engine on the blocking pool, its
//! reply is published on the response topic, and the kicks it caused are handed to the gate.

use std::sync::Arc;

use dynsec::commands::{Admin, Kicks};
use tokio::sync::mpsc;

use super::chain::AuthChain;
use crate::logging::client_text;
use crate::security::{BoxFuture, ControlOutcome, ControlReply, ControlSender, KickTarget};

pub const DYNSEC_REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const DYNSEC_RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The largest payload MQTT can carry; larger replies are dropped, as mosquitto does.
const MAX_PAYLOAD: usize = 268_435_455;

impl AuthChain {
    /// A `$CONTROL/dynamic-security/v1` request, run on the blocking pool; resolves once durable.
    pub(super) fn control_request(
        &self,
        sender: ControlSender,
        topic: &str,
        payload: Vec<u8>,
    ) -> Option<BoxFuture<ControlOutcome>> {
        if topic != DYNSEC_REQUEST_TOPIC || !crate::security::Security::serves_control(self, sender.listener, topic) {
            return None;
        }
        let engine = Arc::clone(self.dynsec.as_ref()?);
        Some(Box::pin(async move {
            // Used only for the audit log line: made safe for it here.
            let admin = Admin {
                client_id: client_text(&sender.client_id).to_string(),
                username: sender.username.map(|u| client_text(&u).to_string()),
            };
            let result = tokio::task::spawn_blocking(move || engine.handle_control(&payload, admin)).await;
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
                    ControlOutcome { replies, kicks: kick_targets(&result.kicks) }
                }
                Err(e) => {
                    tracing::error!("dynsec control request failed: {e}");
                    ControlOutcome::default()
                }
            }
        }))
    }
}

fn kick_targets(kicks: &Kicks) -> Vec<KickTarget> {
    let mut targets: Vec<KickTarget> = kicks.users.iter().map(|u| KickTarget::Username(u.as_str().into())).collect();
    if kicks.anonymous {
        targets.push(KickTarget::Anonymous);
    }
    targets
}

pub(super) fn send_kicks(tx: &mpsc::UnboundedSender<KickTarget>, kicks: &Kicks) {
    for target in kick_targets(kicks) {
        let _ = tx.send(target);
    }
}
