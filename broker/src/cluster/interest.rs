//! Interest-based forwarding of QoS 0 messages (`cluster_forward_by_interest true`, default off;
//! docs/cluster.md): instead of every message under `<cluster>.msg.>`, a node subscribes on NATS
//! only to the subjects of its sessions' filters, so that nats-server sends a QoS 0 message only
//! to the nodes that have a subscriber for it.
//!
//! The filters are counted by [`Interest::join`] / [`Interest::leave`], called by the
//! subscriptions' cluster memberships (`shared_groups::ShareMembership`) for as long as a
//! subscription is kept (live or saved sessions). A manager task turns them into NATS
//! subscriptions: each filter's subjects (`subject::filter_to_subjects`) go into a *cover* of
//! subjects no two of which overlap ([`cover_insert`]: two overlapping subjects are replaced by
//! their generalization, `a.b` and `a.*` by `a.*`, `a.*` and `*.b` by `*.*`), so that NATS gives
//! this node each message at most once; the router's own matching then drops what the cover
//! takes beyond the filters. While the cover changes (a new subscription is made before the old
//! ones are dropped), a message may come twice: [`Recent`] drops the second copy by its sender's
//! sequence number.
//!
//! QoS 1/2 messages are not affected (JetStream gives every node's consumer everything), nor are
//! retained QoS 0 messages, which then travel through JetStream to every node (every node keeps
//! the retained messages), nor `$share` groups (their own queue subscriptions).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::subject::filter_to_subjects;

/// The node's filters, counted; present only with `cluster_forward_by_interest true`.
static INTEREST: OnceLock<Arc<Interest>> = OnceLock::new();

/// How long the manager waits after a change for more, before it subscribes (subscribing
/// clients come in bursts).
const BATCH: Duration = Duration::from_millis(10);
/// Sender sequences remembered per node, to drop copies that come twice.
const RECENT: usize = 4096;

pub struct Interest {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    filters: HashMap<String, usize>,
    /// Filters that got their first subscription since the manager last looked.
    added: Vec<String>,
    /// A filter lost its last subscription since the manager last looked: the cover is rebuilt.
    removed: bool,
}

impl Interest {
    /// Turns interest-based forwarding on (at start, before persistent sessions are restored, so
    /// that their subscriptions count).
    pub fn enable() {
        let _ = INTEREST.set(Arc::new(Interest { state: Mutex::new(State::default()), changed: Notify::new() }));
    }

    pub fn enabled() -> bool {
        INTEREST.get().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A subscription to `filter` (not a `$share` one) is kept; `false` when interest-based
    /// forwarding is off.
    pub fn join(filter: &str) -> bool {
        let Some(interest) = INTEREST.get() else { return false };
        let mut state = interest.lock();
        let count = state.filters.entry(filter.to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            state.added.push(filter.to_owned());
            drop(state);
            interest.changed.notify_one();
        }
        true
    }

    /// A subscription to `filter` that [`Interest::join`] counted is gone.
    pub fn leave(filter: &str) {
        let Some(interest) = INTEREST.get() else { return };
        let mut state = interest.lock();
        let Some(count) = state.filters.get_mut(filter) else { return };
        *count -= 1;
        if *count == 0 {
            state.filters.remove(filter);
            state.removed = true;
            drop(state);
            interest.changed.notify_one();
        }
    }

    /// Starts the manager: subscribes under `prefix` (`<cluster>.msg`) to the cover of the
    /// filters and hands every message to `inbound`.
    pub(super) fn start(client: async_nats::Client, prefix: String, inbound: mpsc::Sender<async_nats::Message>) {
        let Some(interest) = INTEREST.get().cloned() else { return };
        interest.lock().removed = true; // the first round builds the cover of what is counted
        interest.changed.notify_one();
        tokio::spawn(manage(interest, client, prefix, inbound));
    }
}

async fn manage(
    interest: Arc<Interest>,
    client: async_nats::Client,
    prefix: String,
    inbound: mpsc::Sender<async_nats::Message>,
) {
    let mut cover: Vec<Vec<String>> = Vec::new();
    let mut subscribed: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        interest.changed.notified().await;
        tokio::time::sleep(BATCH).await;
        let (rebuild, added) = {
            let mut state = interest.lock();
            let added = std::mem::take(&mut state.added);
            let rebuild = std::mem::take(&mut state.removed);
            (rebuild.then(|| state.filters.keys().cloned().collect::<Vec<_>>()), added)
        };
        if let Some(all) = rebuild {
            cover.clear();
            for filter in &all {
                for subject in filter_to_subjects(&prefix, filter) {
                    cover_insert(&mut cover, tokens(&subject));
                }
            }
        } else {
            for filter in &added {
                for subject in filter_to_subjects(&prefix, filter) {
                    cover_insert(&mut cover, tokens(&subject));
                }
            }
        }
        let wanted: HashSet<String> = cover.iter().map(|t| t.join(".")).collect();
        // New subscriptions first, then the ones no longer wanted: a message passing meanwhile
        // may come twice (dropped by `Recent`), but is not missed.
        for subject in &wanted {
            if !subscribed.contains_key(subject) {
                let task = tokio::spawn(forward(client.clone(), subject.clone(), inbound.clone()));
                subscribed.insert(subject.clone(), task);
            }
        }
        subscribed.retain(|subject, task| {
            let keep = wanted.contains(subject);
            if !keep {
                // (Dropping the subscriber unsubscribes.)
                task.abort();
            }
            keep
        });
    }
}

