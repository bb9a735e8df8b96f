//! P4: a connect storm. `clients` distinct users, each with its own PBKDF2-SHA512 password,
//! connect as fast as possible (a bounded number of handshakes in flight), while 10 connected
//! clients publish at a steady rate to a subscriber that measures each message's end-to-end
//! latency. Three roles, three threads with a current-thread runtime each: storm, steady
//! publishers, latency subscriber.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::flow::{decode_payload, encode_payload};
use crate::mqtt::{self, Client, Connect, Version};
use crate::security_setup::{USER_100, credentials, storm_user};

/// Handshakes in flight at once.
const CONCURRENCY: usize = 256;
const STEADY_PUBLISHERS: usize = 10;
/// Each steady publisher sends one message per interval (10 × 200 msg/s).
const STEADY_INTERVAL: Duration = Duration::from_millis(5);
/// Steady traffic runs this long before and after the storm.
const MARGIN: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct StormResult {
    pub connected: usize,
    pub refused: usize,
    pub storm_time: Duration,
    /// Latencies of the steady messages sent during the storm.
    pub latencies: Vec<Duration>,
    /// Steady messages sent during the storm that never arrived.
    pub steady_lost: usize,
}

impl StormResult {
    pub fn connects_per_sec(&self) -> f64 {
        self.connected as f64 / self.storm_time.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// The window in which steady messages count (set by the storm thread).
#[derive(Default)]
struct Window {
    start: Option<u64>,
    end: Option<u64>,
}

/// Runs one storm of `clients` users of round `round` (credentials only when `auth`).
pub fn run(
    addr: SocketAddr,
    version: Version,
    round: usize,
    clients: usize,
    auth: bool,
) -> Result<StormResult, String> {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Mutex::new(Window::default()));
    let steady_user = credentials(auth, USER_100);

    // Latency subscriber.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = {
        let (stop, user) = (stop.clone(), steady_user.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let connect = Connect::with_credentials(version, "steady-sub", user.as_ref());
                let mut client = match Client::connect(addr, &connect, WAIT).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("steady subscriber: {e}")));
                        return Vec::new();
                    }
                };
                if let Err(e) = client.subscribe("bench/steady/#", 0, WAIT).await {
                    let _ = ready_tx.send(Err(format!("steady subscribe: {e}")));
                    return Vec::new();
                }
                let _ = ready_tx.send(Ok(()));
                let mut seen = Vec::new(); // (sent nanos, latency)
                while !stop.load(Ordering::Acquire) {
                    match tokio::time::timeout(Duration::from_millis(50), client.reader.fill(&mut client.stream)).await
                    {
                        Err(_) => continue,
                        Ok(Ok(true)) => {}
                        Ok(_) => break,
                    }
                    let now = epoch.elapsed().as_nanos() as u64;
                    while let Ok(Some(frame)) = client.reader.next_frame() {
                        if let Some((_, _, payload)) = frame.publish(version)
                            && let Some((_, sent)) = decode_payload(&payload)
                        {
                            seen.push((sent, Duration::from_nanos(now.saturating_sub(sent))));
                        }
                    }
                }
                seen
            })
        })
    };
    ready_rx.recv_timeout(WAIT).map_err(|_| "steady subscriber not ready".to_owned())??;

    // Steady publishers.
    let publishers = {
        let (stop, user) = (stop.clone(), steady_user.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut sent = Vec::new(); // send nanos of every steady message
                let mut clients = Vec::new();
                for i in 0..STEADY_PUBLISHERS {
                    let id = format!("steady-pub-{i}");
                    let connect = Connect::with_credentials(version, &id, user.as_ref());
                    match Client::connect(addr, &connect, WAIT).await {
                        Ok(c) => clients.push(c),
                        Err(e) => return Err(format!("steady publisher: {e}")),
                    }
                }
                let mut ticker = tokio::time::interval(STEADY_INTERVAL / STEADY_PUBLISHERS as u32);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut payload = [0u8; 100];
                let mut buf = BytesMut::with_capacity(256);
                let mut seq = 0u64;
                while !stop.load(Ordering::Acquire) {
                    ticker.tick().await;
                    let index = (seq % STEADY_PUBLISHERS as u64) as usize;
                    let nanos = epoch.elapsed().as_nanos() as u64;
                    encode_payload(&mut payload, seq, nanos);
                    buf.clear();
                    let topic = format!("bench/steady/{index}");
                    mqtt::publish(&mut buf, version, topic.as_bytes(), &payload, 0, 0);
                    if clients[index].send(&buf).await.is_err() {
                        return Err("steady publisher disconnected".to_owned());
                    }
                    sent.push(nanos);
                    seq += 1;
                }
                Ok(sent)
            })
        })
    };
    std::thread::sleep(MARGIN);

    // The storm.
    let storm = {
        let window = window.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let started = Instant::now();
                window.lock().unwrap_or_else(|p| p.into_inner()).start = Some(epoch.elapsed().as_nanos() as u64);
                // Held as std sockets: they outlive this runtime.
                let (connected, refused) = mqtt::connect_many(addr, version, clients, CONCURRENCY, WAIT, |index| {
                    let user = storm_user(round, index);
                    let credentials = credentials(auth, &user);
                    (user, credentials)
                })
                .await;
                let storm_time = started.elapsed();
                window.lock().unwrap_or_else(|p| p.into_inner()).end = Some(epoch.elapsed().as_nanos() as u64);
                (connected, refused, storm_time)
            })
        })
    };
    let (connected, refused, storm_time) = storm.join().map_err(|_| "storm thread panicked")?;
    std::thread::sleep(MARGIN);
    stop.store(true, Ordering::Release);
    let sent = publishers.join().map_err(|_| "steady publishers panicked")??;
    let received = subscriber.join().map_err(|_| "steady subscriber panicked")?;
    drop(connected);

    let window = window.lock().unwrap_or_else(|p| p.into_inner());
    let (start, end) = (window.start.unwrap_or(0), window.end.unwrap_or(u64::MAX));
    let during = |nanos: u64| nanos >= start && nanos <= end;
    let latencies: Vec<Duration> = received.iter().filter(|(sent, _)| during(*sent)).map(|(_, l)| *l).collect();
    let sent_during = sent.iter().filter(|s| during(**s)).count();
    Ok(StormResult {
        connected: connected_count(clients, refused),
        refused,
        storm_time,
        steady_lost: sent_during.saturating_sub(latencies.len()),
        latencies,
    })
}

fn connected_count(clients: usize, refused: usize) -> usize {
    clients - refused
}
