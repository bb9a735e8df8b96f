//! Failed-login throttling, per source address and per username, and fairness of the password
//! verification pool.
//!
//! Each address and each username has a leaky bucket of failed logins that drains over a window
//! (default: 20 failures per address and 50 per username per minute). An address whose bucket is
//! full is refused at CONNECT without any hashing (CONNACK 5 / 0x87, as for a wrong password)
//! until it drains; a username whose bucket is full is slowed — each attempt waits up to two
//! seconds before its verification — rather than locked out, so an attacker cannot deny a real
//! user their account. An address that has failed recently may also have only a few
//! verifications pending at once, so a flood from it cannot occupy the (bounded) verification
//! pool that everyone shares; an address without recent failures (a gateway, a NAT, a fleet
//! reconnecting after an outage) is never refused for connecting many clients at once — its
//! attempts wait for the pool like everyone else's.
//! Successful logins empty the username's bucket. Memory is bounded: at most `MAX_TRACKED`
//! entries, drained ones are dropped first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Tracked addresses + usernames, at most.
const MAX_TRACKED: usize = 100_000;
/// The longest an attempt on a throttled username waits.
const MAX_USERNAME_DELAY: Duration = Duration::from_secs(2);

/// `gate_login_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// `gate_login_throttle` (default true).
    pub enabled: bool,
    /// `gate_login_failures_per_address` (default 20 per window).
    pub failures_per_address: u32,
    /// `gate_login_failures_per_username` (default 50 per window).
    pub failures_per_username: u32,
    /// `gate_login_window` (seconds, default 60): how long a full bucket takes to drain.
    pub window: Duration,
    /// `gate_login_pending_per_address` (default 4): verifications an address with recent failures
    /// may have waiting.
    pub pending_per_address: usize,
    /// `gate_login_verifications` (default: the number of CPUs): password verifications running
    /// at once, broker-wide, each on its own low-priority thread ([`crate::verifier`]). Because
    /// those threads yield to traffic, all cores can hash: on 2 cores, bench P4 went from 962 to
    /// 1,328 connects/s with connected clients' p99 at 1.6 ms (docs/benchmarks.md).
    pub concurrent_verifications: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            enabled: true,
            failures_per_address: 20,
            failures_per_username: 50,
            window: Duration::from_secs(60),
            pending_per_address: 4,
            concurrent_verifications: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    failures: f64,
    updated: Instant,
    pending: usize,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket { failures: 0.0, updated: now, pending: 0 }
    }

    /// Drains `limit` failures per `window` since the last update.
    fn drain(&mut self, now: Instant, limit: u32, window: Duration) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.failures = (self.failures - elapsed * f64::from(limit) / window.as_secs_f64()).max(0.0);
        self.updated = now;
    }

    fn idle(&self) -> bool {
        self.failures == 0.0 && self.pending == 0
    }
}

/// What to do with a login attempt.
#[derive(Debug)]
pub enum Admission {
    /// Verify, after waiting `delay`; report the outcome through the ticket.
    Verify { delay: Duration, ticket: Ticket },
    /// Refuse without verifying.
    Refuse,
}

#[derive(Default)]
struct State {
    addresses: HashMap<IpAddr, Bucket>,
    usernames: HashMap<String, Bucket>,
}

impl State {
    fn prune_if_large(&mut self) {
        if self.addresses.len() + self.usernames.len() > MAX_TRACKED {
            self.addresses.retain(|_, b| !b.idle());
            self.usernames.retain(|_, b| !b.idle());
        }
    }
}

pub struct LoginThrottle {
    settings: ThrottleSettings,
    state: Mutex<State>,
}

/// A pending verification; record its outcome with [`Ticket::finish`]. Dropping it without an
/// outcome (a cancelled connection) counts as neither.
#[derive(Debug)]
pub struct Ticket {
    throttle: Option<Arc<LoginThrottle>>,
    address: IpAddr,
    username: String,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("settings", &self.settings).finish()
    }
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Arc<LoginThrottle> {
        Arc::new(LoginThrottle { settings, state: Mutex::new(State::default()) })
    }

    /// Decides whether a password attempt from `address` for `username` is verified now, later, or
    /// not at all.
    pub fn admit(self: &Arc<Self>, address: IpAddr, username: &str) -> Admission {
        if !self.settings.enabled {
            return Admission::Verify {
                delay: Duration::ZERO,
                ticket: Ticket { throttle: None, address, username: String::new() },
            };
        }
        let s = &self.settings;
        let now = Instant::now();
        let mut state = self.state.lock();
        state.prune_if_large();
        let tracked = state.addresses.len() + state.usernames.len() < MAX_TRACKED;
        let address_bucket = state.addresses.entry(address).or_insert_with(|| Bucket::new(now));
        address_bucket.drain(now, s.failures_per_address, s.window);
        // Refused once the next failure would overflow the bucket (drained failures are fractional),
        // or when an address that has been failing keeps many attempts in flight.
        let suspicious = address_bucket.failures >= 0.5;
        if address_bucket.failures > f64::from(s.failures_per_address) - 1.0
            || (suspicious && address_bucket.pending >= s.pending_per_address)
        {
            return Admission::Refuse;
        }
        address_bucket.pending += 1;
        let delay = match state.usernames.get_mut(username) {
            Some(bucket) => {
                bucket.drain(now, s.failures_per_username, s.window);
                let excess = bucket.failures - (f64::from(s.failures_per_username) - 1.0);
                if excess > 0.0 {
                    // 100 ms doubling per excess failure, capped.
                    Duration::from_millis(100u64 << (excess as u32).min(5)).min(MAX_USERNAME_DELAY)
                } else {
                    Duration::ZERO
                }
            }
            None => {
                if tracked {
                    state.usernames.insert(username.to_owned(), Bucket::new(now));
                }
                Duration::ZERO
            }
        };
        Admission::Verify {
            delay,
            ticket: Ticket { throttle: Some(Arc::clone(self)), address, username: username.to_owned() },
        }
    }
}

