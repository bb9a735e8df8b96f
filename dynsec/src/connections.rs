//! The live connections of a client, as mosquitto 2.1.2 shows them in getClient and verbose
//! listClients (`"connections":[{"address":"127.0.0.1"}]`): the engine knows none itself, the
//! broker that runs it answers through a [`ConnectionDirectory`]. Without one (the engine opened
//! offline, by a tool) the key is left out: there is nothing to report.

use std::collections::HashMap;

use crate::json::Json;

/// One connection the broker knows: a connected client, or a persistent session whose client
/// is offline (2.1.2 lists those too, with their latest address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownConnection {
    pub client_id: String,
    pub username: Option<String>,
    /// The peer's IP address, without the port.
    pub address: String,
}

/// Who is connected right now, by the broker's account.
pub trait ConnectionDirectory: Send + Sync {
    /// Every known connection, oldest first.
    fn known_connections(&self) -> Vec<KnownConnection>;
}

/// The connections of one moment, indexed for the lookups of one control message (a verbose
/// listClients asks once per client).
#[derive(Debug, Default)]
pub struct ConnectionSnapshot {
    by_username: HashMap<String, Vec<String>>,
    by_client_id: HashMap<String, (Option<String>, String)>,
}

impl ConnectionSnapshot {
    pub fn new(connections: Vec<KnownConnection>) -> ConnectionSnapshot {
        let mut snapshot = ConnectionSnapshot::default();
        for c in connections {
            if let Some(username) = &c.username {
                snapshot.by_username.entry(username.clone()).or_default().push(c.address.clone());
            }
            snapshot.by_client_id.insert(c.client_id, (c.username, c.address));
        }
        snapshot
    }

    /// The `connections` array of the client record `username`. Like 2.1.2: a record with a
    /// `clientid` matches only the connection with that client id, and only if it logged in as
    /// `username`; a record without one matches every connection logged in as `username`.
    pub fn json(&self, username: &str, client_id: Option<&str>) -> Json {
        let addresses: Vec<&str> = match client_id {
            Some(id) => self
                .by_client_id
                .get(id)
                .filter(|(name, _)| name.as_deref() == Some(username))
                .map(|(_, address)| vec![address.as_str()])
                .unwrap_or_default(),
            None => self.by_username.get(username).map(|a| a.iter().map(String::as_str).collect()).unwrap_or_default(),
        };
        Json::Array(addresses.into_iter().map(|address| Json::object().with("address", Json::str(address))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(client_id: &str, username: Option<&str>, address: &str) -> KnownConnection {
        KnownConnection { client_id: client_id.into(), username: username.map(Into::into), address: address.into() }
    }

    #[test]
    fn records_match_by_username_or_by_client_id_and_username() {
        let snapshot = ConnectionSnapshot::new(vec![
            known("a", Some("u"), "10.0.0.1"),
            known("b", Some("u"), "::1"),
            known("c", None, "10.0.0.3"),
            known("w-id", Some("u"), "10.0.0.4"),
        ]);
        let text = |json: Json| String::from_utf8(json.to_compact()).unwrap();
        assert_eq!(
            text(snapshot.json("u", None)),
            r#"[{"address":"10.0.0.1"},{"address":"::1"},{"address":"10.0.0.4"}]"#
        );
        assert_eq!(text(snapshot.json("u", Some("b"))), r#"[{"address":"::1"}]"#);
        assert_eq!(text(snapshot.json("w", Some("w-id"))), "[]", "the client id is used by another username");
        assert_eq!(text(snapshot.json("nobody", None)), "[]");
    }
}
