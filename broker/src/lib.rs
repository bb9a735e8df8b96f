//! `dynsec-broker`: an MQTT broker whose routing is rumqttd's `Router` and whose every decision
//! about who may connect, publish, subscribe and receive is made by our own gate.
#![forbid(unsafe_code)]

pub mod security;
