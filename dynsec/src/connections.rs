//! The live connections of a client, as mosquitto 2.1.2 shows them in getClient and verbose
//! listClients (`"connections":[{"address":"127.0.0.1"}]`): the engine knows none itself, the
//! broker that runs it answers through a [`ConnectionDirectory`]. Without one (the engine opened
//! offline, by a tool) the key is left out: there is nothing to report.

use crate::json::Json;

/// Who is connected right now, by the broker's account.
pub trait ConnectionDirectory: Send + Sync {
    /// The peer addresses (IP only, no port) of the connections that belong to the client
    /// record `username` (a persistent session whose client is offline counts, with its latest
    /// address), oldest first. Like 2.1.2: a record with a `clientid`
    /// matches only the connection with that client id, and only if it logged in as `username`;
    /// a record without one matches every connection logged in as `username`.
    fn addresses(&self, username: &str, client_id: Option<&str>) -> Vec<String>;
}

/// The `connections` array for one client record.
pub fn connections_json(directory: &dyn ConnectionDirectory, username: &str, client_id: Option<&str>) -> Json {
    Json::Array(
        directory
            .addresses(username, client_id)
            .iter()
            .map(|address| Json::object().with("address", Json::str(address)))
            .collect(),
    )
}
