//! Sessions by client id: one owner per client id at a time, takeover, the gate's share of a
//! persistent session while its client is offline, will delay, session expiry and kicks.
//!
//! The registry is one mutex-protected map, touched at connect, disconnect, kicks and timers —
//! never on the publish or delivery path. Beside it, an index from username to the client ids of
//! live connections lets a kick find its targets at a cost that follows the number of clients it
//! affects, not the number of sessions (a role change may kick a thousand users on a broker with
//! a hundred thousand sessions, and every CONNECT waits for the lock meanwhile). A connection *claims* its client id (kicking a live
//! owner with "session taken over" and waiting, bounded, for it to leave) and *releases* it on
//! exit, handing back what a persistent session must remember (its subscriptions and the packet
//! ids of unfinished inbound and outbound QoS 2 messages) together with its will.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::routing::router_link::RoutingEngine;
use crate::security::{Access, KickTarget};

pub use super::mailbox::{KickReason, Mail, MailSender};
pub use super::saved_session::{PendingWill, Release, SavedSession, Subscription, SubscriptionKind};

/// The handle of a live connection.
struct Live {
    conn_id: u64,
    username: Option<Arc<str>>,
    /// Also how a takeover learns that the connection has fully left: its receiver is dropped
    /// with the connection ([`MailSender::closed`]; a watch channel of its own would be 336
    /// more bytes per connection, docs/benchmarks.md).
    mailbox: MailSender,
    /// When this connection took the client id (the console's connected-clients view).
    since: std::time::SystemTime,
    /// The client's address.
    peer: std::net::IpAddr,
}

#[derive(Default)]
struct Entry {
    /// Bumped by every claim; a claimant that finds it changed was superseded.
    claim: u64,
    live: Option<Live>,
    /// Boxed: most entries are a live clean session without any of it, and inline it was 88
    /// bytes of every entry and of the registry's spare slots (docs/benchmarks.md, "The
    /// connection's own state and task").
    rest: Option<Box<Rest>>,
}

/// What an entry holds besides its live connection: a saved session, timers, a purge.
#[derive(Default)]
struct Rest {
    saved: Option<SavedSession>,
    will_timer: Option<(JoinHandle<()>, Arc<PendingWill>)>,
    expiry_timer: Option<JoinHandle<()>>,
    /// The router is forgetting an expired session: a new claim waits for it (a purge builds a
    /// link with the same client id, which would take over a link attached meanwhile).
    purging: Option<watch::Receiver<()>>,
    /// The last connection's id and address once it has left, kept with a saved session:
    /// dynsec's `connections` lists persistent sessions whose client is offline too, as
    /// mosquitto 2.1.2 does.
    last_peer: Option<(u64, std::net::IpAddr)>,
}

impl Entry {
    /// The username of the connected client, or of the saved session's owner; `None` when the
    /// entry holds neither (a will or a purge still pending).
    fn known_as(&self) -> Option<Option<Arc<str>>> {
        match (&self.live, self.saved()) {
            (Some(live), _) => Some(live.username.clone()),
            (None, Some(saved)) => Some(saved.owner.clone()),
            (None, None) => None,
        }
    }

    /// The latest connection's id and address (live, or the last one of an offline session).
    fn last_peer(&self) -> Option<(u64, std::net::IpAddr)> {
        match &self.live {
            Some(live) => Some((live.conn_id, live.peer)),
            None => self.rest.as_ref().and_then(|rest| rest.last_peer),
        }
    }

    fn saved(&self) -> Option<&SavedSession> {
        self.rest.as_ref().and_then(|rest| rest.saved.as_ref())
    }

    /// The rest, made if there was none.
    fn rest(&mut self) -> &mut Rest {
        self.rest.get_or_insert_default()
    }

    fn take_saved(&mut self) -> Option<SavedSession> {
        self.rest.as_mut().and_then(|rest| rest.saved.take())
    }

