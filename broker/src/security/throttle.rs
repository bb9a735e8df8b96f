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
//! Successful logins empty the username's bucket.
//!
//! Memory is fixed and attacker-independent (issue 15, item 7): usernames are never stored, they
//! are counted in a count-min sketch of [`SKETCH_BYTES`] indexed by a SipHash with a random key
//! (so nobody can aim collisions at a victim, and junk usernames only add a little noise to every
//! counter instead of pushing the victim out of a table); addresses — IPv6 ones by their /64,
//! which one host usually owns whole — live in a map of at most [`MAX_ADDRESSES`] entries, whose
//! buckets are drained before idle ones are dropped. When that map is full of addresses that
//! failed recently, a new address is not tracked (its attempts are verified, still throttled per
//! username). The clock is injectable for tests ([`LoginThrottle::with_clock`]).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Tracked addresses, at most.
pub const MAX_ADDRESSES: usize = 100_000;
/// A full address map is swept (drained, idle entries dropped) at most this often.
const ADDRESS_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Rows and counters per row of the username sketch: 4 × 16,384 counters of 16 bytes = 1 MiB.
const SKETCH_ROWS: usize = 4;
const SKETCH_ROW_BITS: u32 = 14;
const SKETCH_WIDTH: usize = 1 << SKETCH_ROW_BITS;
/// The memory of the username sketch.
pub const SKETCH_BYTES: usize = SKETCH_ROWS * SKETCH_WIDTH * std::mem::size_of::<Bucket>();
/// The longest an attempt on a throttled username waits.
const MAX_USERNAME_DELAY: Duration = Duration::from_secs(2);

/// Where the throttle reads the time (tests drive their own).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

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
    /// at once, broker-wide, each on its own low-priority thread ([`crate::security::verifier`]). Because
    /// those threads yield to traffic, all cores can hash: on 2 cores, bench P4 went from 962 to
    /// 1,328 connects/s with connected clients' p99 at 1.6 ms (docs/benchmarks.md).
    pub concurrent_verifications: usize,
    /// `gate_login_queue_timeout` (seconds, default 10): the longest a login waits for a password
    /// verifier; then it is refused with "server unavailable" (CONNACK 3 / 0x88).
    pub queue_timeout: Duration,
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
            queue_timeout: Duration::from_secs(10),
        }
    }
}

/// A leaky bucket of failed logins.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    failures: f64,
    updated: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket { failures: 0.0, updated: now }
    }

    /// Drains `limit` failures per `window` since the last update.
    fn drain(&mut self, now: Instant, limit: u32, window: Duration) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.failures = (self.failures - elapsed * f64::from(limit) / window.as_secs_f64()).max(0.0);
        self.updated = now;
    }
}

/// An address's failures and its verifications in flight.
#[derive(Debug, Clone, Copy)]
struct AddressEntry {
    bucket: Bucket,
    pending: usize,
}

/// What to do with a login attempt.
#[derive(Debug)]
pub enum Admission {
    /// Verify, after waiting `delay`; report the outcome through the ticket.
    Verify { delay: Duration, ticket: Ticket },
    /// Refuse without verifying.
    Refuse,
}

/// Failed logins per username, approximately: each username hashes to one counter per row, its
/// count is the smallest of them (an over-estimate only when every one of its counters is shared
/// with busy usernames). Updates are conservative (a counter is raised only as far as the
/// username's new count), which keeps the over-estimate small.
struct UsernameSketch {
    counters: Vec<Bucket>,
    hasher: RandomState,
}

impl UsernameSketch {
    fn new(now: Instant) -> UsernameSketch {
        // RandomState: SipHash-1-3 with a key from the OS, different in every process.
        UsernameSketch { counters: vec![Bucket::new(now); SKETCH_ROWS * SKETCH_WIDTH], hasher: RandomState::new() }
    }

    fn key(&self, username: &str) -> u64 {
        self.hasher.hash_one(username.as_bytes())
    }

    fn cells(key: u64) -> impl Iterator<Item = usize> {
        (0..SKETCH_ROWS).map(move |row| {
            let column = (key >> (row as u32 * SKETCH_ROW_BITS)) as usize & (SKETCH_WIDTH - 1);
            row * SKETCH_WIDTH + column
        })
    }

