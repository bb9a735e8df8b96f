//! Acknowledgements that wait for their read's changes to be durable (persistence, durable mode),
//! while the connection reads on.
//!
//! A read's changes are appended to the write-ahead log at the end of the read; its
//! acknowledgements (PUBACK, PUBREC, SUBACK, ...) are already in the write buffer. Rather than
//! wait there for the sync that covers the record, the connection notes where those
//! acknowledgements begin and goes on reading, routing and logging the next reads (whose
//! records the writer thread syncs as soon as the current sync ends: docs/persistence.md,
//! "Durable mode"). Nothing in the write buffer from the oldest waiting read on is written before
//! that read's answer: acknowledgements go out in the order their packets came, and only once
//! their record is synced. If a save fails, what is held from that read on is withdrawn and the
//! client disconnected, so that it sends again.

use tokio::io::{AsyncRead, AsyncWrite};

use super::exit::Exit;
use super::{CLOSING_WRITE_TIMEOUT, Connection};
use crate::persistence::connection::{ConnectionState, MAX_SAVES_IN_FLIGHT};
use crate::routing::router_link::RoutingEngine;

impl<E: RoutingEngine, S: AsyncRead + AsyncWrite + Unpin + Send> Connection<E, S> {
    /// Saves what this read changed; its acknowledgements, from `acks_from` in the write buffer,
    /// wait for the answer (as do all written after them).
    pub(super) fn save_changes(&mut self, acks_from: usize) -> Result<(), Exit> {
        let Some(persist) = self.persist.as_deref_mut() else { return Ok(()) };
        let Some(mut saved) = persist.save(&self.client_id) else { return Ok(()) };
        match saved.ready() {
            // (Behind reads still waiting, its acknowledgements wait for theirs.)
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => self.not_saved(acks_from, &reason),
            None => {
                persist.saving.push_back((acks_from, saved));
                Ok(())
            }
        }
    }

    /// The oldest waiting read's answer came: its acknowledgements may go (up to the next
    /// waiting read's); answers already there for the next ones are taken too.
    pub(super) fn on_saved(&mut self, mut answer: Result<(), String>) -> Result<(), Exit> {
        loop {
            let Some(persist) = self.persist.as_deref_mut() else { return Ok(()) };
            let Some((from, _)) = persist.saving.pop_front() else { return Ok(()) };
            if let Err(reason) = answer {
                return self.not_saved(from, &reason);
            }
            let Some(next) = persist.saving.front_mut().and_then(|(_, saved)| saved.ready()) else { return Ok(()) };
            answer = next;
        }
    }

    /// Too many reads wait for their sync: read no more until the oldest is answered.
    pub(super) fn saves_full(&self) -> bool {
        self.persist.as_deref().is_some_and(|persist| persist.saving.len() >= MAX_SAVES_IN_FLIGHT)
    }

    /// How much of the write buffer may be written now (the rest waits for a sync).
    pub(super) fn writable(&self) -> usize {
        self.persist.as_deref().and_then(ConnectionState::held_from).unwrap_or(self.write_buf.len())
    }

    /// At the exit: waits for the answers of the reads still waiting (each at most
    /// CLOSING_WRITE_TIMEOUT), so that the last writes include the acknowledgements that are
    /// saved and none that are not.
    pub(super) async fn settle_saves(&mut self) {
        while let Some(persist) = self.persist.as_deref_mut() {
            let Some((from, saved)) = persist.saving.front_mut() else { return };
            let from = *from;
            let answer = tokio::time::timeout(CLOSING_WRITE_TIMEOUT, saved)
                .await
                .unwrap_or_else(|_| Err("not synced in time".to_owned()));
            if let Err(reason) = answer {
                crate::persistence::log_failure(&self.client_id, &reason);
                self.write_buf.truncate(from.min(self.write_buf.len()));
                if let Some(persist) = self.persist.as_deref_mut() {
                    persist.saving.clear();
                }
                return;
            }
            if let Some(persist) = self.persist.as_deref_mut() {
                persist.saving.pop_front();
            }
        }
    }

    /// A save failed: the acknowledgements from `from` on are withdrawn, and the client is
    /// disconnected without them.
    fn not_saved(&mut self, from: usize, reason: &str) -> Result<(), Exit> {
        crate::persistence::log_failure(&self.client_id, reason);
        self.write_buf.truncate(from.min(self.write_buf.len()));
        if let Some(persist) = self.persist.as_deref_mut() {
            persist.saving.clear();
        }
        Err(Exit::NotSaved)
    }
}

/// The answer for the oldest read waiting for its sync (never without one).
pub(super) async fn oldest_saved(persist: Option<&mut ConnectionState>) -> Result<(), String> {
    match persist.and_then(|persist| persist.saving.front_mut()) {
        Some((_, saved)) => saved.await,
        None => std::future::pending().await,
    }
}
