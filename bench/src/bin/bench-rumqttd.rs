//! The bare reference broker: rumqttd 0.20's own `Broker` (its listeners, its connection code, no
//! authentication) with one MQTT 3.1.1 and one MQTT 5 listener on 127.0.0.1, and the router
//! settings `dynsec-broker` uses by default, so that the difference measured is our gate.
//!
//!     bench-rumqttd V4_PORT V5_PORT SEGMENT_SIZE SEGMENT_COUNT

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Same bounds as `dynsec-broker`'s defaults (`gate_router_connections`, connect timeout,
/// `max_packet_size`).
const ROUTER_CONNECTIONS: usize = 100_000;
const CONNECT_TIMEOUT_MS: u16 = 10_000;
const MAX_PACKET_SIZE: usize = 4 * 1024 * 1024;
/// Packets read per batch; rumqttd's sample configuration.
const MAX_INFLIGHT_COUNT: usize = 100;

fn server(name: &str, port: u16) -> ServerSettings {
    ServerSettings {
        name: name.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            max_payload_size: MAX_PACKET_SIZE,
            max_inflight_count: MAX_INFLIGHT_COUNT,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        },
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [v4_port, v5_port, segment_size, segment_count] = args[..] else {
        eprintln!("usage: bench-rumqttd V4_PORT V5_PORT SEGMENT_SIZE SEGMENT_COUNT");
        std::process::exit(2);
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: ROUTER_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: segment_size,
            max_segment_count: segment_count,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server("v4", v4_port as u16))])),
        v5: Some(HashMap::from([("1".to_owned(), server("v5", v5_port as u16))])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    if let Err(e) = broker.start() {
        eprintln!("bench-rumqttd: {e}");
        std::process::exit(1);
    }
}