    /// The username's failures now (its counters drained first).
    fn estimate(&mut self, key: u64, now: Instant, limit: u32, window: Duration) -> f64 {
        let mut least = f64::INFINITY;
        for cell in Self::cells(key) {
            let counter = &mut self.counters[cell];
            counter.drain(now, limit, window);
            least = least.min(counter.failures);
        }
        least
    }

    fn failed(&mut self, key: u64, now: Instant, limit: u32, window: Duration) {
        let count = self.estimate(key, now, limit, window) + 1.0;
        for cell in Self::cells(key) {
            let counter = &mut self.counters[cell];
            counter.failures = counter.failures.max(count);
        }
    }

    /// A successful login empties the username's count (and lowers what it shares with others by
    /// as much, never below zero).
    fn succeeded(&mut self, key: u64, now: Instant, limit: u32, window: Duration) {
        let count = self.estimate(key, now, limit, window);
        for cell in Self::cells(key) {
            let counter = &mut self.counters[cell];
            counter.failures = (counter.failures - count).max(0.0);
        }
    }
}

struct State {
    addresses: HashMap<IpAddr, AddressEntry>,
    last_sweep: Option<Instant>,
    usernames: UsernameSketch,
}

impl State {
    /// Makes room in a full address map: drains every bucket, then drops the idle ones. At most
    /// once per [`ADDRESS_SWEEP_INTERVAL`], so a map kept full by an attack costs one pass per
    /// interval, not one per login.
    fn sweep_addresses(&mut self, now: Instant, settings: &ThrottleSettings) {
        if self.last_sweep.is_some_and(|last| now.saturating_duration_since(last) < ADDRESS_SWEEP_INTERVAL) {
            return;
        }
        self.last_sweep = Some(now);
        self.addresses.retain(|_, entry| {
            entry.bucket.drain(now, settings.failures_per_address, settings.window);
            entry.bucket.failures > 0.0 || entry.pending > 0
        });
    }
}

/// The key an address is throttled under: IPv4 addresses (also IPv4-mapped IPv6 ones) whole,
/// other IPv6 addresses by their /64 prefix.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        },
    }
}

pub struct LoginThrottle {
    settings: ThrottleSettings,
    clock: Clock,
    state: Mutex<State>,
}

/// A pending verification; record its outcome with [`Ticket::finish`]. Dropping it without an
/// outcome (a cancelled connection) counts as neither.
#[derive(Debug)]
pub struct Ticket {
    throttle: Option<Arc<LoginThrottle>>,
    /// `None` when the address is not tracked (the map was full).
    address: Option<IpAddr>,
    username: u64,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("settings", &self.settings).finish()
    }
}

impl LoginThrottle {
    pub fn new(settings: ThrottleSettings) -> Arc<LoginThrottle> {
        Self::with_clock(settings, Arc::new(Instant::now))
    }

    /// A throttle that reads the time from `clock`.
    pub fn with_clock(settings: ThrottleSettings, clock: Clock) -> Arc<LoginThrottle> {
        let now = clock();
        let state = State { addresses: HashMap::new(), last_sweep: None, usernames: UsernameSketch::new(now) };
        Arc::new(LoginThrottle { settings, clock, state: Mutex::new(state) })
    }

