//! The `$CONTROL/dynamic-security/v1` exchange: connect, subscribe to the response topic, publish
//! `{"commands":[...]}` and wait for the reply that carries our `correlationData`.
//!
//! mosquitto_ctrl prints the first message it receives on the response topic, which can be
//! another administrator's reply. Every command sent here carries a `correlationData` unique to
//! this process and message, and only the reply carrying it is taken.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dynsec::json::Json;

use crate::mqtt::transport::{self, ConnectError};
use crate::mqtt::{Identity, Session, SessionError, tls};
use crate::options::{ConnectionOptions, ProtocolVersion};
use crate::text::lossy;

pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// A control endpoint: where requests go and where their replies come from.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub request: &'static str,
    pub response: &'static str,
}

/// The dynamic-security plugin's endpoint.
pub const DYNSEC: Endpoint = Endpoint { request: REQUEST_TOPIC, response: RESPONSE_TOPIC };

/// Why a request did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("Error: Timed out after {} waiting for the broker.", seconds(*.0))]
    Timeout(Duration),
}

fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 { format!("{secs:.0} seconds") } else { format!("{secs} seconds") }
}

impl ControlError {
    /// mosquitto_ctrl's exit status for this failure: libmosquitto's error number for failures to
    /// connect, 0 for everything reported after connecting (refusals, lost connections, timeouts).
    pub fn exit_code(&self) -> i32 {
        use crate::exit_code;
        match self {
            ControlError::Session(SessionError::Connect(ConnectError::Lookup(_))) => exit_code::LOOKUP,
            ControlError::Session(SessionError::Connect(ConnectError::Os(_))) => exit_code::ERRNO,
            ControlError::Session(SessionError::Connect(ConnectError::Tls(_))) => exit_code::TLS,
            ControlError::Session(SessionError::Connect(ConnectError::Invalid(_))) => exit_code::INVALID_ARGUMENTS,
            _ => exit_code::OK,
        }
    }

    /// The one line printed on stderr.
    pub fn message(&self) -> String {
        match self {
            ControlError::Session(SessionError::Connect(ConnectError::Lookup(_))) => {
                "Unable to connect (Lookup error.).".to_string()
            }
            ControlError::Session(SessionError::Connect(ConnectError::Os(e))) => {
                format!("Error: {}", transport::os_error_text(e))
            }
            ControlError::Session(SessionError::Connect(ConnectError::Tls(detail))) => {
                format!("Unable to connect (A TLS error occurred: {detail}).")
            }
            ControlError::Session(SessionError::Connect(ConnectError::Invalid(detail))) => {
                format!("Unable to connect ({detail}).")
            }
            other => other.to_string(),
        }
    }
}

/// Credentials resolved before connecting (the password may have been prompted for).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

pub struct ControlClient {
    session: Session,
    qos: u8,
    timeout: Duration,
    correlation_prefix: String,
    messages_sent: u64,
    endpoint: Endpoint,
}

/// A reply to one message: the parsed payload and its raw bytes.
pub struct Reply {
    pub payload: Bytes,
    pub tree: Json,
}

