//! The `$SYS/broker/...` topics of mosquitto 2.0: their current values, the subscriptions to
//! them, and the task that refreshes them every `sys_interval` seconds from
//! [`crate::metrics`] and the session registry.
//!
//! The router refuses `$` filters and never matches `$` topics (docs/rumqttd.md,
//! defect 9), so `$SYS` is served by the gate, as `$CONTROL` is (see [`crate::gate::control`]): the
//! values are kept here as retained messages; a new `$SYS` subscription receives the matching
//! ones with the retain flag, and each change goes to the matching subscribers without it; both at
//! QoS 0, and only where `allows(Receive, topic)` passes. As in mosquitto 2.0, `version` is
//! published once at start, `uptime` at every refresh, every other value when it changed, the
//! load averages when they moved by 0.01 or more; and nothing at all with `sys_interval 0`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::gate::mailbox::{Mail, MailSender};
use crate::metrics::{METRICS, Metrics};
use crate::security::{Access, ClientAuthz};

pub use crate::gate::mailbox::SysMessage;

struct Subscriber {
    conn_id: u64,
    filter: String,
    mailbox: MailSender,
    authz: Arc<dyn ClientAuthz>,
}

#[derive(Default)]
struct State {
    values: BTreeMap<Arc<str>, Bytes>,
    subscribers: Vec<Subscriber>,
}

/// The `$SYS` values and their subscribers. Touched by `$SYS` subscriptions and refreshes only.
#[derive(Default)]
pub struct SysTree {
    state: Mutex<State>,
}

impl SysTree {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a `$` filter of a connection; `send_retained`: returns the matching values (a
    /// SUBSCRIBE, as opposed to a resumed session), for the connection to write after its SUBACK.
    pub fn subscribe(
        &self,
        conn_id: u64,
        filter: &str,
        mailbox: &MailSender,
        authz: &Arc<dyn ClientAuthz>,
        send_retained: bool,
    ) -> Vec<Arc<SysMessage>> {
        let mut state = self.lock();
        if !state.subscribers.iter().any(|s| s.conn_id == conn_id && s.filter == filter) {
            state.subscribers.push(Subscriber {
                conn_id,
                filter: filter.to_owned(),
                mailbox: mailbox.clone(),
                authz: authz.clone(),
            });
        }
        if !send_retained {
            return Vec::new();
        }
        state
            .values
            .iter()
            .filter(|(topic, _)| {
                dynsec::topic::topic_matches_filter(filter, topic) && authz.allows(Access::Receive, topic)
            })
            .map(|(topic, payload)| {
                Arc::new(SysMessage { topic: topic.clone(), payload: payload.clone(), retain: true })
            })
            .collect()
    }

    pub fn unsubscribe(&self, conn_id: u64, filter: &str) {
        self.lock().subscribers.retain(|s| !(s.conn_id == conn_id && s.filter == filter));
    }

    /// The connection is gone.
    pub fn remove_connection(&self, conn_id: u64) {
        self.lock().subscribers.retain(|s| s.conn_id != conn_id);
    }

    /// Number of `$SYS` values kept (they are retained messages, as in mosquitto).
    pub fn retained_count(&self) -> (u64, u64) {
        let state = self.lock();
        (state.values.len() as u64, state.values.values().map(|p| p.len() as u64).sum())
    }

    /// Stores `payload` as the value of `topic` and mails it once to each authorised subscriber
    /// of a matching filter; returns how many.
    pub fn publish(&self, topic: &str, payload: String) -> usize {
        let mut state = self.lock();
        let topic: Arc<str> = match state.values.get_key_value(topic) {
            Some((known, _)) => known.clone(),
            None => Arc::from(topic),
        };
        let payload = Bytes::from(payload);
        state.values.insert(topic.clone(), payload.clone());
        let message = Arc::new(SysMessage { topic: topic.clone(), payload, retain: false });
        let mut delivered: Vec<u64> = Vec::new();
        for s in &state.subscribers {
            if delivered.contains(&s.conn_id) || !dynsec::topic::topic_matches_filter(&s.filter, &topic) {
                continue;
            }
            if s.authz.allows(Access::Receive, &topic) && s.mailbox.send(Mail::Sys(message.clone())).is_ok() {
                delivered.push(s.conn_id);
            }
        }
        delivered.len()
    }
}

/// What the refresh reads about clients from the session registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCounts {
    /// Clients with a live connection.
    pub connected: u64,
    /// Live clients and saved persistent sessions.
    pub total: u64,
}

