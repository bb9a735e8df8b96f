//! A routing engine that routes nothing, for tests and benchmarks of the parts of the gate that
//! only need an engine to exist (the session registry): links attach, accept what is pushed and
//! never receive anything.

use std::sync::atomic::{AtomicU64, Ordering};

use rumqttd::protocol::Packet;

use super::router_link::{Attached, FromRouter, RouterError, RouterLink, RoutingEngine};

/// See the module documentation. Counts what it was asked to do.
#[derive(Debug, Default)]
pub struct NullEngine {
    pub attached: AtomicU64,
    pub purged: AtomicU64,
    pub injected: AtomicU64,
}

/// A link of [`NullEngine`].
#[derive(Debug, Default)]
pub struct NullLink;

impl RoutingEngine for NullEngine {
    type Link = NullLink;

    async fn attach(&self, _client_id: &str, _persistent: bool) -> Result<Attached<NullLink>, RouterError> {
        self.attached.fetch_add(1, Ordering::Relaxed);
        Ok(Attached { link: NullLink, session_present: false })
    }

    async fn purge(&self, _client_id: &str) {
        self.purged.fetch_add(1, Ordering::Relaxed);
    }

    async fn attach_internal(&self, _name: &str) -> Result<NullLink, RouterError> {
        self.attached.fetch_add(1, Ordering::Relaxed);
        Ok(NullLink)
    }

    fn inject(&self, _message: crate::routing::envelope::Routable) {
        self.injected.fetch_add(1, Ordering::Relaxed);
    }
}

impl RouterLink for NullLink {
    fn push(&mut self, _packet: Packet) {}

    fn flush(&mut self) -> Result<(), RouterError> {
        Ok(())
    }

    async fn recv(&mut self) -> Result<FromRouter, RouterError> {
        std::future::pending().await
    }

    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>> {
        None
    }

    async fn resume(&mut self) -> Result<(), RouterError> {
        Ok(())
    }

    fn detach(&mut self) {}
}
