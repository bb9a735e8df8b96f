//! One measured message flow: one publisher → N subscribers on one topic, 100-byte payloads,
//! QoS 0 or 1. The publisher and the subscribers each run on their own thread with a
//! current-thread runtime (the generator must not be the bottleneck, and must not share a
//! scheduler with what it measures).
//!
//! - The publisher writes batches (QoS 0: 64 per write; QoS 1: as many as its window of 100
//!   unacknowledged messages allows) until it has sent `messages` or `max_duration` is over.
//! - Each payload starts with a sequence number and a send timestamp; every subscriber keeps a
//!   bitmap of the sequence numbers it received (duplicates and losses are counted exactly) and
//!   acknowledges QoS 1 deliveries once per read.
//! - Rate = unique deliveries (all subscribers) ÷ (first publish → last delivery); subscribers
//!   stop at most `drain_limit` (usually [`DRAIN_LIMIT`]) after the publisher, and what has not
//!   arrived by then counts as
//!   not delivered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::mqtt::{self, Client, Connect, Version};

/// Unacknowledged QoS 1 messages a publisher may have (the broker routers' own window).
pub const QOS1_WINDOW: usize = 100;
/// QoS 0 messages per write.
const QOS0_BATCH: usize = 64;
/// Once the publisher is done, how long subscribers wait for a missing message (a QoS 0 run
/// that dropped messages always waits this long; the rate is measured to the last delivery).
const DRAIN_IDLE: Duration = Duration::from_millis(1000);
/// Once the publisher is done, the longest subscribers keep receiving at all: a broker that
/// queued far more than it can deliver (mosquitto with 10,000 ACLs delivers ~2,000 msg/s) would
/// otherwise keep a run going for minutes. What is still queued then counts as not delivered.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(1500);
/// Longest wait for a connection, a SUBACK or any sign of progress.
const WAIT: Duration = Duration::from_secs(20);

/// What to measure.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub addr: SocketAddr,
    pub version: Version,
    pub qos: u8,
    pub subscribers: usize,
    pub messages: u64,
    pub max_duration: Duration,
    pub payload: usize,
    pub topic: String,
    /// (username, password) for every client; `None` connects without credentials.
    pub credentials: Option<(String, String)>,
    /// Prefix of the client ids (unique per run).
    pub client_prefix: String,
    /// How long subscribers keep receiving once the publisher is done.
    pub drain_limit: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct FlowResult {
    pub sent: u64,
    /// Unique deliveries over all subscribers.
    pub received: u64,
    pub duplicates: u64,
    /// `sent × subscribers − received`.
    pub lost: u64,
    pub elapsed: Duration,
}

impl FlowResult {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Shared between the publisher and the subscribers.
struct Progress {
    epoch: Instant,
    first_publish: Mutex<Option<Instant>>,
    sent: AtomicU64,
    publisher_done: AtomicBool,
    failed: Mutex<Option<String>>,
}

impl Progress {
    fn fail(&self, message: String) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
        self.publisher_done.store(true, Ordering::Release);
    }
}

fn connect_params<'a>(spec: &'a FlowSpec, client_id: &'a str) -> Connect<'a> {
    Connect::with_credentials(spec.version, client_id, spec.credentials.as_ref())
}

/// Payload: sequence number, nanoseconds since the run's epoch, padding.
pub fn encode_payload(buf: &mut [u8], seq: u64, nanos: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&nanos.to_le_bytes());
}

pub fn decode_payload(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let nanos = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, nanos))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Runs the flow to completion (blocking).
pub fn run(spec: &FlowSpec) -> Result<FlowResult, String> {
    run_full(spec, spec.addr, None)
}

/// Runs the flow with the subscribers connected to `subscriber_addr` and the publisher to
/// `spec.addr` (two nodes of a cluster: `crate::cluster`).
pub fn run_between(spec: &FlowSpec, subscriber_addr: SocketAddr) -> Result<FlowResult, String> {
    run_full(spec, subscriber_addr, None)
}

/// Like [`run`]; `session_expiry` `Some(secs)`: the subscribers ask for persistent sessions
/// (MQTT 3.1.1 `clean_session 0`, v5 that Session Expiry Interval), the case where a broker
/// with persistence stores every message.
pub fn run_with(spec: &FlowSpec, session_expiry: Option<u32>) -> Result<FlowResult, String> {
    run_full(spec, spec.addr, session_expiry)
}

