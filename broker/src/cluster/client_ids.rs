//! Which connection owns a client id, cluster-wide (docs/cluster.md): a JetStream stream keeping
//! the last message of each subject, `<cluster>_clients` (subjects `<cluster>.client.<hex of the
//! client id>`, value `<node>\n<connection id>`), written by compare-and-set.
//!
//! A connecting client's node writes its claim with JetStream's *expected last subject sequence*
//! (the sequence it read; 0 when nobody claimed the id yet); another node's write in between
//! makes JetStream refuse it, and the node reads again and retries. The claims of one id are
//! thereby ordered by their stream sequence, and the last one is the owner. The claim notice
//! (`messages::MessageBus`) carries that sequence: a node compares it with its own connection's,
//! without reading the record again (a read may not yet see a claim just acknowledged), and two
//! connections made at once on two nodes end with the later claim's connected.
//!
//! (Not a JetStream KV bucket: async-nats 0.52 creates buckets only after reading the account's
//! `reserved_memory`, which nats-server 2.9 does not send, so creating one fails there. This
//! stream is what such a bucket is, with the same compare-and-set.)

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::config::ClusterConfig;

/// Compare-and-set attempts before a claim gives up (each refusal is another node's claim).
const ATTEMPTS: usize = 8;
/// How long a connect waits for JetStream before it goes on with its claim unrecorded.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// Who owns a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub conn_id: u64,
}

/// The cluster's record of client-id owners.
pub struct ClientIds {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    node: String,
}

impl ClientIds {
    pub async fn open(client: &async_nats::Client, config: &ClusterConfig) -> Result<ClientIds, String> {
        let js = jetstream::new(client.clone());
        let prefix = format!("{}.client", config.name);
        let name = format!("{}_clients", config.name);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{prefix}.*")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the client-id stream {name}: {e}"))?;
        Ok(ClientIds { js, stream, prefix, node: config.node_name.clone() })
    }

    fn subject(&self, client_id: &str) -> String {
        let hex: String = client_id.bytes().map(|b| format!("{b:02x}")).collect();
        // (An empty client id is assigned one before it is claimed; `_` keeps the token valid.)
        format!("{}.{}", self.prefix, if hex.is_empty() { "_" } else { &hex })
    }

    /// The owner of `client_id` and the sequence of its record (0: nobody claimed it).
    async fn read(&self, subject: &str) -> Result<(Option<Owner>, u64), String> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok((parse(&message.payload), message.sequence)),
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Ok((None, 0)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Records connection `conn_id` of this node as the owner of `client_id`, by compare-and-set;
    /// the claim's sequence in the stream orders it against every other claim of the id. Returns
    /// that sequence and the owner the claim replaced (where its session is: `session_moves`).
    pub async fn claim(&self, client_id: &str, conn_id: u64) -> Result<(u64, Option<Owner>), String> {
        let subject = self.subject(client_id);
        let value = Bytes::from(format!("{}\n{conn_id}", self.node));
        let attempt = async {
            let mut last_error = String::new();
            for _ in 0..ATTEMPTS {
                let (previous, sequence) = self.read(&subject).await?;
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, sequence.to_string().as_str());
                let stored = match self.js.publish_with_headers(subject.clone(), headers, value.clone()).await {
                    Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(sequence) => return Ok((sequence, previous)),
                    // (Another node's claim came between: read again.)
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer from JetStream in {CLAIM_TIMEOUT:?}")),
        }
    }
}

fn parse(value: &[u8]) -> Option<Owner> {
    let text = std::str::from_utf8(value).ok()?;
    let (node, conn_id) = text.split_once('\n')?;
    Some(Owner { node: node.to_owned(), conn_id: conn_id.parse().ok()? })
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_records_parse_and_garbage_does_not() {
        let owner = super::parse(b"node-a\n42").expect("an owner");
        assert_eq!((owner.node.as_str(), owner.conn_id), ("node-a", 42));
        assert!(super::parse(b"node-a").is_none());
        assert!(super::parse(b"node-a\nx").is_none());
        assert!(super::parse(&[0xFF, b'\n', b'1']).is_none());
    }
}
