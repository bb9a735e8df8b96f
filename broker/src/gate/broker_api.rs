//! mosquitto 2.1's broker control API, `$CONTROL/broker/v1` (on with `enable_control_api true`):
//! `listPlugins` and `listListeners`, answered on `$CONTROL/broker/v1/response` with 2.1.2's
//! JSON; and 2.1.2's answer to a `$CONTROL/...` request that no endpoint serves,
//! `{"error": "endpoint not available"}` on `<request topic>/response`, sent to the requester
//! only. The envelope rules (`commands` array, `command`, `correlationData`, the errors that stop
//! a message) are 2.1.2's generic control handling; command names match without regard to case.

use std::sync::OnceLock;

use dynsec::json::{self, Json};
use tracing::info;

use crate::config::Config;
use crate::security::ControlReply;

pub const REQUEST_TOPIC: &str = "$CONTROL/broker/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/broker/v1/response";
/// 2.1.2's bytes, space included.
const NOT_AVAILABLE: &[u8] = br#"{"error": "endpoint not available"}"#;

/// One listener as `listListeners` shows it.
struct ListenerInfo {
    port: u16,
    bind_address: Option<String>,
    tls: bool,
    /// 2.1.2's name of the listener's protocol (2.1.2 names none for `http_api`).
    protocol: Option<&'static str>,
}

/// What the API reports, fixed at start (the bound ports once the listeners are up).
pub struct BrokerApi {
    enabled: bool,
    /// The dynamic-security plugin is loaded (the only plugin there can be).
    dynsec: bool,
    listeners: Vec<ListenerInfo>,
    /// The ports actually bound (a configured port 0 becomes the one the OS chose).
    bound_ports: OnceLock<Vec<u16>>,
}

impl BrokerApi {
    pub fn new(config: &Config) -> BrokerApi {
        let dynsec = std::iter::once(&config.security)
            .chain(config.listeners.iter().filter_map(|l| l.security.as_ref()))
            .any(|security| security.plugins.iter().any(|plugin| plugin.is_dynsec()));
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerInfo {
                port: l.port,
                bind_address: l.bind_address.clone(),
                tls: l.tls.is_configured(),
                protocol: match l.protocol {
                    crate::config::ListenerProtocol::Mqtt => Some("mqtt"),
                    crate::config::ListenerProtocol::Websockets => Some("mqtt+websockets"),
                    crate::config::ListenerProtocol::HttpApi => None,
                },
            })
            .collect();
        BrokerApi { enabled: config.enable_control_api, dynsec, listeners, bound_ports: OnceLock::new() }
    }

    /// Records the ports the listeners were bound to, in configuration order.
    pub fn set_bound_ports(&self, ports: Vec<u16>) {
        let _ = self.bound_ports.set(ports);
    }

    /// The ports the listeners were bound to, once they are (the console's `/api/v1/listeners`).
    pub fn bound_ports(&self) -> Option<&[u16]> {
        self.bound_ports.get().map(Vec::as_slice)
    }

    /// The reply to a request on `topic`, or `None` when `topic` is not this API's (or the API is
    /// off). `who` is the requester's client id and username, for the log.
    pub fn handle(&self, topic: &str, payload: &[u8], who: (&str, Option<&str>)) -> Option<ControlReply> {
        if !self.enabled || topic != REQUEST_TOPIC {
            return None;
        }
        let responses = self.run(payload, who);
        let reply = Json::object().with("responses", Json::Array(responses));
        Some(ControlReply { topic: RESPONSE_TOPIC.to_owned(), payload: reply.to_compact() })
    }

    fn run(&self, payload: &[u8], who: (&str, Option<&str>)) -> Vec<Json> {
        let Ok(doc) = json::parse(payload) else {
            return vec![error_reply(b"Unknown command", "Payload not valid JSON", None)];
        };
        let Some(commands) = doc.get("commands").and_then(Json::as_array) else {
            return vec![error_reply(b"Unknown command", "Invalid/missing commands", None)];
        };
        let mut responses = Vec::new();
        for command in commands {
            if !command.is_object() {
                responses.push(error_reply(b"Unknown command", "Command not an object", None));
                break;
            }
            let Some(name) = command.get("command").and_then(Json::as_bytes) else {
                responses.push(error_reply(b"Unknown command", "Missing command", None));
                break;
            };
            let correlation = match command.get("correlationData") {
                None => None,
                Some(Json::String(data)) => Some(data.as_slice()),
                Some(_) => {
                    responses.push(error_reply(name, "Invalid correlationData data type.", None));
                    break;
                }
            };
            responses.push(self.command(name, correlation, who));
        }
        responses
    }

    fn command(&self, name: &[u8], correlation: Option<&[u8]>, who: (&str, Option<&str>)) -> Json {
        let (data, command) = if name.eq_ignore_ascii_case(b"listPlugins") {
            (Json::object().with("plugins", Json::Array(self.plugins())), "listPlugins")
        } else if name.eq_ignore_ascii_case(b"listListeners") {
            (Json::object().with("listeners", Json::Array(self.listeners())), "listListeners")
        } else {
            return error_reply(name, "Unknown command", correlation);
        };
        info!(client_id = %crate::logging::client_text(who.0), username = ?who.1.map(crate::logging::client_text), "broker control: {command}");
        let mut reply = Json::object().with("command", Json::str(command)).with("data", data);
        if let Some(correlation) = correlation {
            reply.push("correlationData", Json::String(correlation.to_vec()));
        }
        reply
    }

    fn plugins(&self) -> Vec<Json> {
        if !self.dynsec {
            return Vec::new();
        }
        let endpoints = Json::Array(vec![Json::str(crate::security::chain::DYNSEC_REQUEST_TOPIC)]);
        vec![Json::object().with("name", Json::str("dynamic-security")).with("control-endpoints", endpoints)]
    }

    fn listeners(&self) -> Vec<Json> {
        let bound = self.bound_ports.get();
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let port = bound.and_then(|ports| ports.get(index)).copied().unwrap_or(listener.port);
                let mut item = Json::object().with("port", Json::int(port.into()));
                if let Some(protocol) = listener.protocol {
                    item.push("protocol", Json::str(protocol));
                }
                if let Some(address) = &listener.bind_address {
                    item.push("bind-address", Json::str(address));
                }
                item.with("tls", Json::Bool(listener.tls))
            })
            .collect()
    }
}

