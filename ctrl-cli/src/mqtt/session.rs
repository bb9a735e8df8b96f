//! One MQTT connection as an admin client uses it: CONNECT, SUBSCRIBE to the response topic,
//! PUBLISH requests, and read the messages that come back, acknowledging QoS 1/2 flows and
//! keeping the connection alive. No reconnection: any failure ends the session with an error the
//! caller reports in one line.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::packets::{self, Ack, ConnectParams, DecodeError, Incoming};
use super::transport::{ConnectError, Stream, os_error_text};
use crate::options::ProtocolVersion;

/// mosquitto_ctrl's keepalive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// CONNACK refusal, already worded as mosquitto_ctrl does after "Connection error: ".
    #[error("Connection error: {0}")]
    Refused(String),
    /// SUBACK refusal, worded after "Subscribe error: ".
    #[error("Subscribe error: {0}")]
    SubscribeRefused(String),
    /// PUBACK/PUBREC with an error reason (MQTT 5).
    #[error("Publish error: {0}")]
    PublishRefused(String),
    /// The broker sent DISCONNECT (MQTT 5) or closed the connection.
    #[error("{}", disconnected_text(*.0))]
    Disconnected(Option<u8>),
    #[error("Error: A network protocol error occurred when communicating with the broker ({0}).")]
    Protocol(String),
    #[error("Error: {}", os_error_text(.0))]
    Io(std::io::Error),
}

fn disconnected_text(reason: Option<u8>) -> String {
    match reason {
        Some(code) => format!("Error: The broker closed the connection: {}.", packets::reason_string(code)),
        None => "Error: The connection was lost.".to_string(),
    }
}

/// A message received on a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Vec<u8>,
    pub payload: Bytes,
}

pub struct Session {
    stream: Box<dyn Stream>,
    version: ProtocolVersion,
    input: BytesMut,
    output: BytesMut,
    last_packet_id: u16,
    last_sent: Instant,
}

/// Credentials and identity for CONNECT.
pub struct Identity<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

impl Session {
    /// Sends CONNECT on an open stream and waits for CONNACK.
    pub async fn connect(
        stream: Box<dyn Stream>,
        version: ProtocolVersion,
        identity: &Identity<'_>,
    ) -> Result<Session, SessionError> {
        let mut session = Session {
            stream,
            version,
            input: BytesMut::with_capacity(16 * 1024),
            output: BytesMut::with_capacity(1024),
            last_packet_id: 0,
            last_sent: Instant::now(),
        };
        let params = ConnectParams {
            client_id: identity.client_id,
            username: identity.username,
            password: identity.password,
            keep_alive: KEEP_ALIVE.as_secs() as u16,
        };
        packets::encode_connect(version, &params, &mut session.output).map_err(SessionError::Protocol)?;
        session.flush().await?;
        match session.read_packet().await? {
            Incoming::ConnAck { code: 0 } => Ok(session),
            Incoming::ConnAck { code } => Err(SessionError::Refused(match version {
                ProtocolVersion::V5 if code == 0x84 => format!(
                    "{}. Try connecting to an MQTT v5 broker, or use MQTT v3.x mode.",
                    packets::reason_string(code)
                ),
                ProtocolVersion::V5 => packets::reason_string(code).to_string(),
                _ => packets::connack_string(code).to_string(),
            })),
            other => Err(SessionError::Protocol(format!("expected CONNACK, received {other:?}"))),
        }
    }

    fn next_packet_id(&mut self) -> u16 {
        self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
        self.last_packet_id
    }

