//! The lines mosquitto 2.0 logs about its clients, in its words, so that tools and habits built
//! on mosquitto's log keep working (docs/known-differences.md lists where we differ):
//! - connections, logins, refusals and disconnections (mosquitto's notice level, our `info`),
//!   unless `connection_messages false`;
//! - with `-v` (or `log_type debug`/`all`), one line per packet received or sent, such as
//!   `Received PUBLISH from id (d0, q1, r0, m1, 'topic', ... (3 bytes))`, and the
//!   `log_type subscribe`/`unsubscribe` lines (`id 1 topic`).
//!
//! Every piece of client-chosen text goes through [`client_text`]. The debug lines cost one level
//! check when `-v` is off.

use std::net::SocketAddr;

use tracing::{debug, info};

use crate::logging::{client_text, connection_messages};
use crate::security::Protocol;

/// `address:port` as mosquitto prints a peer (no brackets around an IPv6 address).
struct Peer(SocketAddr);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0.ip(), self.0.port())
    }
}

/// A socket was accepted on the listener bound to `local_port`.
pub fn new_connection(peer: SocketAddr, local_port: u16) {
    if connection_messages() {
        info!("New connection from {} on port {local_port}.", Peer(peer));
    }
}

/// What a CONNECT asked for, as the login lines show it.
pub struct Login<'a> {
    pub peer: SocketAddr,
    pub client_id: &'a str,
    pub protocol: Protocol,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<&'a str>,
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::V31 => 1,
        Protocol::V311 => 2,
        Protocol::V5 => 5,
    }
}

/// A client was accepted.
pub fn connected(login: &Login<'_>) {
    if !connection_messages() {
        return;
    }
    let username = match login.username {
        Some(name) => format!(", u'{}'", client_text(name)),
        None => String::new(),
    };
    info!(
        "New client connected from {} as {} (p{}, c{}, k{}{username}).",
        Peer(login.peer),
        client_text(login.client_id),
        protocol_number(login.protocol),
        u8::from(login.clean_start),
        login.keep_alive,
    );
}

/// The will of an accepted client (or its absence).
pub fn will(will: Option<(&str, usize, bool, u8)>) {
    match will {
        None => debug!("No will message specified."),
        Some((topic, len, retain, qos)) => {
            debug!("Will message specified ({len} bytes) (r{}, q{qos}).", u8::from(retain));
            debug!("\t{}", client_text(topic));
        }
    }
}

/// A login was refused: which client, from where, under which username, and why (`why` may be
/// empty when the return code says it all). (mosquitto
/// 2.0 says `Client <unknown> disconnected, not authorised.`; naming the username tells an
/// operator whose password or rights to look at.)
pub fn refused(login: &Login<'_>, return_code: u8, why: &str) {
    debug!("Sending CONNACK to {} (0, {return_code})", client_text(login.client_id));
    if !connection_messages() {
        return;
    }
    let username = match login.username {
        Some(name) => format!("username '{}'", client_text(name)),
        None => "no username".to_owned(),
    };
    let why = if why.is_empty() { String::new() } else { format!(": {why}") };
    info!(
        "Client {} [{}] disconnected, not authorised{why} ({username}).",
        client_text(login.client_id),
        Peer(login.peer)
    );
}

pub fn sending_connack(client_id: &str, session_present: bool, return_code: u8) {
    debug!("Sending CONNACK to {} ({}, {return_code})", client_text(client_id), u8::from(session_present));
}

/// The fields of a PUBLISH line.
pub struct PublishLine<'a> {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub pkid: u16,
    pub topic: &'a [u8],
    pub payload_len: usize,
}

impl std::fmt::Display for PublishLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(self.dup),
            self.qos,
            u8::from(self.retain),
            self.pkid,
            client_text(&String::from_utf8_lossy(self.topic)),
            self.payload_len
        )
    }
}

pub fn received_publish(client_id: &str, publish: &PublishLine<'_>) {
    debug!("Received PUBLISH from {} {publish}", client_text(client_id));
}