/// 2.1.2's per-command error object.
fn error_reply(command: &[u8], error: &str, correlation: Option<&[u8]>) -> Json {
    let mut reply = Json::object().with("command", Json::String(command.to_vec())).with("error", Json::str(error));
    if let Some(correlation) = correlation {
        reply.push("correlationData", Json::String(correlation.to_vec()));
    }
    reply
}

/// The answer to a `$CONTROL/...` request that no endpoint serves, for the requester alone.
pub fn endpoint_not_available(request_topic: &str) -> ControlReply {
    ControlReply { topic: format!("{request_topic}/response"), payload: NOT_AVAILABLE.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(text: &str) -> BrokerApi {
        BrokerApi::new(&crate::config::Config::from_text("test.conf", text).unwrap())
    }

    fn reply(api: &BrokerApi, payload: &str) -> String {
        let reply = api.handle(REQUEST_TOPIC, payload.as_bytes(), ("c", None)).expect("served");
        String::from_utf8(reply.payload).unwrap()
    }

    #[test]
    fn off_unless_enabled_and_only_its_own_topic() {
        let off = api("listener 1883\n");
        assert!(off.handle(REQUEST_TOPIC, b"{}", ("c", None)).is_none());
        let on = api("listener 1883\nenable_control_api true\n");
        assert!(on.handle("$CONTROL/broker/v2", b"{}", ("c", None)).is_none());
    }

    #[test]
    fn envelope_errors_stop_the_message() {
        let on = api("listener 1883\nenable_control_api true\n");
        assert_eq!(
            reply(&on, "nope"),
            r#"{"responses":[{"command":"Unknown command","error":"Payload not valid JSON"}]}"#
        );
        assert_eq!(
            reply(
                &on,
                r#"{"commands":[{"command":"x","correlationData":"c"},{"command":1},{"command":"listPlugins"}]}"#
            ),
            r#"{"responses":[{"command":"x","error":"Unknown command","correlationData":"c"},{"command":"Unknown command","error":"Missing command"}]}"#
        );
        assert_eq!(
            reply(&on, r#"{"commands":[{"command":"LISTPLUGINS","correlationData":"c"}]}"#),
            r#"{"responses":[{"command":"listPlugins","data":{"plugins":[]},"correlationData":"c"}]}"#
        );
    }

    #[test]
    fn an_http_api_listener_is_listed_without_a_protocol_as_in_212() {
        let on = api("listener 1883\nlistener 8080 127.0.0.1\nprotocol http_api\nenable_control_api true\n");
        assert_eq!(
            reply(&on, r#"{"commands":[{"command":"listListeners"}]}"#),
            r#"{"responses":[{"command":"listListeners","data":{"listeners":[{"port":1883,"protocol":"mqtt","tls":false},{"port":8080,"bind-address":"127.0.0.1","tls":false}]}}]}"#
        );
    }
}