    fn take_will_timer(&mut self) -> Option<(JoinHandle<()>, Arc<PendingWill>)> {
        self.rest.as_mut().and_then(|rest| rest.will_timer.take())
    }

    fn take_expiry_timer(&mut self) -> Option<JoinHandle<()>> {
        self.rest.as_mut().and_then(|rest| rest.expiry_timer.take())
    }

    fn is_empty(&self) -> bool {
        self.live.is_none()
            && self.rest.as_ref().is_none_or(|rest| {
                rest.saved.is_none()
                    && rest.will_timer.is_none()
                    && rest.expiry_timer.is_none()
                    && rest.purging.is_none()
            })
    }
}

/// The client ids of live connections, by username (`None`: without a username).
#[derive(Default)]
struct LiveIndex {
    by_username: HashMap<Arc<str>, HashSet<Arc<str>>>,
    anonymous: HashSet<Arc<str>>,
}

impl LiveIndex {
    fn set(&mut self, username: Option<&Arc<str>>) -> Option<&mut HashSet<Arc<str>>> {
        match username {
            None => Some(&mut self.anonymous),
            Some(name) => self.by_username.get_mut(name),
        }
    }

    fn insert(&mut self, username: Option<&Arc<str>>, client_id: &Arc<str>) {
        match username {
            None => self.anonymous.insert(client_id.clone()),
            Some(name) => self.by_username.entry(name.clone()).or_default().insert(client_id.clone()),
        };
    }

    fn remove(&mut self, username: Option<&Arc<str>>, client_id: &Arc<str>) {
        if let Some(ids) = self.set(username) {
            ids.remove(client_id);
            if ids.is_empty()
                && let Some(name) = username
            {
                self.by_username.remove(name);
            }
        }
    }

    /// The client ids of the live connections of `username`.
    fn client_ids(&self, username: Option<&str>) -> Vec<Arc<str>> {
        let ids = match username {
            None => Some(&self.anonymous),
            Some(name) => self.by_username.get(name),
        };
        ids.map(|ids| ids.iter().cloned().collect()).unwrap_or_default()
    }
}

/// What the registry's mutex protects.
#[derive(Default)]
struct Registry {
    entries: HashMap<Arc<str>, Entry>,
    live: LiveIndex,
}

impl Registry {
    /// Installs or removes the live connection of `client_id`'s entry, keeping the index in step.
    fn set_live(&mut self, client_id: &Arc<str>, live: Option<Live>) {
        let Some(entry) = self.entries.get_mut(client_id) else { return };
        if let Some(old) = entry.live.take() {
            self.live.remove(old.username.as_ref(), client_id);
            if live.is_none() {
                entry.rest().last_peer = Some((old.conn_id, old.peer));
            }
        }
        if let Some(live) = &live {
            self.live.insert(live.username.as_ref(), client_id);
        }
        entry.live = live;
    }
}

/// One known client as [`Sessions::client_overview`] shows it.
#[derive(Debug, Clone)]
pub struct ClientOverview {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub address: std::net::IpAddr,
    /// When its live connection started; `None`: offline, with a saved session.
    pub since: Option<std::time::SystemTime>,
}

/// A successful claim.
pub struct Claim {
    /// The saved session, unless the new connection asked for a clean start.
    pub saved: Option<SavedSession>,
    /// A clean start discarded a saved session whose state lives in the router: purge it.
    pub discarded_routed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("another connection claimed the client id meanwhile")]
pub struct Superseded;

/// What is told when a saved session expires.
type ExpiryHook = Box<dyn Fn(&str) + Send + Sync>;
/// What is told of a will about to be routed: (client id, will) → the envelope's store sequence.
pub type WillHook = Box<dyn Fn(&str, &PendingWill) -> Option<u64> + Send + Sync>;