fn run_full(spec: &FlowSpec, subscriber_addr: SocketAddr, session_expiry: Option<u32>) -> Result<FlowResult, String> {
    let progress = Arc::new(Progress {
        epoch: Instant::now(),
        first_publish: Mutex::new(None),
        sent: AtomicU64::new(0),
        publisher_done: AtomicBool::new(false),
        failed: Mutex::new(None),
    });
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let subscribers = {
        let (mut spec, progress) = (spec.clone(), progress.clone());
        spec.addr = subscriber_addr;
        std::thread::Builder::new()
            .name("bench-subscribers".into())
            .spawn(move || runtime().block_on(subscribers(spec, session_expiry, progress, ready_tx)))
            .map_err(|e| e.to_string())?
    };
    let ready = ready_rx.recv_timeout(WAIT * 3).map_err(|_| "subscribers not ready".to_owned()).and_then(|r| r);
    if let Err(e) = ready {
        progress.fail(e.clone());
        let _ = subscribers.join();
        return Err(e);
    }
    let publisher = {
        let (spec, progress) = (spec.clone(), progress.clone());
        std::thread::Builder::new()
            .name("bench-publisher".into())
            .spawn(move || {
                if let Err(e) = runtime().block_on(publisher(&spec, &progress)) {
                    progress.fail(format!("publisher: {e}"));
                }
                progress.publisher_done.store(true, Ordering::Release);
            })
            .map_err(|e| e.to_string())?
    };
    let _ = publisher.join();
    let received = subscribers.join().map_err(|_| "subscriber thread panicked".to_owned())?;
    if let Some(e) = progress.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let (received, duplicates, last) = received?;
    let sent = progress.sent.load(Ordering::Acquire);
    let first = progress.first_publish.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(progress.epoch);
    let elapsed = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(first));
    Ok(FlowResult {
        sent,
        received,
        duplicates,
        lost: (sent * spec.subscribers as u64).saturating_sub(received),
        elapsed,
    })
}

async fn publisher(spec: &FlowSpec, progress: &Progress) -> Result<(), String> {
    let id = format!("{}-pub", spec.client_prefix);
    let client = Client::connect(spec.addr, &connect_params(spec, &id), WAIT).await.map_err(|e| e.to_string())?;
    let version = client.version;
    let (mut read_half, mut write_half) = client.stream.into_split();
    let mut reader = client.reader;
    let window = Arc::new(Semaphore::new(QOS1_WINDOW));
    let acked = Arc::new(AtomicU64::new(0));
    // QoS 1: a reader task returns a window slot per PUBACK.
    let ack_task = (spec.qos > 0).then(|| {
        let (window, acked) = (window.clone(), acked.clone());
        tokio::spawn(async move {
            loop {
                match tokio::io::AsyncReadExt::read_buf(&mut read_half, reader.buffer_mut()).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut count = 0;
                while let Ok(Some(frame)) = reader.next_frame() {
                    if frame.packet_type == mqtt::PUBACK {
                        count += 1;
                    }
                }
                acked.fetch_add(count as u64, Ordering::Release);
                window.add_permits(count);
            }
        })
    });
    let mut payload = vec![0u8; spec.payload.max(16)];
    let mut buf = BytesMut::with_capacity(QOS0_BATCH * (spec.payload + 64));
    let deadline = Instant::now() + spec.max_duration;
    let topic = spec.topic.as_bytes();
    let mut seq = 0u64;
    let mut pkid = 0u16;
    while seq < spec.messages && Instant::now() < deadline {
        let batch = if spec.qos == 0 {
            QOS0_BATCH
        } else {
            let permit = tokio::time::timeout(WAIT, window.acquire()).await;
            let permit = permit.map_err(|_| "no PUBACK for 20 s".to_owned())?.map_err(|e| e.to_string())?;
            permit.forget();
            let more = window.available_permits();
            window.forget_permits(more);
            1 + more
        };
        let batch = batch.min((spec.messages - seq) as usize);
        let nanos = progress.epoch.elapsed().as_nanos() as u64;
        buf.clear();
        for _ in 0..batch {
            encode_payload(&mut payload, seq, nanos);
            if spec.qos > 0 {
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            }
            mqtt::publish(&mut buf, version, topic, &payload, spec.qos, pkid);
            seq += 1;
        }
        if seq == batch as u64 {
            *progress.first_publish.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        write_half.write_all(&buf).await.map_err(|e| format!("write: {e}"))?;
        progress.sent.store(seq, Ordering::Release);
    }
    if let Some(task) = ack_task {
        // Every message acknowledged before the publisher counts as done.
        let wait_until = Instant::now() + WAIT;
        while acked.load(Ordering::Acquire) < seq && Instant::now() < wait_until && !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.abort();
    }
    buf.clear();
    mqtt::disconnect(&mut buf);
    let _ = write_half.write_all(&buf).await;
    Ok(())
}

/// Connects and subscribes every subscriber, reports readiness, then receives until every
/// message arrived or nothing more arrives.
async fn subscribers(
    spec: FlowSpec,
    session_expiry: Option<u32>,
    progress: Arc<Progress>,
    ready: mpsc::Sender<Result<(), String>>,
) -> Result<(u64, u64, Option<Instant>), String> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut clients = Vec::with_capacity(spec.subscribers);
            for i in 0..spec.subscribers {
                let id = format!("{}-sub-{i}", spec.client_prefix);
                let params = connect_params(&spec, &id);
                let connected = match session_expiry {
                    Some(secs) => Client::connect_persistent(spec.addr, &params, secs, WAIT).await,
                    None => Client::connect(spec.addr, &params, WAIT).await,
                };
                let mut client = match connected {
                    Ok(client) => client,
                    Err(e) => {
                        let _ = ready.send(Err(format!("subscriber {i}: {e}")));
                        return Err(e.to_string());
                    }
                };
                match client.subscribe(&spec.topic, spec.qos, WAIT).await {
                    Ok(code) if code <= 2 => clients.push(client),
                    Ok(code) => {
                        let _ = ready.send(Err(format!("SUBACK code {code:#x}")));
                        return Err("subscription refused".into());
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("subscribe: {e}")));
                        return Err(e.to_string());
                    }
                }
            }
            let _ = ready.send(Ok(()));
            let tasks: Vec<_> = clients
                .into_iter()
                .map(|client| {
                    tokio::task::spawn_local(receive(client, spec.messages, spec.drain_limit, progress.clone()))
                })
                .collect();
            let (mut received, mut duplicates, mut last) = (0, 0, None::<Instant>);
            for task in tasks {
                let outcome = task.await.map_err(|e| e.to_string())?;
                received += outcome.received;
                duplicates += outcome.duplicates;
                if let Some(t) = outcome.last {
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
                if let Some(error) = outcome.error {
                    return Err(error);
                }
            }
            Ok((received, duplicates, last))
        })
        .await
}