pub fn denied_publish(client_id: &str, publish: &PublishLine<'_>) {
    debug!("Denied PUBLISH from {} {publish}", client_text(client_id));
}

pub fn sending_publish(client_id: &str, publish: &PublishLine<'_>) {
    debug!("Sending PUBLISH to {} {publish}", client_text(client_id));
}

/// `Received PINGREQ from id`, `Received SUBSCRIBE from id`, ...
pub fn received(packet: &str, client_id: &str) {
    debug!("Received {packet} from {}", client_text(client_id));
}

/// `Sending PINGRESP to id`, `Sending SUBACK to id`, ...
pub fn sending(packet: &str, client_id: &str) {
    debug!("Sending {packet} to {}", client_text(client_id));
}

/// An acknowledgement from the client: PUBACK and PUBCOMP carry a reason code in mosquitto's
/// line, PUBREC and PUBREL do not.
pub fn received_ack(packet: &str, client_id: &str, pkid: u16, reason: Option<u8>) {
    match reason {
        Some(reason) => debug!("Received {packet} from {} (Mid: {pkid}, RC:{reason})", client_text(client_id)),
        None => debug!("Received {packet} from {} (Mid: {pkid})", client_text(client_id)),
    }
}

/// An acknowledgement to the client: PUBACK and PUBREC carry a reason code in mosquitto's line,
/// PUBREL and PUBCOMP do not.
pub fn sending_ack(packet: &str, client_id: &str, pkid: u16, reason: Option<u8>) {
    match reason {
        Some(reason) => debug!("Sending {packet} to {} (m{pkid}, rc{reason})", client_text(client_id)),
        None => debug!("Sending {packet} to {} (m{pkid})", client_text(client_id)),
    }
}

/// One filter of a SUBSCRIBE (the debug line and the `log_type subscribe` line).
pub fn subscribe_filter(client_id: &str, filter: &str, qos: u8) {
    debug!("\t{} (QoS {qos})", client_text(filter));
    debug!("{} {qos} {}", client_text(client_id), client_text(filter));
}

/// One filter of an UNSUBSCRIBE (the debug line and the `log_type unsubscribe` line).
pub fn unsubscribe_filter(client_id: &str, filter: &str) {
    debug!("\t{}", client_text(filter));
    debug!("{} {}", client_text(client_id), client_text(filter));
}

/// Why a connection ended, in the words of mosquitto's disconnect lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The client sent DISCONNECT.
    Disconnected,
    /// The socket was closed by the client without DISCONNECT.
    ClosedByClient,
    /// A read or write failed, or the client stopped reading.
    SocketError,
    KeepAliveTimeout,
    MalformedPacket,
    OversizePacket,
    ProtocolError,
    /// Kicked by an administrator (dynsec change, `disconnectClient`...).
    Administrative,
    /// Another connection took the client id over.
    TakenOver,
    /// The broker is shutting down (mosquitto logs nothing for it).
    Shutdown,
    /// The routing engine dropped or refused the client's link.
    RouterGone,
}

pub fn disconnected(client_id: &str, departure: Departure) {
    if !connection_messages() {
        return;
    }
    let id = client_text(client_id);
    match departure {
        Departure::Disconnected => info!("Client {id} disconnected."),
        Departure::ClosedByClient => info!("Client {id} closed its connection."),
        Departure::SocketError => info!("Socket error on client {id}, disconnecting."),
        Departure::KeepAliveTimeout => info!("Client {id} has exceeded timeout, disconnecting."),
        Departure::MalformedPacket => info!("Client {id} disconnected due to malformed packet."),
        Departure::OversizePacket => info!("Client {id} disconnected due to oversize packet."),
        Departure::ProtocolError => info!("Client {id} disconnected due to protocol error."),
        // (mosquitto's own wording, kept so that existing log filters match)
        Departure::Administrative => info!("Client {id} been disconnected by administrative action."),
        Departure::TakenOver => info!("Client {id} already connected, closing old connection."),
        Departure::Shutdown => {}
        Departure::RouterGone => info!("Client {id} disconnected: the routing engine dropped its link."),
    }
}
