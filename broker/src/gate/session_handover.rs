//! This node's side of a persistent session moving to another node (`cluster::session_moves`,
//! docs/cluster.md "Sessions on takeover"): what it hands over — the session from the registry
//! (`gate::session`), the messages the router queued for it (`gate::queued_messages`) and, with
//! persistence, those its store holds that the router does not (a session restored from the file)
//! — and what happens afterwards: confirmed, the session ends in the store as well; unconfirmed,
//! everything is put back as it was, so that a reconnect here still gets it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use crate::cluster::session_moves::{Handed, SessionSource};
use crate::gate::queued_messages::Rules;
use crate::gate::saved_session::MovedQueue;
use crate::gate::session::Sessions;
use crate::persistence::Persistence;
use crate::persistence::records::StoredMessage;
use crate::routing::router_link::RoutingEngine;

pub struct SessionHandOver<E: RoutingEngine> {
    sessions: Weak<Sessions<E>>,
    persistence: Option<Arc<Persistence>>,
    rules: Rules,
}

impl<E: RoutingEngine> SessionHandOver<E> {
    pub fn new(sessions: Weak<Sessions<E>>, persistence: Option<Arc<Persistence>>, rules: Rules) -> Self {
        SessionHandOver { sessions, persistence, rules }
    }
}

impl<E: RoutingEngine> SessionSource for SessionHandOver<E> {
    fn hand_over(&self, client_id: String) -> BoxFuture<'static, Option<Handed>> {
        let (sessions, persistence, rules) = (self.sessions.upgrade(), self.persistence.clone(), self.rules);
        Box::pin(async move {
            let (session, collected) = sessions?.hand_over(&client_id, rules).await?;
            let mut over_bounds = collected.over_bounds;
            let messages = match &persistence {
                Some(persistence) => {
                    let stored = persistence.sessions.handing_over(&client_id);
                    let (messages, over) = merged(stored, collected.messages, rules);
                    over_bounds += over;
                    messages
                }
                None => collected.messages,
            };
            if over_bounds > 0 {
                tracing::warn!(
                    client_id = %crate::logging::client_text(&client_id),
                    "cluster: {over_bounds} messages queued for a moving session exceed max_queued_messages / max_queued_bytes: not moved"
                );
            }
            Some(Handed { session, messages })
        })
    }

    fn taken(&self, client_id: &str) {
        if let Some(persistence) = &self.persistence {
            let mut ops = Vec::new();
            persistence.sessions.ended(&mut ops, client_id);
            // (The hand-over cancelled a will waiting for its delay, as a reconnect does.)
            ops.push(crate::persistence::Op::Unwill { client_id: client_id.into() });
            persistence.submit(ops);
        }
    }

    fn not_taken(&self, client_id: &str, handed: Handed) {
        let Some(sessions) = self.sessions.upgrade() else { return };
        let Handed { mut session, messages } = handed;
        let unstored: Vec<StoredMessage> = match &self.persistence {
            Some(persistence) => {
                let (stored, unstored): (Vec<_>, Vec<_>) = messages.into_iter().partition(|(seq, _)| seq.is_some());
                let stored = stored.into_iter().filter_map(|(seq, message)| Some((seq?, message))).collect();
                persistence.sessions.handed_back(client_id, stored);
                unstored.into_iter().map(|(_, message)| message).collect()
            }
            None => messages.into_iter().map(|(_, message)| message).collect(),
        };
        if !unstored.is_empty() {
            session.moved = Some(Box::new(MovedQueue { messages: unstored, receipt: None }));
        }
        sessions.hand_back(client_id, session);
    }

    fn rules(&self) -> Rules {
        self.rules
    }
}

/// The store's messages and the router's, one copy of each, in the store's order (then those the
/// store does not hold, in the router's order), within the bounds; and how many were left out.
#[allow(clippy::type_complexity)] // (sequence, message) pairs, as everywhere in persistence
fn merged(
    stored: Vec<(u64, StoredMessage)>,
    from_router: Vec<(Option<u64>, StoredMessage)>,
    rules: Rules,
) -> (Vec<(Option<u64>, StoredMessage)>, usize) {
    let mut by_sequence: BTreeMap<u64, StoredMessage> = stored.into_iter().collect();
    let mut unstored = Vec::new();
    for (sequence, message) in from_router {
        match sequence {
            Some(sequence) => {
                by_sequence.entry(sequence).or_insert(message);
            }
            None => unstored.push((None, message)),
        }
    }
    let all = by_sequence.into_iter().map(|(sequence, message)| (Some(sequence), message)).chain(unstored);
    let (mut kept, mut bytes, mut over) = (Vec::new(), 0u64, 0usize);
    for (sequence, message) in all {
        let size = message.payload.len() as u64;
        if (rules.max_messages > 0 && kept.len() >= rules.max_messages)
            || (rules.max_bytes > 0 && bytes + size > rules.max_bytes)
        {
            over += 1;
            continue;
        }
        bytes += size;
        kept.push((sequence, message));
    }
    (kept, over)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str) -> StoredMessage {
        crate::persistence::stored_message(topic, b"m", 1, "p", None, None)
    }

    #[test]
    fn the_store_and_the_router_merge_in_the_stores_order_once_each_within_the_bounds() {
        let stored = vec![(2, message("b")), (5, message("e"))];
        let from_router =
            vec![(Some(3), message("c")), (Some(2), message("b")), (None, message("z")), (Some(1), message("a"))];
        let rules = Rules { max_messages: 4, ..Rules::default() };
        let (kept, over) = merged(stored, from_router, rules);
        let topics: Vec<_> = kept.iter().map(|(_, m)| m.topic.as_str()).collect();
        assert_eq!((topics, over), (vec!["a", "b", "c", "e"], 1));
    }
}