/// The registry. See the module documentation.
pub struct Sessions<E: RoutingEngine> {
    registry: Mutex<Registry>,
    engine: Arc<E>,
    claims: AtomicU64,
    /// How long a takeover waits for the previous connection to leave.
    takeover_wait: Duration,
    /// Told when a saved session expires (persistence forgets it too).
    on_expiry: std::sync::OnceLock<ExpiryHook>,
    /// Told of every will about to be routed (persistence records it); returns the envelope's
    /// store sequence.
    on_will: std::sync::OnceLock<WillHook>,
    /// Cluster mode: wills go to the other nodes too, and so does each claim of a client id
    /// (docs/cluster.md).
    cluster: std::sync::OnceLock<Arc<crate::cluster::messages::MessageBus>>,
}

impl<E: RoutingEngine> Sessions<E> {
    pub fn new(engine: Arc<E>, takeover_wait: Duration) -> Arc<Self> {
        Arc::new(Sessions {
            registry: Mutex::default(),
            engine,
            claims: AtomicU64::new(1),
            takeover_wait,
            on_expiry: std::sync::OnceLock::new(),
            on_will: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Sets what is told of every will about to be routed (once, at start).
    pub fn on_will(&self, hook: WillHook) {
        let _ = self.on_will.set(hook);
    }

    /// Publishes `will` here (recorded by persistence), and in a cluster on the other nodes.
    fn publish_will(&self, client_id: &str, will: &PendingWill) {
        let record = self.on_will.get().map(|hook| move |will: &PendingWill| hook(client_id, will));
        if publish_will(&*self.engine, will, record)
            && let Some(bus) = self.cluster.get()
        {
            let expiry = will.properties.as_ref().and_then(|p| p.message_expiry_interval);
            let topic = Bytes::copy_from_slice(will.topic.as_bytes());
            // (Nobody waits for a will's confirmation.)
            bus.forward(
                &topic,
                &will.payload,
                will.qos,
                will.retain,
                expiry,
                will.properties.as_ref(),
                crate::cluster::reliable::Confirm::None,
            );
        }
    }

    /// Sets what is told when a saved session expires (once, at start).
    pub fn on_expiry(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.on_expiry.set(Box::new(hook));
    }

    /// At start, before clients connect: a persistent session restored from the persistence
    /// store, offline, expiring after `expires_in` (`None`: when its client comes back).
    pub fn restore(self: &Arc<Self>, client_id: &str, saved: SavedSession, expires_in: Option<Duration>) {
        let client_id: Arc<str> = Arc::from(client_id);
        let mut registry = self.lock();
        let entry = registry.entries.entry(client_id.clone()).or_default();
        entry.rest().saved = Some(saved);
        if let Some(wait) = expires_in {
            let this = self.clone();
            let claim = entry.claim;
            entry.rest().expiry_timer = Some(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                this.expire(&client_id, claim).await;
            }));
        }
    }

    /// At start, after [`Sessions::restore`]: a will restored from the persistence store, published
    /// after `wait` unless its client comes back first (a claim cancels it, as for a will whose
    /// delay began in this run).
    pub fn restore_will(self: &Arc<Self>, client_id: &str, will: PendingWill, wait: Duration) {
        let client_id: Arc<str> = Arc::from(client_id);
        let mut registry = self.lock();
        let entry = registry.entries.entry(client_id.clone()).or_default();
        let will = Arc::new(will);
        let (this, claim, timer_will) = (self.clone(), entry.claim, will.clone());
        let id = client_id.clone();
        entry.rest().will_timer = Some((
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                this.delayed_will_due(&id, claim, &timer_will);
            }),
            will,
        ));
    }

    /// Cluster mode: from now on every will is also sent to the other nodes, and every claim of
    /// a client id is announced to them (a connection with that id there is taken over).
    pub fn join_cluster(&self, bus: Arc<crate::cluster::messages::MessageBus>) {
        let _ = self.cluster.set(bus);
    }

    /// Another node claimed `client_id`: a live connection with it here is taken over (v5
    /// DISCONNECT 0x8E, its will published), as a second connection on this node would.
    /// `keep`: the connection the cluster records as the owner, when it is on this node.
    pub fn taken_over_elsewhere(&self, client_id: &str, keep: Option<u64>) -> bool {
        let registry = self.lock();
        let live = registry.entries.get(client_id).and_then(|entry| entry.live.as_ref());
        live.filter(|live| Some(live.conn_id) != keep)
            .is_some_and(|live| live.mailbox.send(Mail::Kick(KickReason::Takeover)).is_ok())
    }

    /// A session moved here from another node (`cluster::session_moves`): it replaces a session
    /// this node saved for the id before (the other node's is the later one).
    async fn moved_in(&self, client_id: &Arc<str>, moved: SavedSession) {
        let replaced_routed = {
            let mut registry = self.lock();
            let entry = registry.entries.entry(client_id.clone()).or_default();
            entry.rest().saved.replace(moved).is_some_and(|old| old.routed)
        };
        if replaced_routed {
            // What the router kept of the replaced session is not this one's.
            self.engine.purge(client_id).await;
        }
    }

    /// Another node claimed `client_id` and asks for its session (`cluster::session_moves`): a
    /// live connection here is taken over (and awaited), then the saved session leaves the
    /// registry with the messages the router queued for it (`gate::queued_messages`, within
    /// `rules`), and the router forgets it. A will waiting for its delay is cancelled, as when
    /// the client comes back on this node. The persistence store still holds the session: the
    /// caller ends it there once the other node confirmed, or hands it back ([`Sessions::hand_back`]).
    pub async fn hand_over(
        self: &Arc<Self>,
        client_id: &str,
        rules: crate::gate::queued_messages::Rules,
    ) -> Option<(SavedSession, crate::gate::queued_messages::Collected)> {
        let client_id: Arc<str> = Arc::from(client_id);
        let live = {
            let registry = self.lock();
            registry.entries.get(&client_id).and_then(|entry| entry.live.as_ref()).map(|live| {
                let _ = live.mailbox.send(Mail::Kick(KickReason::Takeover));
                live.mailbox.clone()
            })
        };
        if let Some(done) = live {
            let _ = tokio::time::timeout(self.takeover_wait, done.closed()).await;
        }
        let (purged, purging) = watch::channel(());
        let saved = {
            let mut registry = self.lock();
            let entry = registry.entries.get_mut(&client_id)?;
            if entry.live.is_some() {
                return None; // (a connection here claimed it meanwhile)
            }
            let saved = entry.take_saved()?;
            if let Some(timer) = entry.take_expiry_timer() {
                timer.abort();
            }
            if let Some((timer, _)) = entry.take_will_timer() {
                timer.abort();
            }
            entry.rest().purging = Some(purging);
            saved
        };
        // (A claim here waits for `purging` meanwhile: nobody else attaches with the id.)
        let collected = if saved.routed {
            crate::gate::queued_messages::collect(&*self.engine, &client_id, &saved, rules).await
        } else {
            crate::gate::queued_messages::Collected::default()
        };
        self.engine.purge(&client_id).await;
        let mut registry = self.lock();
        if let Some(entry) = registry.entries.get_mut(&client_id) {
            entry.rest().purging = None;
            if entry.is_empty() {
                registry.entries.remove(&client_id);
            }
        }
        drop(purged);
        let mut saved = saved;
        saved.routed = false;
        Some((saved, collected))
    }

    /// The node that asked for `client_id`'s session did not confirm it took it
    /// (`cluster::session_moves`): the session stays here, offline, as it was handed over
    /// (its queue, if any, in `session.moved`), unless the id was claimed here meanwhile.
    pub fn hand_back(&self, client_id: &str, session: SavedSession) {
        let client_id: Arc<str> = Arc::from(client_id);
        let mut registry = self.lock();
        let entry = registry.entries.entry(client_id).or_default();
        if entry.live.is_none() && entry.saved().is_none() {
            entry.rest().saved = Some(session);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims `client_id` for a new connection: a live owner is taken over (and awaited), a
    /// pending will is cancelled (resumed session) or published (clean start), the expiry timer
    /// stops. Returns the saved session unless `clean_start`, or unless it was saved under another
    /// username than `username`: then the session ends as for a clean start, because its
    /// subscriptions were granted to someone else (mosquitto 2.0 hands them over).
    #[allow(clippy::too_many_arguments)] // the parts of one connection's identity
    pub async fn claim(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        conn_id: u64,
        username: Option<Arc<str>>,
        peer: std::net::IpAddr,
        mailbox: MailSender,
        clean_start: bool,
    ) -> Result<Claim, Superseded> {
        let claim = self.claims.fetch_add(1, Ordering::Relaxed);
        if let Some(bus) = self.cluster.get() {
            // Recorded before the connection is installed here: a node that reads the record
            // afterwards sees this claim or a later one (`cluster::client_ids`).
            if let Some(node) = bus.claim(client_id, conn_id).await {
                // The id was another node's: its session moves here (`cluster::session_moves`),
                // and ends there in any case (a clean start discards it, below).
                if let Some(moved) = bus.fetch_session(&node, client_id).await {
                    self.moved_in(client_id, moved).await;
                }
            }
        }
        let (previous, purging) = {
            let mut registry = self.lock();
            let entry = registry.entries.entry(client_id.clone()).or_default();
            entry.claim = claim;
            let previous = entry.live.as_ref().map(|live| {
                let _ = live.mailbox.send(Mail::Kick(KickReason::Takeover));
                live.mailbox.clone()
            });
            (previous, entry.rest.as_ref().and_then(|rest| rest.purging.clone()))
        };
        // The old connection is gone once its mailbox is (after it released the id); an expiry
        // purge once its sender is dropped (the router forgot the session).
        if let Some(previous) = previous {
            let _ = tokio::time::timeout(self.takeover_wait, previous.closed()).await;
        }
        if let Some(mut purging) = purging {
            let _ = tokio::time::timeout(self.takeover_wait, purging.changed()).await;
        }
        let will_to_publish = {
            let mut registry = self.lock();
            let entry = registry.entries.entry(client_id.clone()).or_default();
            // 0: the previous owner left nothing behind and its entry was removed meanwhile.
            if entry.claim != claim && entry.claim != 0 {
                return Err(Superseded);
            }
            entry.claim = claim;
            if let Some(timer) = entry.take_expiry_timer() {
                timer.abort();
            }
            let saved = entry.take_saved();
            let foreign = saved.as_ref().is_some_and(|saved| saved.owner != username);
            let fresh = clean_start || foreign;
            let will = entry.take_will_timer().and_then(|(timer, will)| {
                timer.abort();
                fresh.then_some(will)
            });
            let since = std::time::SystemTime::now();
            registry.set_live(client_id, Some(Live { conn_id, username, mailbox, since, peer }));
            (will, saved, fresh, foreign)
        };
        let (will, saved, fresh, foreign) = will_to_publish;
        if foreign {
            tracing::info!(
                client_id = %crate::logging::client_text(client_id),
                "the saved session belongs to another username: starting a clean session"
            );
        }
        let (saved, discarded_routed) = match saved {
            Some(mut saved) if fresh => {
                // A session moved from another node ends here: that node may forget it too.
                if let Some(receipt) = saved.moved.take().and_then(|moved| moved.receipt) {
                    receipt.confirm();
                }
                (None, saved.routed)
            }
            saved => (saved, false),
        };
        if let Some(will) = will {
            self.publish_will(client_id, &will);
        }
        if let Some(bus) = self.cluster.get() {
            bus.claimed(client_id, conn_id);
        }
        Ok(Claim { saved, discarded_routed })
    }

    /// A connection leaves. Publishes or schedules its will, keeps or forgets its session.
    pub fn release(self: &Arc<Self>, client_id: &Arc<str>, conn_id: u64, release: Release) {
        if let Some(bus) = self.cluster.get() {
            bus.released(client_id, conn_id);
        }
        let mut will_now = None;
        {
            let mut registry = self.lock();
            let Some(entry) = registry.entries.get_mut(client_id) else { return };
            if entry.live.as_ref().is_some_and(|live| live.conn_id == conn_id) {
                registry.set_live(client_id, None);
            } else if entry.live.is_some() {
                // A takeover that stopped waiting already installed the new owner: only its will.
                if let Some((will, _)) = release.will {
                    will_now = Some(will);
                }
                drop(registry);
                if let Some(will) = will_now {
                    self.publish_will(client_id, &will);
                }
                return;
            }
            let entries = &mut registry.entries;
            let Some(entry) = entries.get_mut(client_id) else { return };
            let expiry = release.expiry;
            match release.saved {
                Some(saved) => {
                    entry.rest().saved = Some(saved);
                    if let Some(seconds) = expiry {
                        let this = self.clone();
                        let id = client_id.clone();
                        let claim = entry.claim;
                        entry.rest().expiry_timer = Some(tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(seconds.into())).await;
                            this.expire(&id, claim).await;
                        }));
                    }
                }
                None => drop(entry.take_saved()),
            }
            if let Some((will, delay)) = release.will {
                // The will waits for the delay, but never longer than the session lives.
                let delay = match (entry.saved().is_some(), expiry) {
                    (false, _) => 0,
                    (true, Some(expiry)) => delay.min(expiry),
                    (true, None) => delay,
                };
                if delay == 0 {
                    will_now = Some(will);
                } else {
                    let will = Arc::new(will);
                    let this = self.clone();
                    let id = client_id.clone();
                    let claim = entry.claim;
                    let timer_will = will.clone();
                    entry.rest().will_timer = Some((
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(delay.into())).await;
                            this.delayed_will_due(&id, claim, &timer_will);
                        }),
                        will,
                    ));
                }
            }
            if entry.is_empty() {
                entries.remove(client_id);
            }
        }
        if let Some(will) = will_now {
            self.publish_will(client_id, &will);
        }
    }

    fn delayed_will_due(&self, client_id: &Arc<str>, claim: u64, will: &PendingWill) {
        {
            let mut registry = self.lock();
            let entries = &mut registry.entries;
            let Some(entry) = entries.get_mut(client_id) else { return };
            if entry.claim != claim || entry.live.is_some() {
                return;
            }
            entry.take_will_timer();
            if entry.is_empty() {
                entries.remove(client_id);
            }
        }
        self.publish_will(client_id, will);
    }

    /// Session expiry: forget the session (gate and router) and publish a will still waiting.
    async fn expire(self: &Arc<Self>, client_id: &Arc<str>, claim: u64) {
        let (purged, purging) = watch::channel(());
        let will = {
            let mut registry = self.lock();
            let Some(entry) = registry.entries.get_mut(client_id) else { return };
            if entry.claim != claim || entry.live.is_some() {
                return;
            }
            entry.take_expiry_timer();
            if entry.take_saved().is_some() {
                crate::metrics::Metrics::inc(&crate::metrics::METRICS.clients_expired);
                if let Some(hook) = self.on_expiry.get() {
                    hook(client_id);
                }
            }
            entry.rest().purging = Some(purging);
            entry.take_will_timer().map(|(timer, will)| {
                timer.abort();
                will
            })
        };
        if let Some(will) = will {
            self.publish_will(client_id, &will);
        }
        self.engine.purge(client_id).await;
        let mut registry = self.lock();
        let entries = &mut registry.entries;
        if let Some(entry) = entries.get_mut(client_id) {
            entry.rest().purging = None;
            if entry.is_empty() {
                entries.remove(client_id);
            }
        }
        drop(purged);
    }

    /// Sends a kick to every live connection matching `target`; returns how many were sent. The
    /// index gives the targets, so the cost follows their number, not the number of sessions.
    pub fn kick(&self, target: &KickTarget) -> usize {
        let (username, reason) = match target {
            KickTarget::Username(name) => (Some(&**name), KickReason::Admin),
            KickTarget::Anonymous => (None, KickReason::Admin),
            KickTarget::CredentialsRevoked(name) => (Some(&**name), KickReason::CredentialsRevoked),
        };
        let registry = self.lock();
        let mut count = 0;
        for client_id in registry.live.client_ids(username) {
            let live = registry.entries.get(&client_id).and_then(|entry| entry.live.as_ref());
            if live.is_some_and(|live| live.mailbox.send(Mail::Kick(reason)).is_ok()) {
                count += 1;
            }
        }
        let counted_as = if reason == KickReason::CredentialsRevoked { 1 } else { 0 };
        crate::metrics::SECURITY.kicked(counted_as, count);
        count
    }

    /// Kicks the live connection of one client id, as an admin change does (the console's kick);
    /// false when no such client is connected.
    pub fn kick_client(&self, client_id: &str) -> bool {
        let registry = self.lock();
        let live = registry.entries.get(client_id).and_then(|entry| entry.live.as_ref());
        let sent = live.is_some_and(|live| live.mailbox.send(Mail::Kick(KickReason::Admin)).is_ok());
        if sent {
            crate::metrics::SECURITY.kicked(2, 1);
        }
        sent
    }

    /// Asks the live connection of `client_id` for its details (answered between two of its
    /// events); `None` when it is not connected.
    pub fn describe(
        &self,
        client_id: &str,
    ) -> Option<tokio::sync::oneshot::Receiver<crate::gate::mailbox::ConnectionDetails>> {
        let registry = self.lock();
        let live = registry.entries.get(client_id).and_then(|entry| entry.live.as_ref())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        live.mailbox.send(Mail::Describe(tx)).ok()?;
        Some(rx)
    }

    /// Whether `client_id` has a live connection.
    pub fn is_live(&self, client_id: &str) -> bool {
        self.lock().entries.get(client_id).is_some_and(|entry| entry.live.is_some())
    }

    /// Asks every live connection to leave and waits (bounded) until they have.
    pub async fn disconnect_all(&self, wait: Duration) {
        let waiting: Vec<MailSender> = {
            let registry = self.lock();
            registry
                .entries
                .values()
                .filter_map(|e| e.live.as_ref())
                .filter(|live| live.mailbox.send(Mail::Kick(KickReason::Shutdown)).is_ok())
                .map(|live| live.mailbox.clone())
                .collect()
        };
        let all = async {
            for mailbox in waiting {
                mailbox.closed().await;
            }
        };
        let _ = tokio::time::timeout(wait, all).await;
        let mut registry = self.lock();
        for entry in registry.entries.values_mut() {
            if let Some((timer, _)) = entry.take_will_timer() {
                timer.abort();
            }
            if let Some(timer) = entry.take_expiry_timer() {
                timer.abort();
            }
        }
    }

    /// The clients the broker knows (connected, or offline with a saved session), oldest
    /// connection first, as (client id, username, latest address).
    pub fn known_clients(&self) -> Vec<(Arc<str>, Option<Arc<str>>, std::net::IpAddr)> {
        let registry = self.lock();
        let mut known: Vec<_> = registry
            .entries
            .iter()
            .filter_map(|(id, e)| Some((e.last_peer()?.0, (id.clone(), e.known_as()?, e.last_peer()?.1))))
            .collect();
        known.sort_by_key(|(conn_id, _)| *conn_id);
        known.into_iter().map(|(_, client)| client).collect()
    }

    /// The clients the broker knows, as the console lists them: (client id, username, latest
    /// address, connected since — `None` when offline with a saved session), oldest first.
    pub fn client_overview(&self) -> Vec<ClientOverview> {
        let registry = self.lock();
        let mut known: Vec<(u64, ClientOverview)> = registry
            .entries
            .iter()
            .filter_map(|(id, e)| {
                let (conn_id, address) = e.last_peer()?;
                let username = e.known_as()?;
                let since = e.live.as_ref().map(|live| live.since);
                Some((conn_id, ClientOverview { client_id: id.clone(), username, address, since }))
            })
            .collect();
        known.sort_by_key(|(conn_id, _)| *conn_id);
        known.into_iter().map(|(_, client)| client).collect()
    }

    /// Number of live connections (for tests and logs).
    pub fn live_count(&self) -> usize {
        self.lock().entries.values().filter(|e| e.live.is_some()).count()
    }

    /// Live clients, and live clients plus saved persistent sessions (for `$SYS`).
    pub fn client_counts(&self) -> crate::sys_topics::ClientCounts {
        let registry = self.lock();
        let entries = &registry.entries;
        let connected = entries.values().filter(|e| e.live.is_some()).count() as u64;
        let total = entries.values().filter(|e| e.live.is_some() || e.saved().is_some()).count() as u64;
        crate::sys_topics::ClientCounts { connected, total }
    }
}