struct Received {
    received: u64,
    duplicates: u64,
    last: Option<Instant>,
    error: Option<String>,
}

async fn receive(mut client: Client, capacity: u64, drain_limit: Duration, progress: Arc<Progress>) -> Received {
    let mut seen = vec![0u64; (capacity as usize).div_ceil(64) + 1];
    let mut out = Received { received: 0, duplicates: 0, last: None, error: None };
    let mut acks = BytesMut::with_capacity(4096);
    let mut last_progress = Instant::now();
    let mut done_seen = None::<Instant>;
    loop {
        let done = progress.publisher_done.load(Ordering::Acquire);
        if done && out.received >= progress.sent.load(Ordering::Acquire) {
            break;
        }
        if done && done_seen.get_or_insert_with(Instant::now).elapsed() > drain_limit {
            break;
        }
        let idle_limit = if done { DRAIN_IDLE } else { WAIT };
        if last_progress.elapsed() > idle_limit {
            if !done {
                out.error = Some("no delivery for 20 s".into());
            }
            break;
        }
        let read = tokio::time::timeout(Duration::from_millis(50), client.reader.fill(&mut client.stream)).await;
        match read {
            Err(_) => continue,
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => {
                if !done {
                    out.error = Some("subscriber disconnected by the broker".into());
                }
                break;
            }
        }
        let now = Instant::now();
        acks.clear();
        loop {
            let frame = match client.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            };
            if frame.packet_type != mqtt::PUBLISH {
                continue;
            }
            let Some((qos, pkid, payload)) = frame.publish(client.version) else { continue };
            if qos > 0 {
                mqtt::puback(&mut acks, pkid);
            }
            let Some((seq, _)) = decode_payload(&payload) else { continue };
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            match seen.get_mut(word) {
                Some(w) if *w & (1 << bit) == 0 => {
                    *w |= 1 << bit;
                    out.received += 1;
                    out.last = Some(now);
                    last_progress = now;
                }
                _ => out.duplicates += 1,
            }
        }
        if !acks.is_empty() && client.stream.write_all(&acks).await.is_err() {
            break;
        }
    }
    let mut bye = BytesMut::new();
    mqtt::disconnect(&mut bye);
    let _ = client.stream.write_all(&bye).await;
    out
}
