//! The MQTT client side of dynsec-ctrl: transport (TCP, unix socket, TLS), packet codec
//! adapters over rumqttc's codecs, and a single-connection session.

pub mod packets;
pub mod session;
pub mod tls;
pub mod transport;

pub use session::{Identity, Message, Session, SessionError};