    /// Decides whether a password attempt from `address` for `username` is verified now, later, or
    /// not at all.
    pub fn admit(self: &Arc<Self>, address: IpAddr, username: &str) -> Admission {
        if !self.settings.enabled {
            return Admission::Verify {
                delay: Duration::ZERO,
                ticket: Ticket { throttle: None, address: None, username: 0 },
            };
        }
        let s = &self.settings;
        let now = (self.clock)();
        let address = address_key(address);
        let mut state = self.state.lock();
        if !state.addresses.contains_key(&address) && state.addresses.len() >= MAX_ADDRESSES {
            state.sweep_addresses(now, s);
        }
        let tracked = state.addresses.contains_key(&address) || state.addresses.len() < MAX_ADDRESSES;
        if tracked {
            let entry =
                state.addresses.entry(address).or_insert_with(|| AddressEntry { bucket: Bucket::new(now), pending: 0 });
            entry.bucket.drain(now, s.failures_per_address, s.window);
            // Refused once the next failure would overflow the bucket (drained failures are
            // fractional), or when an address that has been failing keeps many attempts in flight.
            let suspicious = entry.bucket.failures >= 0.5;
            if entry.bucket.failures > f64::from(s.failures_per_address) - 1.0
                || (suspicious && entry.pending >= s.pending_per_address)
            {
                return Admission::Refuse;
            }
            entry.pending += 1;
        }
        let key = state.usernames.key(username);
        let failures = state.usernames.estimate(key, now, s.failures_per_username, s.window);
        let excess = failures - (f64::from(s.failures_per_username) - 1.0);
        let delay = if excess > 0.0 {
            // 100 ms doubling per excess failure, capped.
            Duration::from_millis(100u64 << (excess as u32).min(5)).min(MAX_USERNAME_DELAY)
        } else {
            Duration::ZERO
        };
        Admission::Verify {
            delay,
            ticket: Ticket { throttle: Some(Arc::clone(self)), address: tracked.then_some(address), username: key },
        }
    }

    /// Tracked addresses (for tests and diagnostics).
    pub fn tracked_addresses(&self) -> usize {
        self.state.lock().addresses.len()
    }

    /// An upper estimate of the memory the throttle's tables hold.
    pub fn memory_bytes(&self) -> usize {
        let state = self.state.lock();
        let per_address = std::mem::size_of::<(IpAddr, AddressEntry)>() + 1; // + hashbrown's control byte
        SKETCH_BYTES + state.addresses.capacity() * per_address
    }
}

impl Ticket {
    /// Records the outcome of the verification.
    pub fn finish(mut self, success: bool) {
        self.settle(Some(success));
    }

