//! `$CONTROL/...` subscriptions and the delivery of control replies.
//!
//! `$CONTROL` topics never reach the router: requests go to `Security::control` and replies are
//! delivered from here, at QoS 0 without retain or properties, to every connection subscribed to a
//! matching `$CONTROL/...` filter whose `allows(Receive, topic)` passes (docs/compatibility.md §1.1),
//! and only on listeners that serve the endpoint the reply comes from
//! ([`crate::security::Security::serves_control`]).
//! The registry is touched only by `$CONTROL` subscriptions and replies, never by ordinary
//! traffic.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::gate::mailbox::MailSender;
use crate::gate::session::Mail;
use crate::security::{Access, ClientAuthz, ControlReply, ListenerId};

struct Subscriber {
    conn_id: u64,
    /// The listener the subscriber connected through.
    listener: ListenerId,
    filter: String,
    mailbox: MailSender,
    authz: Arc<dyn ClientAuthz>,
}

/// Every live `$CONTROL/...` subscription.
#[derive(Default)]
pub struct ControlSubscriptions {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl ControlSubscriptions {
    fn lock(&self) -> MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(
        &self,
        conn_id: u64,
        listener: ListenerId,
        filter: &str,
        mailbox: &MailSender,
        authz: &Arc<dyn ClientAuthz>,
    ) {
        let mut subscribers = self.lock();
        if !subscribers.iter().any(|s| s.conn_id == conn_id && s.filter == filter) {
            subscribers.push(Subscriber {
                conn_id,
                listener,
                filter: filter.to_owned(),
                mailbox: mailbox.clone(),
                authz: authz.clone(),
            });
        }
    }

    pub fn unsubscribe(&self, conn_id: u64, filter: &str) {
        self.lock().retain(|s| !(s.conn_id == conn_id && s.filter == filter));
    }

    /// The connection is gone.
    pub fn remove_connection(&self, conn_id: u64) {
        self.lock().retain(|s| s.conn_id != conn_id);
    }

    /// Mails `reply` once to each authorised subscriber of a matching filter on a listener for
    /// which `served(listener)` holds; returns how many.
    pub fn deliver(&self, reply: ControlReply, served: impl Fn(ListenerId) -> bool) -> usize {
        let reply = Arc::new(reply);
        let subscribers = self.lock();
        let mut delivered: Vec<u64> = Vec::new();
        for s in subscribers.iter() {
            if delivered.contains(&s.conn_id)
                || !dynsec::topic::topic_matches_filter(&s.filter, &reply.topic)
                || !served(s.listener)
            {
                continue;
            }
            if s.authz.allows(Access::Receive, &reply.topic) && s.mailbox.send(Mail::Control(reply.clone())).is_ok() {
                delivered.push(s.conn_id);
            }
        }
        delivered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str);
    impl ClientAuthz for Only {
        fn allows(&self, _: Access, topic: &str) -> bool {
            topic == self.0
        }
    }

    #[test]
    fn replies_go_once_to_authorised_matching_subscribers() {
        let registry = ControlSubscriptions::default();
        let (tx1, mut rx1) = crate::gate::mailbox::channel();
        let (tx2, mut rx2) = crate::gate::mailbox::channel();
        let allowed: Arc<dyn ClientAuthz> = Arc::new(Only("$CONTROL/x/response"));
        let denied: Arc<dyn ClientAuthz> = Arc::new(Only("other"));
        registry.subscribe(1, ListenerId(0), "$CONTROL/#", &tx1, &allowed);
        registry.subscribe(1, ListenerId(0), "$CONTROL/x/response", &tx1, &allowed);
        registry.subscribe(2, ListenerId(0), "$CONTROL/#", &tx2, &denied);
        let reply = ControlReply { topic: "$CONTROL/x/response".into(), payload: b"{}".to_vec() };
        assert_eq!(registry.deliver(reply.clone(), |_| true), 1);
        assert!(matches!(rx1.try_recv(), Ok(Mail::Control(_))));
        assert!(rx1.try_recv().is_err(), "one copy per connection");
        assert!(rx2.try_recv().is_err(), "not authorised to receive");
        registry.remove_connection(1);
        assert_eq!(registry.deliver(reply, |_| true), 0);
    }

    #[test]
    fn replies_stay_on_the_listeners_that_serve_the_endpoint() {
        let registry = ControlSubscriptions::default();
        let (tx1, mut rx1) = crate::gate::mailbox::channel();
        let (tx2, mut rx2) = crate::gate::mailbox::channel();
        let everything: Arc<dyn ClientAuthz> = Arc::new(Only("$CONTROL/x/response"));
        registry.subscribe(1, ListenerId(0), "$CONTROL/#", &tx1, &everything);
        registry.subscribe(2, ListenerId(1), "$CONTROL/#", &tx2, &everything);
        let reply = ControlReply { topic: "$CONTROL/x/response".into(), payload: b"{}".to_vec() };
        assert_eq!(registry.deliver(reply, |listener| listener == ListenerId(0)), 1);
        assert!(matches!(rx1.try_recv(), Ok(Mail::Control(_))));
        assert!(rx2.try_recv().is_err(), "listener 1 does not serve the endpoint");
    }
}