/// The counters a load average is computed from, in the order of [`LOADS`].
fn load_sources(metrics: &Metrics) -> [u64; 9] {
    [
        Metrics::get(&metrics.packets_received),
        Metrics::get(&metrics.packets_sent),
        Metrics::get(&metrics.publish_dropped),
        Metrics::get(&metrics.publish_received),
        Metrics::get(&metrics.publish_sent),
        Metrics::get(&metrics.bytes_received),
        Metrics::get(&metrics.bytes_sent),
        Metrics::get(&metrics.sockets_accepted),
        Metrics::get(&metrics.connects_received),
    ]
}

/// `$SYS/broker/load/<name>/{1min,5min,15min}`, mosquitto's order.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/dropped",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "sockets",
    "connections",
];
const LOAD_WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The refresh: remembers what was published last, to publish changes only.
pub struct Refresher {
    tree: Arc<SysTree>,
    started: Instant,
    last_refresh: Instant,
    last_sources: [u64; 9],
    loads: [[f64; 3]; 9],
    published: BTreeMap<&'static str, String>,
    clients_maximum: u64,
}

impl Refresher {
    /// Publishes the version and the first values (load averages 0.00), as mosquitto does at
    /// start.
    pub fn start(tree: Arc<SysTree>, clients: ClientCounts) -> Refresher {
        let now = Instant::now();
        tree.publish("$SYS/broker/version", format!("dynsec-broker version {}", env!("CARGO_PKG_VERSION")));
        let mut refresher = Refresher {
            tree,
            started: now,
            last_refresh: now,
            last_sources: load_sources(&METRICS),
            loads: [[0.0; 3]; 9],
            published: BTreeMap::new(),
            clients_maximum: 0,
        };
        refresher.publish_values(clients);
        for (name, load) in LOADS.iter().zip(refresher.loads) {
            for ((window, _), value) in LOAD_WINDOWS.iter().zip(load) {
                refresher.tree.publish(&format!("$SYS/broker/load/{name}/{window}"), format!("{value:.2}"));
            }
        }
        refresher
    }

    /// One refresh: uptime, the load averages that moved, the values that changed.
    pub fn refresh(&mut self, clients: ClientCounts) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_refresh).as_secs_f64();
        if elapsed > 0.0 {
            let sources = load_sources(&METRICS);
            for (index, name) in LOADS.iter().enumerate() {
                // Events per minute over the last interval, folded into an exponentially
                // decaying average per window (mosquitto's formula).
                let rate = sources[index].wrapping_sub(self.last_sources[index]) as f64 * 60.0 / elapsed;
                for (window_index, (window, seconds)) in LOAD_WINDOWS.iter().enumerate() {
                    let current = self.loads[index][window_index];
                    let next = rate + (-elapsed / seconds).exp() * (current - rate);
                    if (next - current).abs() >= 0.01 {
                        self.tree.publish(&format!("$SYS/broker/load/{name}/{window}"), format!("{next:.2}"));
                    }
                    self.loads[index][window_index] = next;
                }
            }
            self.last_sources = sources;
            self.last_refresh = now;
        }
        self.publish_values(clients);
    }

    fn publish_values(&mut self, clients: ClientCounts) {
        let uptime = self.started.elapsed().as_secs();
        self.tree.publish("$SYS/broker/uptime", format!("{uptime} seconds"));
        let disconnected = clients.total.saturating_sub(clients.connected);
        let (router_retained, router_retained_bytes) = METRICS.retained();
        let (sys_retained, sys_retained_bytes) = self.tree.retained_count();
        let retained = router_retained + sys_retained;
        let stored_bytes = router_retained_bytes + sys_retained_bytes;
        let (subscriptions, shared_subscriptions) = METRICS.subscriptions();
        let m = &METRICS;
        let values: [(&'static str, u64); 21] = [
            ("$SYS/broker/clients/total", clients.total),
            ("$SYS/broker/clients/inactive", disconnected),
            ("$SYS/broker/clients/disconnected", disconnected),
            ("$SYS/broker/clients/active", clients.connected),
            ("$SYS/broker/clients/connected", clients.connected),
            ("$SYS/broker/clients/expired", Metrics::get(&m.clients_expired)),
            ("$SYS/broker/messages/stored", retained),
            ("$SYS/broker/store/messages/count", retained),
            ("$SYS/broker/store/messages/bytes", stored_bytes),
            ("$SYS/broker/subscriptions/count", subscriptions),
            ("$SYS/broker/shared_subscriptions/count", shared_subscriptions),
            ("$SYS/broker/retained messages/count", retained),
            ("$SYS/broker/messages/received", Metrics::get(&m.packets_received)),
            ("$SYS/broker/messages/sent", Metrics::get(&m.packets_sent)),
            ("$SYS/broker/publish/messages/dropped", Metrics::get(&m.publish_dropped)),
            ("$SYS/broker/publish/messages/received", Metrics::get(&m.publish_received)),
            ("$SYS/broker/publish/messages/sent", Metrics::get(&m.publish_sent)),
            ("$SYS/broker/bytes/received", Metrics::get(&m.bytes_received)),
            ("$SYS/broker/bytes/sent", Metrics::get(&m.bytes_sent)),
            ("$SYS/broker/publish/bytes/received", Metrics::get(&m.publish_bytes_received)),
            ("$SYS/broker/publish/bytes/sent", Metrics::get(&m.publish_bytes_sent)),
        ];
        for (topic, value) in values {
            let text = value.to_string();
            if self.published.get(topic) != Some(&text) {
                self.tree.publish(topic, text.clone());
                self.published.insert(topic, text);
            }
        }
        if clients.total > self.clients_maximum {
            // Only when it rises (so not at all while nobody ever connected), as mosquitto.
            self.clients_maximum = clients.total;
            self.tree.publish("$SYS/broker/clients/maximum", clients.total.to_string());
        }
    }
}

