//! The budget of filters new to the router (`gate_new_filters_per_second`,
//! `gate_new_filters_burst`).
//!
//! rumqttd keeps a commit log for every filter it was ever asked for (router/logs.rs
//! `filter_indexes`, `native`: about 7 KB each) and has no call that removes one; and the first
//! subscription to a filter matches it against every topic the router has ever routed
//! (`DataLog::next_native_offset`), on the router's one thread, while nothing else is routed
//! (~10–20 ms at 100,000 topics: docs/rumqttd.md §10). The filters that reach the router are a
//! persistent session's and every `$share` one (clean sessions' plain filters are the hub's,
//! `routing::hub`, except on a cluster node, where every filter reaches the router). Without a
//! bound, one client cycling SUBSCRIBE/UNSUBSCRIBE through invented filters grows the router for
//! good and stalls routing for everybody.
//!
//! The gate keeps an index of the filters it has let into the router, as 8-byte hashes of the
//! filter the router keys its log by (`$share/<group>/` removed: rumqttd logs a shared filter
//! under its plain filter), and charges a connection's [`TokenBucket`] only for a filter the
//! index has never seen: a device re-subscribing its filters, or a fleet sharing them, pays
//! nothing. Filters the gate hands the router itself (a resumed or restored session's) are not
//! charged and not recorded, so the first client SUBSCRIBE to such a filter after a restart may
//! be charged once. docs/security.md ("Per-client limits") gives the bound.

use super::shared_filter;
use super::token_bucket::TokenBucket;
use super::topic_budget::RouterIndex;

/// The filters the gate has let into the router (the index `topic_budget` keeps of topics, here
/// of filters).
#[derive(Debug, Default)]
pub struct RouterFilters(RouterIndex);

impl RouterFilters {
    /// May a connection with `budget` hand the router `filter` (client spelling, validated)?
    /// A filter the router already holds always may, and a new one costs a token; `budget` is
    /// made (full, with `per_second` and `burst`) at the first new filter. `per_second` 0: no
    /// budget, and nothing is recorded.
    pub fn admit(&self, filter: &str, budget: &mut Option<TokenBucket>, per_second: u32, burst: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        self.0.enter(shared_filter::matching_path(filter).as_bytes(), || {
            budget.get_or_insert_with(|| TokenBucket::new(per_second, burst)).take()
        })
    }

    /// Filters recorded so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` before the first filter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_filters_cost_a_token_and_known_ones_are_free_for_everybody() {
        let filters = RouterFilters::default();
        let mut attacker = None;
        let admitted = (0..20).filter(|i| filters.admit(&format!("invented/{i}"), &mut attacker, 1, 5)).count();
        assert_eq!(admitted, 5, "the burst, and no refill within the loop worth a token");
        assert_eq!(filters.len(), 5);
        // Known filters cost nothing, for this connection and any other, also through $share.
        assert!((0..100).all(|_| filters.admit("invented/0", &mut attacker, 1, 5)));
        let mut other = None;
        assert!(filters.admit("$share/g/invented/1", &mut other, 1, 1));
        assert!(other.is_none(), "no bucket is made for a known filter");
        assert!(filters.admit("fleet/dev1/cmd", &mut other, 1, 1));
        assert!(!filters.admit("fleet/dev2/cmd", &mut other, 1, 1), "its own burst of 1 is spent");
    }

    #[test]
    fn a_shared_filter_is_known_by_its_plain_filter() {
        let filters = RouterFilters::default();
        let mut budget = None;
        assert!(filters.admit("$share/a/x/+", &mut budget, 1, 1));
        assert!(filters.admit("$share/b/x/+", &mut budget, 1, 1), "same router log");
        assert!(filters.admit("x/+", &mut budget, 1, 1));
        assert!(!filters.admit("y", &mut budget, 1, 1));
    }

    #[test]
    fn zero_switches_it_off() {
        let filters = RouterFilters::default();
        let mut budget = None;
        assert!((0..10_000).all(|i| filters.admit(&format!("t/{i}"), &mut budget, 0, 0)));
        assert!(filters.is_empty() && budget.is_none());
    }
}
