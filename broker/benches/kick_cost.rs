//! What applying a role change's kicks costs the session registry: 100,000 live sessions (registry
//! entries without sockets, see `testkit::sessions`), 1,000 of which hold the role; the kicks of
//! the 1,000 usernames are applied as the broker applies a `$CONTROL` outcome. Prints the time the
//! registry lock is held for the whole kick, the median of a few rounds.
//!
//! `cargo bench -p dynsec-broker --bench kick_cost` (figures in docs/architecture.md).
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dynsec_broker::security::KickTarget;
use dynsec_broker::testkit::sessions::Crowd;

const SESSIONS: usize = 100_000;
const EVERY: usize = 100;
const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut crowd = runtime.block_on(Crowd::gather(SESSIONS, |i| {
        Some(if i % EVERY == 0 { format!("holder-{}", i / EVERY) } else { format!("device-{i}") })
    }));
    let targets: Vec<KickTarget> =
        (0..SESSIONS / EVERY).map(|i| KickTarget::Username(format!("holder-{i}").into())).collect();
    let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let kicked: usize = targets.iter().map(|target| crowd.sessions.kick(target)).sum();
        times.push(started.elapsed());
        assert_eq!(kicked, targets.len());
        for member in &mut crowd.members {
            while member.mailbox.try_recv().is_ok() {}
        }
    }
    times.sort();
    println!(
        "kick_cost: {} kicks among {} sessions: median {:?} (min {:?}, max {:?}), {:?} per kick",
        targets.len(),
        SESSIONS,
        times[ROUNDS / 2],
        times[0],
        times[ROUNDS - 1],
        times[ROUNDS / 2] / targets.len() as u32
    );
}