/// Publishes the `$SYS` tree every `interval` until the task is aborted.
pub async fn run(tree: Arc<SysTree>, interval: Duration, clients: impl Fn() -> ClientCounts) {
    let mut refresher = Refresher::start(tree, clients());
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        refresher.refresh(clients());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str);
    impl ClientAuthz for Only {
        fn allows(&self, _: Access, topic: &str) -> bool {
            topic.starts_with(self.0)
        }
    }

    fn topics(rx: &mut crate::gate::mailbox::MailReceiver) -> Vec<(String, bool)> {
        let mut seen = Vec::new();
        while let Ok(Mail::Sys(message)) = rx.try_recv() {
            seen.push((message.topic.to_string(), message.retain));
        }
        seen
    }

    #[test]
    fn new_subscribers_get_the_retained_values_then_changes() {
        let tree = SysTree::default();
        tree.publish("$SYS/broker/version", "v".into());
        let (tx, mut rx) = crate::gate::mailbox::channel();
        let all: Arc<dyn ClientAuthz> = Arc::new(Only("$SYS/"));
        let retained = tree.subscribe(1, "$SYS/#", &tx, &all, true);
        let retained: Vec<(String, bool)> = retained.iter().map(|m| (m.topic.to_string(), m.retain)).collect();
        assert_eq!(retained, [("$SYS/broker/version".to_string(), true)]);
        assert!(topics(&mut rx).is_empty(), "retained values are returned, for after the SUBACK");
        assert!(tree.subscribe(1, "$SYS/broker/+", &tx, &all, false).is_empty());
        assert_eq!(tree.publish("$SYS/broker/uptime", "1 seconds".into()), 1, "once per connection");
        assert_eq!(topics(&mut rx), [("$SYS/broker/uptime".to_string(), false)]);
        tree.remove_connection(1);
        assert_eq!(tree.publish("$SYS/broker/uptime", "2 seconds".into()), 0);
    }

    #[test]
    fn the_receive_acl_is_applied() {
        let tree = SysTree::default();
        tree.publish("$SYS/broker/version", "v".into());
        let (tx, mut rx) = crate::gate::mailbox::channel();
        let denied: Arc<dyn ClientAuthz> = Arc::new(Only("other"));
        assert!(tree.subscribe(2, "$SYS/#", &tx, &denied, true).is_empty());
        assert_eq!(tree.publish("$SYS/broker/uptime", "1 seconds".into()), 0);
        assert!(topics(&mut rx).is_empty());
    }

    #[test]
    fn the_first_refresh_publishes_every_topic_and_later_ones_only_changes() {
        let tree = Arc::new(SysTree::default());
        let mut refresher = Refresher::start(tree.clone(), ClientCounts { connected: 1, total: 1 });
        let (count, _) = tree.retained_count();
        assert_eq!(count, 1 + 1 + 22 + 27, "version, uptime, values (maximum included), load averages");
        let (tx, mut rx) = crate::gate::mailbox::channel();
        let all: Arc<dyn ClientAuthz> = Arc::new(Only("$SYS/"));
        let _ = tree.subscribe(1, "$SYS/broker/clients/#", &tx, &all, false);
        refresher.refresh(ClientCounts { connected: 2, total: 3 });
        let mut changed: Vec<String> = topics(&mut rx).into_iter().map(|(t, _)| t).collect();
        changed.sort();
        assert_eq!(
            changed,
            [
                "$SYS/broker/clients/active",
                "$SYS/broker/clients/connected",
                "$SYS/broker/clients/disconnected",
                "$SYS/broker/clients/inactive",
                "$SYS/broker/clients/maximum",
                "$SYS/broker/clients/total",
            ]
        );
        refresher.refresh(ClientCounts { connected: 1, total: 1 });
        let changed: Vec<String> = topics(&mut rx).into_iter().map(|(t, _)| t).collect();
        assert!(!changed.contains(&"$SYS/broker/clients/maximum".to_string()), "the maximum only rises");
    }
}
