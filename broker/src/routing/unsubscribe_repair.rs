//! rumqttd 0.20's UNSUBSCRIBE made whole for shared subscriptions (docs/rumqttd.md, defect 18).
//! `router_link` tells this module every SUBSCRIBE and UNSUBSCRIBE it sends (router spelling) and
//! sends the packets it returns right after the UNSUBSCRIBE, in the same batch.
//!
//! What the router does wrong (rumqttd-0.20.0, `router/routing.rs` 710-760, `router/logs.rs`
//! `remove_waiters_for_id`):
//! - A subscription's request, once it has caught up with its filter's log, waits among the
//!   "waiters" of the log of its *plain* filter (`a/b` for `$share/g/a/b`). UNSUBSCRIBE removes a
//!   waiting request by looking the filter up under its full name, which for `$share/g/a/b` finds
//!   no log: the request stays and keeps delivering every message of `a/b` to the client.
//!   Repair: subscribe to the plain filter and unsubscribe from it again; that UNSUBSCRIBE
//!   removes the client's (first) waiting request of that log — the orphan — and the request the
//!   SUBSCRIBE created (still scheduled, not waiting). Only when the client has no other
//!   subscription on the same plain filter: that one's request could be removed instead.
//! - Every successful UNSUBSCRIBE, of any filter, takes the client out of *every* shared group
//!   (`shared_subscriptions.retain(.. remove_client ..)`): its other shared subscriptions are
//!   skipped for good while the group has other members. Repair: subscribe to them again (their
//!   requests exist, so this only puts the client back in the groups; the router sends no
//!   retained messages to shared subscriptions).
//!
//! The router must take the repair together with the UNSUBSCRIBE (no delivery in between: a new
//! plain subscription would be sent its retained messages), so `router_link` hands it over in one
//! batch. The SUBACKs of the repair's SUBSCRIBEs are not the client's: [`UnsubscribeRepair::
//! suback_is_clients`] tells them apart, SUBACKs coming in the order of the SUBSCRIBEs.

use std::collections::{HashMap, VecDeque};

use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe, Unsubscribe};

/// A link's subscriptions as the router knows them, and its SUBACKs still due.
#[derive(Debug, Default)]
pub struct UnsubscribeRepair {
    /// Router spelling → the filter as sent.
    subscribed: HashMap<String, Filter>,
    /// One entry per SUBSCRIBE not yet acknowledged, oldest first: `true` if the repair sent it.
    subacks: VecDeque<bool>,
}

/// The plain filter of a shared subscription (router spelling).
fn shared_path(filter: &str) -> Option<&str> {
    filter.strip_prefix("$share/")?.split_once('/').map(|(_, path)| path)
}

fn plain_of(filter: &str) -> &str {
    shared_path(filter).unwrap_or(filter)
}

impl UnsubscribeRepair {
    /// The client's SUBSCRIBE (router spelling) is being sent.
    pub fn subscribing(&mut self, subscribe: &Subscribe) {
        for filter in &subscribe.filters {
            self.subscribed.insert(filter.path.clone(), filter.clone());
        }
        self.subacks.push_back(false);
    }

    /// An UNSUBSCRIBE (router spelling) is being sent: the packets to send right after it.
    pub fn unsubscribing(&mut self, unsubscribe: &Unsubscribe) -> Vec<Packet> {
        let mut orphaned = Vec::new();
        let mut removed_any = false;
        for path in &unsubscribe.filters {
            if self.subscribed.remove(path).is_some() {
                removed_any = true;
                if let Some(plain) = shared_path(path)
                    && !orphaned.iter().any(|p: &String| p == plain)
                {
                    orphaned.push(plain.to_owned());
                }
            }
        }
        if !removed_any {
            return Vec::new(); // the router changes nothing for filters it does not hold
        }
        let mut repair = Vec::new();
        for plain in orphaned {
            if self.subscribed.keys().any(|path| plain_of(path) == plain) {
                continue; // (see the module doc)
            }
            let filter = Filter {
                path: plain.clone(),
                qos: QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::Never,
            };
            repair.push(self.own_subscribe(vec![filter]));
            repair.push(Packet::Unsubscribe(Unsubscribe { pkid: 0, filters: vec![plain] }, None));
        }
        let mut shared: Vec<Filter> =
            self.subscribed.iter().filter(|(path, _)| shared_path(path).is_some()).map(|(_, f)| f.clone()).collect();
        if !shared.is_empty() {
            shared.sort_by(|a, b| a.path.cmp(&b.path)); // (a stable batch, for the tests)
            repair.push(self.own_subscribe(shared));
        }
        repair
    }

