//! The broker's answer to dynsec's "who is connected as this client?" (mosquitto 2.1.2's
//! `connections` in getClient and verbose listClients), read from the session registry: like
//! 2.1.2, a persistent session whose client is offline still counts, with its latest address.

use std::sync::Arc;

use dynsec::connections::{ConnectionDirectory, KnownConnection};

use crate::gate::session::Sessions;
use crate::routing::router_link::RoutingEngine;

/// The session registry seen as a [`ConnectionDirectory`].
pub struct LiveConnections<E: RoutingEngine>(pub Arc<Sessions<E>>);

impl<E: RoutingEngine> ConnectionDirectory for LiveConnections<E> {
    fn known_connections(&self) -> Vec<KnownConnection> {
        self.0
            .known_clients()
            .into_iter()
            .map(|(client_id, username, peer)| KnownConnection {
                client_id: client_id.to_string(),
                username: username.map(|u| u.to_string()),
                address: peer.to_string(),
            })
            .collect()
    }
}
