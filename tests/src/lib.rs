//! End-to-end tests that start real binaries on 127.0.0.1 ephemeral ports.
pub mod broker;
pub mod certs;
pub mod chromium;
pub mod console;
pub mod control_client;
pub mod crash;
pub mod ctrl_harness;
pub mod dynsec_target;
pub mod mosquitto;
pub mod nats;
pub mod persistence_crash;
pub mod rr;
pub mod soak;
pub mod twin;
pub mod websocket;