    fn own_subscribe(&mut self, filters: Vec<Filter>) -> Packet {
        self.subacks.push_back(true);
        Packet::Subscribe(Subscribe { pkid: 0, filters }, None)
    }

    /// A SUBACK arrived: does it answer a SUBSCRIBE of the client's (rather than of the repair)?
    pub fn suback_is_clients(&mut self) -> bool {
        self.subacks.pop_front() != Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(path: &str) -> Filter {
        Filter {
            path: path.to_owned(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }
    }

    fn subscribe(repair: &mut UnsubscribeRepair, paths: &[&str]) {
        repair.subscribing(&Subscribe { pkid: 1, filters: paths.iter().map(|p| filter(p)).collect() });
    }

    fn unsubscribe(repair: &mut UnsubscribeRepair, paths: &[&str]) -> Vec<String> {
        let unsubscribe = Unsubscribe { pkid: 2, filters: paths.iter().map(|p| (*p).to_owned()).collect() };
        repair
            .unsubscribing(&unsubscribe)
            .into_iter()
            .map(|packet| match packet {
                Packet::Subscribe(s, _) => {
                    format!("SUB {}", s.filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(","))
                }
                Packet::Unsubscribe(u, _) => format!("UNSUB {}", u.filters.join(",")),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_shared_unsubscribe_removes_the_orphan_and_rejoins_the_other_groups() {
        let mut repair = UnsubscribeRepair::default();
        subscribe(&mut repair, &["$share/g/a/t", "$share/h/b/t", "plain"]);
        assert_eq!(unsubscribe(&mut repair, &["$share/g/a/t"]), ["SUB a/t", "UNSUB a/t", "SUB $share/h/b/t"]);
        assert_eq!(unsubscribe(&mut repair, &["plain"]), ["SUB $share/h/b/t"]);
        assert_eq!(unsubscribe(&mut repair, &["$share/h/b/t"]), ["SUB b/t", "UNSUB b/t"]);
        assert!(unsubscribe(&mut repair, &["never"]).is_empty());
    }

    #[test]
    fn a_plain_filter_still_in_use_is_left_alone() {
        let mut repair = UnsubscribeRepair::default();
        subscribe(&mut repair, &["$share/g/a", "a"]);
        assert!(unsubscribe(&mut repair, &["$share/g/a"]).is_empty());
        subscribe(&mut repair, &["$share/g/b", "$share/h/b"]);
        assert_eq!(unsubscribe(&mut repair, &["$share/g/b"]), ["SUB $share/h/b"]);
    }

    #[test]
    fn the_repairs_subacks_are_told_apart() {
        let mut repair = UnsubscribeRepair::default();
        subscribe(&mut repair, &["$share/g/a", "$share/h/b"]);
        let _ = unsubscribe(&mut repair, &["$share/g/a"]); // SUB a, UNSUB a, SUB $share/h/b
        subscribe(&mut repair, &["c"]);
        assert_eq!(
            [(); 4].map(|()| repair.suback_is_clients()),
            [true, false, false, true],
            "the client's first SUBSCRIBE, the repair's two, the client's second"
        );
    }
}