    fn settle(&mut self, outcome: Option<bool>) {
        let Some(throttle) = self.throttle.take() else { return };
        let s = &throttle.settings;
        let now = (throttle.clock)();
        let mut state = throttle.state.lock();
        if let Some(entry) = self.address.and_then(|address| state.addresses.get_mut(&address)) {
            entry.pending = entry.pending.saturating_sub(1);
            if outcome == Some(false) {
                entry.bucket.drain(now, s.failures_per_address, s.window);
                entry.bucket.failures += 1.0;
            }
        }
        match outcome {
            Some(false) => state.usernames.failed(self.username, now, s.failures_per_username, s.window),
            Some(true) => state.usernames.succeeded(self.username, now, s.failures_per_username, s.window),
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

    /// A clock that moves only when the test says so.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> ManualClock {
            ManualClock(Arc::new(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock() += by;
        }

        fn clock(&self) -> Clock {
            let now = self.0.clone();
            Arc::new(move || *now.lock())
        }
    }

    fn fail(t: &Arc<LoginThrottle>, ip: &str, user: &str) -> bool {
        fail_at(t, ip.parse().unwrap(), user)
    }

    fn fail_at(t: &Arc<LoginThrottle>, ip: IpAddr, user: &str) -> bool {
        match t.admit(ip, user) {
            Admission::Verify { ticket, .. } => {
                ticket.finish(false);
                true
            }
            Admission::Refuse => false,
        }
    }

    /// The `n`-th address of a large private range (10.0.0.0/8).
    fn nth_address(n: usize) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 + n as u32))
    }

    fn delay_for(t: &Arc<LoginThrottle>, ip: IpAddr, user: &str) -> Duration {
        match t.admit(ip, user) {
            Admission::Verify { delay, .. } => delay,
            Admission::Refuse => panic!("{ip} refused"),
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
    fn failures_drain_with_the_clock() {
        let time = ManualClock::new();
        let t = LoginThrottle::with_clock(settings(), time.clock());
        for _ in 0..3 {
            assert!(fail(&t, "10.0.0.1", "victim"));
        }
        assert!(matches!(t.admit("10.0.0.1".parse().unwrap(), "x"), Admission::Refuse));
        time.advance(Duration::from_secs(60));
        assert!(fail(&t, "10.0.0.1", "victim"), "a drained address is admitted again");
    }

    #[test]
    fn disabled_throttle_admits_everything() {
        let t = LoginThrottle::new(ThrottleSettings { enabled: false, ..settings() });
        for _ in 0..10 {
            assert!(fail(&t, "10.0.0.1", "a"));
        }
    }

    /// Issue 15, item 7: 102,000 junk usernames from 5,100 addresses (20 failures each, the
    /// default address limit) used to fill the tables, after which a victim's username was no
    /// longer tracked and brute force on it ran at full speed. Now the victim is slowed after its
    /// 50 failures as if there were no junk at all.
    #[test]
    fn junk_usernames_from_many_addresses_do_not_switch_off_the_throttle_for_a_victim() {
        let time = ManualClock::new();
        let t = LoginThrottle::with_clock(ThrottleSettings::default(), time.clock());
        let mut address = 0;
        for junk in 0..102_000 {
            if junk % 20 == 0 {
                address += 1;
            }
            assert!(fail_at(&t, nth_address(address), &format!("junk-{junk}")));
        }
        // The brute force on the victim, from fresh addresses, 10 per address.
        for attempt in 0..50 {
            assert!(fail_at(&t, nth_address(200_000 + attempt / 10), "victim"));
        }
        let delay = delay_for(&t, nth_address(300_000), "victim");
        assert!(delay > Duration::ZERO, "the victim's username is no longer throttled");
        // The junk only adds noise far below the limit: other usernames are not slowed.
        assert_eq!(delay_for(&t, nth_address(300_001), "junk-7"), Duration::ZERO);
        assert_eq!(delay_for(&t, nth_address(300_002), "bystander"), Duration::ZERO);
    }

    /// The address map never grows past its cap, and buckets that drained are dropped to make
    /// room (drain before prune) so that a new attacker is tracked again.
    #[test]
    fn address_table_is_capped_and_drained_entries_make_room() {
        let time = ManualClock::new();
        let t = LoginThrottle::with_clock(settings(), time.clock());
        for n in 0..MAX_ADDRESSES + 50_000 {
            assert!(fail_at(&t, nth_address(n), "someone"));
        }
        assert_eq!(t.tracked_addresses(), MAX_ADDRESSES);
        // Untracked while the map is full of recent failures…
        let attacker = nth_address(MAX_ADDRESSES + 60_000);
        for _ in 0..10 {
            assert!(fail_at(&t, attacker, "x"));
        }
        // …but once those failures drained, the sweep drops them and the attacker is limited.
        time.advance(Duration::from_secs(61));
        for _ in 0..3 {
            assert!(fail_at(&t, attacker, "x"));
        }
        assert!(matches!(t.admit(attacker, "x"), Admission::Refuse));
        assert!(t.tracked_addresses() < 10, "{} addresses kept after draining", t.tracked_addresses());
    }

    /// 60 KB usernames used to be stored as keys (230 MB for a few thousand). The tables hold no
    /// username now, so their memory is the same whatever the usernames' length.
    #[test]
    fn memory_stays_bounded_for_60_kb_usernames() {
        let time = ManualClock::new();
        let t = LoginThrottle::with_clock(ThrottleSettings::default(), time.clock());
        let before = t.memory_bytes();
        let mut pending = Vec::new();
        for n in 0..10_000 {
            let username = format!("{n:05}{}", "u".repeat(60_000));
            let from = nth_address(n / 20);
            match t.admit(from, &username) {
                // Half stay in flight (a slow verification holds its ticket).
                Admission::Verify { ticket, .. } if n % 2 == 0 => pending.push(ticket),
                Admission::Verify { ticket, .. } => ticket.finish(false),
                Admission::Refuse => {}
            }
        }
        let after = t.memory_bytes();
        assert!(after <= SKETCH_BYTES + 1024 * 64, "{after} bytes");
        assert!(after - before <= 1024 * 64, "grew from {before} to {after} bytes");
        assert!(std::mem::size_of::<Ticket>() <= 48, "a ticket holds no username");
        drop(pending);
    }

    #[test]
    fn ipv6_addresses_are_throttled_by_their_64_bit_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        let t = LoginThrottle::new(settings());
        for _ in 0..3 {
            assert!(fail_at(&t, a, "x"));
        }
        assert!(matches!(t.admit(b, "x"), Admission::Refuse), "same /64");
        assert!(matches!(t.admit(other, "x"), Admission::Verify { .. }));
    }
}
