//! A connection's router link, attached on first use.
//!
//! rumqttd gives every link fixed buffers of about 43 KB (incoming and outgoing queues sized
//! for 200 packets, in-flight and ack logs), whatever the client does. Most connections of a
//! large fleet sit idle, and a client that never publishes or subscribes needs no router state:
//! its will goes out through the system link and `$CONTROL` traffic never reaches the router. So
//! the link is attached when the first packet for the router is pushed; until then pushes are
//! queued, [`RouterLink::recv`] never completes and flushing has nothing to do. The connection
//! attaches (an async step, see `RoutingEngine::attach`) before it next flushes.

use std::future::pending;

use rumqttd::protocol::Packet;

use crate::routing::router_link::{FromRouter, RouterError, RouterLink};

pub struct LazyLink<L> {
    /// Boxed: most of a fleet's connections never attach (an idle connection's state, P6 in
    /// docs/benchmarks.md), and an attached link is a few hundred bytes.
    link: Option<Box<L>>,
    /// Pushed before the link was attached.
    queued: Vec<Packet>,
}

impl<L: RouterLink> LazyLink<L> {
    /// No link yet.
    pub fn unattached() -> Self {
        LazyLink { link: None, queued: Vec::new() }
    }

    /// An attached link (a resumed session whose state lives in the router).
    pub fn attached(link: L) -> Self {
        LazyLink { link: Some(Box::new(link)), queued: Vec::new() }
    }

    pub fn is_attached(&self) -> bool {
        self.link.is_some()
    }

    /// Something waits for the router but there is no link yet.
    pub fn wants_attach(&self) -> bool {
        self.link.is_none() && !self.queued.is_empty()
    }

    /// A SUBSCRIBE waits for the link (see `attach_fence`).
    pub fn queued_subscribe(&self) -> bool {
        self.queued.iter().any(|packet| matches!(packet, Packet::Subscribe(..)))
    }

    /// Installs the link and hands it what was queued (in order; the caller flushes).
    pub fn install(&mut self, mut link: L) {
        for packet in self.queued.drain(..) {
            link.push(packet);
        }
        self.queued = Vec::new();
        self.link = Some(Box::new(link));
    }
}

impl<L: RouterLink> RouterLink for LazyLink<L> {
    fn push(&mut self, packet: Packet) {
        match &mut self.link {
            Some(link) => link.push(packet),
            None => self.queued.push(packet),
        }
    }

    /// Flushes the attached link; queued packets wait for [`LazyLink::install`].
    fn flush(&mut self) -> Result<(), RouterError> {
        match &mut self.link {
            Some(link) => link.flush(),
            None => Ok(()),
        }
    }

    async fn recv(&mut self) -> Result<FromRouter, RouterError> {
        match &mut self.link {
            Some(link) => link.recv().await,
            None => pending().await,
        }
    }

    fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>> {
        self.link.as_mut()?.try_recv()
    }

    async fn resume(&mut self) -> Result<(), RouterError> {
        match &mut self.link {
            Some(link) => link.resume().await,
            None => Ok(()),
        }
    }

    fn detach(&mut self) {
        self.queued.clear();
        if let Some(link) = &mut self.link {
            link.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::protocol::PingReq;
    use std::future::Future;

    /// Records what reaches it.
    #[derive(Default)]
    struct Recorder {
        pushed: Vec<Packet>,
        flushes: usize,
        detached: bool,
    }

    impl RouterLink for Recorder {
        fn push(&mut self, packet: Packet) {
            self.pushed.push(packet);
        }
        fn flush(&mut self) -> Result<(), RouterError> {
            self.flushes += 1;
            Ok(())
        }
        async fn recv(&mut self) -> Result<FromRouter, RouterError> {
            Ok(FromRouter::Nothing)
        }
        fn try_recv(&mut self) -> Option<Result<FromRouter, RouterError>> {
            Some(Ok(FromRouter::Nothing))
        }
        async fn resume(&mut self) -> Result<(), RouterError> {
            Ok(())
        }
        fn detach(&mut self) {
            self.detached = true;
        }
    }

    fn publish(topic: &'static str) -> Packet {
        Packet::Publish(rumqttd::protocol::Publish::new(topic, "x", false), None)
    }

    fn topic_of(packet: &Packet) -> &[u8] {
        match packet {
            Packet::Publish(publish, _) => &publish.topic,
            _ => b"",
        }
    }

    #[test]
    fn an_unattached_link_queues_and_never_receives() {
        let mut link = LazyLink::<Recorder>::unattached();
        assert!(!link.wants_attach());
        assert!(link.flush().is_ok());
        assert!(link.try_recv().is_none());
        {
            let mut recv = std::pin::pin!(link.recv());
            let waker = std::task::Waker::noop();
            assert!(recv.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_pending());
        }
        link.push(publish("a"));
        assert!(link.wants_attach());
    }

    #[test]
    fn install_hands_over_the_queue_in_order_and_later_pushes_go_straight_through() {
        let mut link = LazyLink::unattached();
        link.push(publish("first"));
        link.push(publish("second"));
        link.install(Recorder::default());
        assert!(link.is_attached() && !link.wants_attach());
        link.push(publish("third"));
        link.flush().unwrap();
        let inner = link.link.as_ref().unwrap();
        let topics: Vec<&[u8]> = inner.pushed.iter().map(topic_of).collect();
        assert_eq!(topics, [&b"first"[..], b"second", b"third"]);
        assert_eq!(inner.flushes, 1);
    }

    #[test]
    fn detach_reaches_an_attached_link_and_drops_a_queue() {
        let mut unattached = LazyLink::<Recorder>::unattached();
        unattached.push(Packet::PingReq(PingReq));
        unattached.detach();
        assert!(!unattached.wants_attach());

        let mut attached = LazyLink::attached(Recorder::default());
        attached.detach();
        assert!(attached.link.as_ref().unwrap().detached);
    }
}