    /// Subscribes to one filter and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<(), SessionError> {
        let pkid = self.next_packet_id();
        packets::encode_subscribe(self.version, pkid, filter, qos, &mut self.output).map_err(SessionError::Protocol)?;
        self.flush().await?;
        loop {
            match self.read_packet().await? {
                Incoming::SubAck { pkid: id, codes } if id == pkid => {
                    return match codes.as_slice() {
                        [code] if *code < 0x80 => Ok(()),
                        [code] => Err(SessionError::SubscribeRefused(match self.version {
                            ProtocolVersion::V5 => packets::reason_string(*code).to_string(),
                            _ => "Subscription refused.".to_string(),
                        })),
                        _ => Err(SessionError::Protocol("SUBACK with an unexpected number of codes".into())),
                    };
                }
                other => self.handle_background(other).await?,
            }
        }
    }

    /// Sends one PUBLISH. Its acknowledgement is handled while waiting for messages.
    pub async fn publish(&mut self, topic: &str, payload: Bytes, qos: u8) -> Result<(), SessionError> {
        let pkid = self.next_packet_id();
        packets::encode_publish(self.version, pkid, topic, payload, qos, &mut self.output)
            .map_err(SessionError::Protocol)?;
        self.flush().await
    }

    /// Waits for the next PUBLISH from the broker, handling acknowledgements and keepalive.
    pub async fn next_message(&mut self) -> Result<Message, SessionError> {
        loop {
            let packet = self.read_packet().await?;
            if let Incoming::Publish { topic, payload, qos, pkid } = packet {
                match qos {
                    1 => self.send_ack(Ack::PubAck(pkid)).await?,
                    2 => self.send_ack(Ack::PubRec(pkid)).await?,
                    _ => {}
                }
                return Ok(Message { topic, payload });
            }
            self.handle_background(packet).await?;
        }
    }

    /// Sends DISCONNECT and closes; errors are irrelevant at this point.
    pub async fn disconnect(mut self) {
        if packets::encode_disconnect(self.version, &mut self.output).is_ok() {
            let _ = self.flush().await;
        }
        let _ = self.stream.shutdown().await;
    }

    /// Acknowledgements and other packets that arrive while waiting for something else.
    async fn handle_background(&mut self, packet: Incoming) -> Result<(), SessionError> {
        match packet {
            Incoming::PubAck { reason, .. } if reason >= 0x80 => {
                Err(SessionError::PublishRefused(packets::reason_string(reason).to_string()))
            }
            Incoming::PubRec { reason, .. } if reason >= 0x80 => {
                Err(SessionError::PublishRefused(packets::reason_string(reason).to_string()))
            }
            Incoming::PubRec { pkid, .. } => self.send_ack(Ack::PubRel(pkid)).await,
            Incoming::PubRel { pkid } => self.send_ack(Ack::PubComp(pkid)).await,
            Incoming::Disconnect { reason } => Err(SessionError::Disconnected(Some(reason))),
            Incoming::Publish { qos: 1, pkid, .. } => self.send_ack(Ack::PubAck(pkid)).await,
            Incoming::Publish { qos: 2, pkid, .. } => self.send_ack(Ack::PubRec(pkid)).await,
            _ => Ok(()),
        }
    }

    async fn send_ack(&mut self, ack: Ack) -> Result<(), SessionError> {
        packets::encode_ack(self.version, ack, &mut self.output).map_err(SessionError::Protocol)?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        self.stream.write_all(&self.output).await.map_err(SessionError::Io)?;
        self.stream.flush().await.map_err(SessionError::Io)?;
        self.output.clear();
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Reads until one packet is complete, sending PINGREQ when the connection has been quiet
    /// for the keepalive period.
    async fn read_packet(&mut self) -> Result<Incoming, SessionError> {
        loop {
            match packets::decode(self.version, &mut self.input) {
                Ok(packet) => return Ok(packet),
                Err(DecodeError::Malformed(reason)) => return Err(SessionError::Protocol(reason)),
                Err(DecodeError::Incomplete) => {}
            }
            let ping_at = self.last_sent + KEEP_ALIVE;
            let read = tokio::select! {
                read = self.stream.read_buf(&mut self.input) => Some(read),
                _ = tokio::time::sleep_until(ping_at) => None,
            };
            match read {
                Some(Ok(0)) => return Err(SessionError::Disconnected(None)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(SessionError::Io(e)),
                None => {
                    packets::encode_pingreq(self.version, &mut self.output).map_err(SessionError::Protocol)?;
                    self.flush().await?;
                }
            }
        }
    }
}
