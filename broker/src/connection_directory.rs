//! The broker's answer to dynsec's "who is connected as this client?" (mosquitto 2.1.2's
//! `connections` in getClient and verbose listClients), read from the session registry: like
//! 2.1.2, a persistent session whose client is offline still counts, with its latest address.

use std::sync::Arc;

use dynsec::connections::ConnectionDirectory;

use crate::router_link::RoutingEngine;
use crate::session::Sessions;

/// The session registry seen as a [`ConnectionDirectory`].
pub struct LiveConnections<E: RoutingEngine>(pub Arc<Sessions<E>>);

impl<E: RoutingEngine> ConnectionDirectory for LiveConnections<E> {
    fn addresses(&self, username: &str, client_id: Option<&str>) -> Vec<String> {
        let logged_in_as = |name: &Option<Arc<str>>| name.as_deref() == Some(username);
        match client_id {
            // 2.1.2 looks the client id up, then checks the username.
            Some(id) => self
                .0
                .known_client(id)
                .filter(|(name, _)| logged_in_as(name))
                .map(|(_, peer)| vec![peer.to_string()])
                .unwrap_or_default(),
            None => self
                .0
                .known_clients()
                .into_iter()
                .filter(|(_, name, _)| logged_in_as(name))
                .map(|(_, _, peer)| peer.to_string())
                .collect(),
        }
    }
}