impl Ticket {
    /// Records the outcome of the verification.
    pub fn finish(mut self, success: bool) {
        self.settle(Some(success));
    }

    fn settle(&mut self, outcome: Option<bool>) {
        let Some(throttle) = self.throttle.take() else { return };
        let mut state = throttle.state.lock();
        if let Some(bucket) = state.addresses.get_mut(&self.address) {
            bucket.pending = bucket.pending.saturating_sub(1);
            if outcome == Some(false) {
                bucket.failures += 1.0;
            }
        }
        match outcome {
            Some(false) => {
                if let Some(bucket) = state.usernames.get_mut(&self.username) {
                    bucket.failures += 1.0;
                }
            }
            Some(true) => {
                if let Some(bucket) = state.usernames.get_mut(&self.username) {
                    bucket.failures = 0.0;
                }
            }
            None => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settle(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            failures_per_address: 3,
            failures_per_username: 5,
            pending_per_address: 2,
            ..Default::default()
        }
    }

    fn fail(t: &Arc<LoginThrottle>, ip: &str, user: &str) -> bool {
        match t.admit(ip.parse().unwrap(), user) {
            Admission::Verify { ticket, .. } => {
                ticket.finish(false);
                true
            }
            Admission::Refuse => false,
        }
    }

    #[test]
    fn an_address_with_too_many_failures_is_refused_and_others_are_not() {
        let t = LoginThrottle::new(settings());
        assert!(fail(&t, "10.0.0.1", "a") && fail(&t, "10.0.0.1", "b") && fail(&t, "10.0.0.1", "c"));
        assert!(matches!(t.admit("10.0.0.1".parse().unwrap(), "d"), Admission::Refuse));
        assert!(
            matches!(t.admit("10.0.0.2".parse().unwrap(), "d"), Admission::Verify { delay, .. } if delay.is_zero())
        );
    }

    #[test]
    fn a_targeted_username_is_slowed_not_locked_and_success_resets_it() {
        let t = LoginThrottle::new(ThrottleSettings { failures_per_address: 1000, ..settings() });
        for i in 0..5 {
            assert!(fail(&t, &format!("10.0.1.{i}"), "victim"));
        }
        let Admission::Verify { delay, ticket } = t.admit("10.0.2.1".parse().unwrap(), "victim") else { panic!() };
        assert!(delay > Duration::ZERO && delay <= MAX_USERNAME_DELAY);
        ticket.finish(true);
        assert!(
            matches!(t.admit("10.0.2.1".parse().unwrap(), "victim"), Admission::Verify { delay, .. } if delay.is_zero())
        );
    }

    #[test]
    fn pending_verifications_are_capped_only_for_failing_addresses() {
        let t = LoginThrottle::new(settings());
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let clean: Vec<_> = (0..10).map(|i| t.admit(ip, &format!("u{i}"))).collect();
        assert!(clean.iter().all(|a| matches!(a, Admission::Verify { .. })), "a clean address is not capped");
        drop(clean);
        assert!(fail(&t, "10.0.0.9", "x"));
        let first = t.admit(ip, "x");
        let second = t.admit(ip, "y");
        assert!(matches!(t.admit(ip, "z"), Admission::Refuse));
        drop(first);
        drop(second);
        assert!(matches!(t.admit(ip, "z"), Admission::Verify { .. }));
    }

    #[test]
    fn buckets_drain_over_the_window() {
        let mut bucket = Bucket::new(Instant::now());
        bucket.failures = 20.0;
        let later = bucket.updated + Duration::from_secs(30);
        bucket.drain(later, 20, Duration::from_secs(60));
        assert!((bucket.failures - 10.0).abs() < 1e-6);
    }

    #[test]
    fn disabled_throttle_admits_everything() {
        let t = LoginThrottle::new(ThrottleSettings { enabled: false, ..settings() });
        for _ in 0..10 {
            assert!(fail(&t, "10.0.0.1", "a"));
        }
    }
}
