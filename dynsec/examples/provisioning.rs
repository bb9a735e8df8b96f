//! Provisioning benchmark: N createClient commands through the command processor and the durable
//! store, in batches of B per control message, exactly as `$CONTROL` requests arrive.
//!
//!     cargo run --release -p dynsec --example provisioning [-- N B]
//!
//! Prints the time per batch at the start and at the end of the run (the durable cost of a
//! command must not grow with the number of clients) and the total, once without passwords (pure
//! store cost) and once with passwords at the default hash cost, next to the hash-cost floor:
//! N × one PBKDF2-SHA512 hash ÷ cores.

use std::time::{Duration, Instant};

use dynsec::commands::Admin;
use dynsec::password::{HashPolicy, PasswordHash};
use dynsec::{Dynsec, Options};

fn batch_payload(start: usize, count: usize, with_password: bool) -> Vec<u8> {
    let mut s = String::from(r#"{"commands":["#);
    for i in start..start + count {
        if i > start {
            s.push(',');
        }
        if with_password {
            s.push_str(&format!(r#"{{"command":"createClient","username":"device-{i:06}","password":"secret-{i}"}}"#));
        } else {
            s.push_str(&format!(r#"{{"command":"createClient","username":"device-{i:06}"}}"#));
        }
    }
    s.push_str("]}");
    s.into_bytes()
}

struct Run {
    batch_times: Vec<Duration>,
    total: Duration,
    /// The longest a reader of the model (a login, an ACL compile) waited meanwhile.
    longest_read_wait: Duration,
}

fn provision(total: usize, batch: usize, with_password: bool) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let (engine, _) =
        Dynsec::open_or_init(&dir.path().join("dynamic-security.json"), Options::default(), "admin", || {
            "admin-password".into()
        })
        .expect("open store");
    let payloads: Vec<Vec<u8>> =
        (0..total).step_by(batch).map(|s| batch_payload(s, batch.min(total - s), with_password)).collect();
    let mut batch_times = Vec::with_capacity(payloads.len());
    // A reader beside the admin, as logins and ACL checks are: how long it ever waits for the model.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (engine, done) = (std::sync::Arc::clone(&engine), std::sync::Arc::clone(&done));
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                engine.with_model(|m| m.clients.len());
                longest = longest.max(t.elapsed());
                std::thread::sleep(Duration::from_micros(200));
            }
            longest
        })
    };
    let started = Instant::now();
    for payload in &payloads {
        let t = Instant::now();
        let result = engine.handle_control(payload, Admin::default());
        batch_times.push(t.elapsed());
        assert!(!result.response.windows(7).any(|w| w == b"\"error\""), "a command failed");
    }
    let total_time = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest_read_wait = reader.join().expect("reader thread");
    assert_eq!(engine.with_model(|m| m.clients.len()), total + 1);
    Run { batch_times, total: total_time, longest_read_wait }
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len().max(1) as u32
}

fn report(name: &str, run: &Run, floor: Option<Duration>) {
    let n = run.batch_times.len();
    let window = (n / 10).max(1);
    let start = mean(&run.batch_times[..window]);
    let end = mean(&run.batch_times[n - window..]);
    println!("{name}");
    println!(
        "  batches: {n}, first {window} mean {:>9.2?}, last {window} mean {:>9.2?}, end/start {:.2}",
        start,
        end,
        end.as_secs_f64() / start.as_secs_f64()
    );
    // The slowest batches show what a mean hides: a pause (the snapshot rewrite) in one batch.
    let mut slowest: Vec<(usize, Duration)> = run.batch_times.iter().copied().enumerate().collect();
    slowest.sort_by_key(|&(_, time)| std::cmp::Reverse(time));
    let listed: Vec<String> = slowest.iter().take(4).map(|(i, t)| format!("#{} {t:.2?}", i + 1)).collect();
    println!("  slowest batches: {}", listed.join(", "));
    println!("  longest wait of a reader of the model: {:.2?}", run.longest_read_wait);
    print!("  total: {:.2?}", run.total);
    if let Some(floor) = floor {
        print!("   hash-cost floor: {:.2?}   total/floor: {:.2}", floor, run.total.as_secs_f64() / floor.as_secs_f64());
    }
    println!();
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(100_000);
    let batch = args.get(1).copied().unwrap_or(1000).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("provisioning {total} clients in batches of {batch} on {cores} cores");

    let plain = provision(total, batch, false);
    report("without passwords (store cost only):", &plain, None);

    // One hash, measured on one core.
    let samples = 200;
    let t = Instant::now();
    for i in 0..samples {
        let _ = PasswordHash::new(format!("pw{i}").as_bytes(), HashPolicy::default());
    }
    let one_hash = t.elapsed() / samples;
    let floor = one_hash * total as u32 / cores as u32;
    println!("one PBKDF2-SHA512 hash ({:?}): {one_hash:.2?}", HashPolicy::default());
    let hashed = provision(total, batch, true);
    report("with passwords (default hash cost):", &hashed, Some(floor));
}