async fn forward(client: async_nats::Client, subject: String, inbound: mpsc::Sender<async_nats::Message>) {
    let mut messages = match client.subscribe(subject.clone()).await {
        Ok(messages) => messages,
        Err(e) => {
            tracing::warn!("cluster: subscribing to {subject}: {e}");
            return;
        }
    };
    while let Some(message) = messages.next().await {
        if inbound.send(message).await.is_err() {
            return;
        }
    }
}

fn tokens(subject: &str) -> Vec<String> {
    subject.split('.').map(str::to_owned).collect()
}

/// Whether some subject matches both `a` and `b` (NATS wildcards: `*` one token, `>` the rest).
fn overlap(a: &[String], b: &[String]) -> bool {
    for i in 0.. {
        match (a.get(i).map(String::as_str), b.get(i).map(String::as_str)) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (None, _) | (_, None) => return false,
            (Some(x), Some(y)) if x != y && x != "*" && y != "*" => return false,
            _ => {}
        }
    }
    false
}

/// The narrowest subject (of this token-wise form) that covers both `a` and `b`.
fn generalize(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    for i in 0.. {
        match (a.get(i).map(String::as_str), b.get(i).map(String::as_str)) {
            (None, None) => break,
            (Some(x), Some(y)) if x == y && x != ">" => out.push(x.to_owned()),
            (Some(x), Some(y)) if x != ">" && y != ">" => out.push("*".to_owned()),
            _ => {
                out.push(">".to_owned());
                break;
            }
        }
    }
    out
}

/// Adds `subject` to `cover`, keeping no two of its subjects overlapping.
fn cover_insert(cover: &mut Vec<Vec<String>>, mut subject: Vec<String>) {
    while let Some(at) = cover.iter().position(|c| overlap(c, &subject)) {
        let other = cover.swap_remove(at);
        subject = generalize(&other, &subject);
    }
    cover.push(subject);
}

/// The sequences of the latest messages from each node, to drop a second copy.
#[derive(Default)]
pub(super) struct Recent {
    nodes: HashMap<String, (VecDeque<u64>, HashSet<u64>)>,
}

impl Recent {
    /// Whether `(node, sequence)` is new (and remembers it).
    pub(super) fn first(&mut self, node: &str, sequence: u64) -> bool {
        let (order, seen) = self.nodes.entry(node.to_owned()).or_default();
        if !seen.insert(sequence) {
            return false;
        }
        order.push_back(sequence);
        if order.len() > RECENT
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cover_of(subjects: &[&str]) -> Vec<String> {
        let mut cover = Vec::new();
        for s in subjects {
            cover_insert(&mut cover, tokens(s));
        }
        let mut out: Vec<String> = cover.iter().map(|t| t.join(".")).collect();
        out.sort();
        out
    }

    #[test]
    fn a_cover_has_no_two_overlapping_subjects_and_covers_every_one() {
        assert_eq!(cover_of(&["m.a.b", "m.a.c"]), ["m.a.b", "m.a.c"]);
        assert_eq!(cover_of(&["m.a.b", "m.a.*"]), ["m.a.*"]);
        assert_eq!(cover_of(&["m.a.*", "m.*.b"]), ["m.*.*"]);
        assert_eq!(cover_of(&["m.a.b.c", "m.a.>"]), ["m.a.>"]);
        assert_eq!(cover_of(&["m.a", "m.a.>"]), ["m.a", "m.a.>"]);
        assert_eq!(cover_of(&["m.x.*.z", "m.*.y.z", "m.q"]), ["m.*.*.z", "m.q"]);
        assert!(!overlap(&tokens("m.a"), &tokens("m.a.b")));
        assert!(overlap(&tokens("m.*.b"), &tokens("m.a.*")));
    }

    #[test]
    fn a_second_copy_of_a_message_is_dropped() {
        let mut recent = Recent::default();
        assert!(recent.first("a", 1));
        assert!(recent.first("b", 1));
        assert!(!recent.first("a", 1));
        for n in 2..(RECENT as u64 + 10) {
            assert!(recent.first("a", n));
        }
        assert!(recent.first("a", 1), "forgotten after {RECENT} more");
    }
}
