//! The connection's side of persistence (`crate::persistence`): its session's record in the
//! store when it connects, when its subscriptions change and when it leaves, and the packet ids
//! of its client's unfinished QoS 2 messages.

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Connection;
use super::exit::session_outlives;
use crate::gate::saved_session::PendingWill;
use crate::persistence::records::{StoredMessage, StoredSession, StoredWill, unix_ms};
use crate::persistence::sessions::stored_subscriptions;
use crate::routing::router_link::RoutingEngine;

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// The session's record as it stands (`offline_since`: `None` while connected).
    fn stored_session(&self, expiry: Option<u32>, offline_since: Option<u64>) -> StoredSession {
        StoredSession {
            owner: self.username.as_deref().map(str::to_owned),
            subscriptions: stored_subscriptions(self.subscriptions.values()),
            expiry,
            offline_since_unix_ms: offline_since,
        }
    }

    fn session_expiry_setting(&self) -> Option<u32> {
        match self.protocol {
            crate::security::Protocol::V5 if self.session_expiry != u32::MAX => Some(self.session_expiry),
            _ => None,
        }
    }

    /// After CONNACK is prepared: a clean start ends the stored session; a persistent session is
    /// recorded as connected. Returns the stored messages to hand the router for this client.
    pub(super) fn session_connected(&mut self) -> Vec<(u64, StoredMessage)> {
        let outlives = session_outlives(self.protocol, self.clean_start, self.session_expiry);
        let session = self.stored_session(self.session_expiry_setting(), None);
        let Some(persist) = self.persist.as_deref_mut() else { return Vec::new() };
        let mut ops = Vec::new();
        let persistent = outlives || self.persistent_link;
        let replay = persist.persistence.sessions.connected(&mut ops, &self.client_id, persistent, || session);
        persist.persistence.submit(ops);
        replay
    }

    /// With persistence, after [`Connection::session_connected`]: messages moved here with the
    /// session from another node are queued in the store; returns them with their sequences, and
    /// the commit to wait for before the old node may forget them. Without persistence they come
    /// back as they are.
    #[allow(clippy::type_complexity)] // (sequence, message) pairs and the commit's future
    pub(super) fn adopt_moved(
        &mut self,
        messages: Vec<StoredMessage>,
    ) -> Result<(Vec<(u64, StoredMessage)>, BoxFuture<'static, Result<(), String>>), Vec<StoredMessage>> {
        let Some(persist) = self.persist.as_deref_mut() else { return Err(messages) };
        let mut ops = Vec::new();
        let adopted = persist.persistence.sessions.adopt(&mut ops, &self.client_id, messages);
        Ok((adopted, Box::pin(persist.persistence.commit(ops))))
    }

    /// A SUBSCRIBE or UNSUBSCRIBE changed a persistent session's subscriptions: saved with this
    /// read, before its SUBACK/UNSUBACK.
    pub(super) fn session_subscriptions_changed(&mut self) {
        if !session_outlives(self.protocol, self.clean_start, self.session_expiry) {
            return;
        }
        let session = self.stored_session(self.session_expiry_setting(), None);
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.persistence.sessions.update(&mut persist.ops, &self.client_id, session);
        }
    }

    /// The client's QoS 2 PUBLISH `pkid` now waits for its PUBREL (`held`), or got it: for a
    /// persistent session, saved with this read (before the PUBREC, or the PUBCOMP), so that a
    /// PUBLISH sent again after a restart is not routed twice.
    pub(super) fn inbound_qos2_changed(&mut self, pkid: u16, held: bool) {
        if !session_outlives(self.protocol, self.clean_start, self.session_expiry) {
            return;
        }
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.inbound_qos2(&self.client_id, pkid, held);
        }
    }

    /// The client of a persistent session left with a will that waits `delay` seconds (or until
    /// the session ends after `expiry` seconds, if sooner): kept in the store, so that a restart
    /// meanwhile still publishes it when it is due. Saved with the session's record.
    pub(super) fn will_waiting(&mut self, will: &PendingWill, delay: u32, expiry: Option<u32>) {
        let Some(persist) = self.persist.as_deref_mut() else { return };
        let wait = u64::from(expiry.map_or(delay, |expiry| delay.min(expiry)));
        let expiry_secs = will.properties.as_ref().and_then(|p| p.message_expiry_interval);
        let stored = StoredWill {
            message: crate::persistence::stored_message(
                &will.topic,
                &will.payload,
                will.qos,
                &self.client_id,
                None,
                will.properties.as_ref(),
            ),
            retain: will.retain,
            expiry_secs,
            due_unix_ms: unix_ms() + wait * 1000,
            listener: self.listener.id.0,
            username: self.username.as_deref().map(str::to_owned),
        };
        let encoded = crate::persistence::records::encode(&stored);
        persist.ops.push(crate::persistence::Op::Will { client_id: (&self.client_id).into(), will: encoded });
    }

    /// The client left: its session is saved as offline since now (`Some(expiry)`), or ends.
    pub(super) fn session_left(&mut self, outlives: Option<Option<u32>>) {
        let session = outlives.map(|expiry| self.stored_session(expiry, Some(unix_ms())));
        let Some(persist) = self.persist.as_deref_mut() else { return };
        let mut ops = std::mem::take(&mut persist.ops);
        match session {
            Some(session) => persist.persistence.sessions.update(&mut ops, &self.client_id, session),
            None => persist.persistence.sessions.ended(&mut ops, &self.client_id),
        }
        persist.submit_dequeued(&self.client_id);
        persist.persistence.submit(ops);
    }
}