impl ControlClient {
    /// Connects and subscribes to the dynamic-security replies, within the configured timeout.
    pub async fn open(
        options: &ConnectionOptions,
        credentials: &Credentials,
        tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<ControlClient, ControlError> {
        Self::open_endpoint(options, credentials, tls_config, DYNSEC).await
    }

    /// Connects and subscribes to `endpoint`'s replies, within the configured timeout.
    pub async fn open_endpoint(
        options: &ConnectionOptions,
        credentials: &Credentials,
        tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
        endpoint: Endpoint,
    ) -> Result<ControlClient, ControlError> {
        let opening = async {
            let stream = transport::open(options, tls_config).await.map_err(SessionError::from)?;
            let client_id = client_id(options);
            let identity = Identity {
                client_id: &client_id,
                username: credentials.username.as_deref(),
                password: credentials.password.as_deref(),
            };
            let mut session = Session::connect(stream, options.protocol, &identity).await?;
            session.subscribe(endpoint.response, options.qos).await?;
            Ok::<Session, SessionError>(session)
        };
        let session = tokio::time::timeout(options.timeout, opening)
            .await
            .map_err(|_| ControlError::Timeout(options.timeout))??;
        Ok(ControlClient {
            session,
            qos: options.qos,
            timeout: options.timeout,
            correlation_prefix: correlation_prefix(),
            messages_sent: 0,
            endpoint,
        })
    }

    /// Sends `commands` in one message (each gets our `correlationData`, replacing any it had)
    /// and waits for the reply.
    pub async fn send(&mut self, commands: Vec<Json>) -> Result<Reply, ControlError> {
        self.messages_sent += 1;
        let tag = format!("{}-{}-", self.correlation_prefix, self.messages_sent);
        let commands: Vec<Json> =
            commands.into_iter().enumerate().map(|(i, c)| with_correlation(c, format!("{tag}{i}"))).collect();
        let payload = Json::object().with("commands", Json::Array(commands)).to_compact();
        let exchange = async {
            self.session.publish(self.endpoint.request, Bytes::from(payload), self.qos).await?;
            loop {
                let message = self.session.next_message().await?;
                if message.topic != self.endpoint.response.as_bytes() {
                    continue;
                }
                let Ok(tree) = dynsec::json::parse(&message.payload) else {
                    continue;
                };
                // A reply without `responses` is the broker's "endpoint not available", sent to
                // the requester alone.
                if reply_matches(&tree, tag.as_bytes()) || tree.get("responses").is_none() {
                    return Ok::<Reply, SessionError>(Reply { payload: message.payload, tree });
                }
            }
        };
        let timeout = self.timeout;
        tokio::time::timeout(timeout, exchange).await.map_err(|_| ControlError::Timeout(timeout))?.map_err(Into::into)
    }

    pub async fn close(self) {
        self.session.disconnect().await;
    }
}

/// Position of a response in our message, from its `correlationData`.
pub fn response_index(response: &Json) -> Option<usize> {
    let data = response.get("correlationData")?.as_bytes()?;
    let text = std::str::from_utf8(data).ok()?;
    text.rsplit('-').next()?.parse().ok()
}

fn reply_matches(tree: &Json, tag: &[u8]) -> bool {
    tree.get("responses").and_then(Json::as_array).is_some_and(|responses| {
        responses.iter().any(|r| r.get("correlationData").and_then(Json::as_bytes).is_some_and(|c| c.starts_with(tag)))
    })
}

fn with_correlation(command: Json, correlation: String) -> Json {
    match command {
        Json::Object(members) => {
            let mut members: Vec<(Vec<u8>, Json)> =
                members.into_iter().filter(|(k, _)| !k.eq_ignore_ascii_case(b"correlationData")).collect();
            members.push((b"correlationData".to_vec(), Json::String(correlation.into_bytes())));
            Json::Object(members)
        }
        other => other,
    }
}

/// Unique enough across concurrent processes: pid plus the clock's nanoseconds.
fn correlation_prefix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("dynsec-ctrl-{}-{nanos:08x}", std::process::id())
}

/// `-i` if given; otherwise empty (the broker assigns one) except for MQTT 3.1, which requires
/// an identifier.
fn client_id(options: &ConnectionOptions) -> String {
    match (&options.client_id, options.protocol) {
        (Some(id), _) => lossy(id),
        (None, ProtocolVersion::V31) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
            format!("dynsec-ctrl-{:06x}", (std::process::id() ^ nanos) & 0xFF_FFFF)
        }
        (None, _) => String::new(),
    }
}

/// TLS configuration or the one-line reason it could not be built.
pub fn tls_config(options: &ConnectionOptions) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, String> {
    tls::client_config(&options.tls).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_replaces_and_indexes() {
        let command = Json::object().with("command", Json::str("x")).with("CorrelationData", Json::str("mine"));
        let tagged = with_correlation(command, "p-3-7".into());
        assert_eq!(tagged.to_compact(), br#"{"command":"x","correlationData":"p-3-7"}"#.to_vec());
        assert_eq!(response_index(&tagged), Some(7));
        let reply = dynsec::json::parse(br#"{"responses":[{"command":"x","correlationData":"p-3-0"}]}"#).unwrap();
        assert!(reply_matches(&reply, b"p-3-"));
        assert!(!reply_matches(&reply, b"p-4-"));
    }
}