/// Publishes a will through the engine, if the client may still publish to its topic. Wills on
/// `$SYS` and `$share` are never published, as PUBLISHes to them are refused (`$CONTROL/` wills
/// are refused at CONNECT); other `$` topics are routed like any other. `record` is told of the
/// will once it passes (persistence), and returns its store sequence. Returns whether it was
/// published.
pub fn publish_will<E: RoutingEngine>(
    engine: &E,
    will: &PendingWill,
    record: Option<impl FnOnce(&PendingWill) -> Option<u64>>,
) -> bool {
    if !crate::routing::topic_form::routed(&will.topic) || !will.authz.allows(Access::Publish, &will.topic) {
        tracing::debug!(topic = %crate::logging::client_text(&will.topic), "will not published: denied");
        return false;
    }
    let item =
        crate::routing::router_guard::ToRouter::Publish { topic: &will.topic, properties: will.properties.as_ref() };
    if let Err(hazard) = crate::routing::router_guard::admit(item) {
        tracing::info!(topic = %will.topic, %hazard, "will not published: the router cannot take it");
        return false;
    }
    crate::metrics::METRICS.routed(will.topic.as_bytes(), will.payload.len(), will.retain);
    let queued = record.and_then(|record| record(will));
    let mut properties = will.properties.clone();
    let expiry = properties.as_mut().and_then(|p| p.message_expiry_interval.take());
    let stamp = crate::routing::envelope::Stamp {
        qos: will.qos,
        retain: will.retain,
        publisher: will.publisher,
        origin: will.origin,
        // A connection's will is its last message.
        sequence: u64::MAX,
        expires_at_ms: expiry.map(|secs| crate::routing::envelope::now_ms() + u64::from(secs) * 1000),
        queued,
        addressee: None,
        share_group: None,
    };
    let topic = Bytes::copy_from_slice(will.topic.as_bytes());
    engine.inject(crate::routing::envelope::routable(topic, &will.payload, stamp, properties));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client id holds a registry slot, and the map keeps spare slots beside the used ones
    /// (docs/benchmarks.md, "The connection's own state and task": 152 bytes with a saved
    /// session's parts, timers and last address inline, 104 with them boxed). A field of the
    /// rare parts moved back inline crosses the bound.
    #[test]
    fn a_registry_slot_is_small() {
        let slot = std::mem::size_of::<(Arc<str>, Entry)>();
        assert!(slot <= 112, "a registry slot is {slot} bytes");
    }
}
