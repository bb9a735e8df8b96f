//! P8: a device fleet. `devices` clients each subscribe to their own command topic and publish
//! 100-byte telemetry once per `period`; one backend client sends one command per device per
//! period, spread evenly over the period. Both at the variant's QoS (0 or 1).
//!
//! - Devices connect from source addresses spread over 127.0.0.2–127.0.0.251
//!   (`mqtt::source_address`), so that 50,000 connections do not run out of ephemeral ports.
//! - Each command carries its sequence number and send time; a device counts it *on time* when it
//!   arrives within one period of being sent (the next command for it is due then).
//! - The broker's resident memory is sampled every `SAMPLE_EVERY` while traffic runs: the figure
//!   reported is the last sample, with the first sample after one period as the baseline of its
//!   growth (memory must stay flat once every device has been addressed once).
//!
//! Everything runs on one current-thread runtime on its own thread: tens of thousands of idle
//! tasks cost little, and the harness must leave the cores to the broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::flow::{decode_payload, encode_payload};
use crate::mqtt::{self, Client, Connect, Version};

/// Handshakes in flight while the fleet connects.
const CONNECT_CONCURRENCY: usize = 256;
const WAIT: Duration = Duration::from_secs(60);
const PAYLOAD: usize = 100;
/// How often the broker's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The backend sends the commands that are due every tick.
const BACKEND_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub addr: SocketAddr,
    pub devices: usize,
    pub qos: u8,
    pub period: Duration,
    /// How long the backend sends commands (and devices telemetry).
    pub duration: Duration,
    /// Username and password; `{n}` in either stands for the device's number (`backend` for the
    /// backend), for a fleet with one user per device.
    pub credentials: Option<(String, String)>,
    /// Unique per run: client ids and topics start with it.
    pub prefix: String,
}

#[derive(Debug, Clone, Default)]
pub struct FleetResult {
    pub connected: usize,
    pub refused: usize,
    pub connect_time: Duration,
    pub commands_sent: u64,
    /// Delivered within one period of being sent.
    pub on_time: u64,
    pub late: u64,
    /// Resident memory once the fleet is connected and subscribed (bytes).
    pub rss_connected: u64,
    /// (seconds since traffic started, bytes).
    pub rss_samples: Vec<(f64, u64)>,
}

impl FleetResult {
    pub fn rss_end(&self) -> u64 {
        self.rss_samples.last().map_or(self.rss_connected, |s| s.1)
    }

    /// Growth from the first sample taken after one period to the last, in %.
    pub fn growth_percent(&self, period: Duration) -> Option<f64> {
        let base = self.rss_samples.iter().find(|(t, _)| *t >= period.as_secs_f64())?.1 as f64;
        let end = self.rss_end() as f64;
        (base > 0.0).then(|| (end - base) / base * 100.0)
    }
}

fn command_topic(prefix: &str, device: usize) -> String {
    format!("bench/fleet/{prefix}/dev{device}/cmd")
}

fn telemetry_topic(prefix: &str, device: usize) -> String {
    format!("bench/fleet/{prefix}/dev{device}/telemetry")
}

struct Counters {
    epoch: Instant,
    /// Commands the backend has written.
    sent: AtomicU64,
    on_time: AtomicU64,
    late: AtomicU64,
    stop: AtomicBool,
}

/// Runs the fleet to completion (blocking); `rss` reads the broker's resident memory.
pub fn run(spec: &FleetSpec, rss: impl Fn() -> Option<u64>, on_progress: &mut dyn FnMut(&str)) -> FleetResult {
    let counters = Arc::new(Counters {
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        on_time: AtomicU64::new(0),
        late: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(usize, usize, Duration)>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = {
        let (spec, counters) = (spec.clone(), counters.clone());
        std::thread::Builder::new()
            .name("bench-fleet".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
                runtime.block_on(fleet(spec, counters, ready_tx, go_rx));
            })
            .expect("fleet thread")
    };
    let mut result = FleetResult::default();
    let Ok((connected, refused, connect_time)) = ready_rx.recv() else {
        let _ = thread.join();
        return result;
    };
    result.connected = connected;
    result.refused = refused;
    result.connect_time = connect_time;
    std::thread::sleep(Duration::from_secs(2));
    result.rss_connected = rss().unwrap_or(0);
    let _ = go_tx.send(());
    let started = Instant::now();
    // The backend stops after `duration`; devices keep listening one more period for stragglers.
    let end = started + spec.duration + spec.period;
    let mut next_sample = started + SAMPLE_EVERY;
    while Instant::now() < end {
        std::thread::sleep(next_sample.min(end).saturating_duration_since(Instant::now()));
        if Instant::now() >= next_sample {
            let t = started.elapsed().as_secs_f64();
            if let Some(bytes) = rss() {
                result.rss_samples.push((t, bytes));
                on_progress(&format!(
                    "{:.0} s: RSS {:.1} MB, {} commands on time",
                    t,
                    bytes as f64 / 1048576.0,
                    counters.on_time.load(Ordering::Relaxed)
                ));
            }
            next_sample += SAMPLE_EVERY;
        }
    }
    counters.stop.store(true, Ordering::Release);
    result.commands_sent = counters.sent.load(Ordering::Acquire);
    // Not joined: a broker that stopped reading leaves clients blocked in a write until it is
    // stopped (their sockets then fail and the thread ends by itself).
    drop(thread);
    result.on_time = counters.on_time.load(Ordering::Acquire);
    result.late = counters.late.load(Ordering::Acquire);
    result
}

async fn fleet(
    spec: FleetSpec,
    counters: Arc<Counters>,
    ready: std::sync::mpsc::Sender<(usize, usize, Duration)>,
    go: tokio::sync::oneshot::Receiver<()>,
) {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let started = Instant::now();
            let (go_all, _) = tokio::sync::broadcast::channel::<Instant>(1);
            let mut tasks = Vec::with_capacity(spec.devices);
            let mut connected = 0;
            let mut refused = 0;
            let semaphore = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
            let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
            for device in 0..spec.devices {
                let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
                let (spec, counters, up) = (spec.clone(), counters.clone(), up_tx.clone());
                let go = go_all.subscribe();
                tasks.push(tokio::task::spawn_local(async move {
                    let client = connect_device(&spec, device).await;
                    drop(permit);
                    let _ = up.send(client.is_some());
                    drop(up);
                    if let Some(client) = client {
                        run_device(client, &spec, device, counters, go).await;
                    }
                }));
            }
            drop(up_tx);
            while connected + refused < spec.devices {
                match up_rx.recv().await {
                    Some(true) => connected += 1,
                    Some(false) => refused += 1,
                    None => break,
                }
            }
            let _ = ready.send((connected, refused, started.elapsed()));
            if go.await.is_err() {
                counters.stop.store(true, Ordering::Release);
            }
            let traffic_start = Instant::now();
            let _ = go_all.send(traffic_start);
            backend(&spec, &counters, traffic_start).await;
            for task in tasks {
                let _ = task.await;
            }
        })
        .await
}

/// The credentials of device `n` (see [`FleetSpec::credentials`]).
fn credentials(spec: &FleetSpec, n: &str) -> Option<(String, String)> {
    spec.credentials.as_ref().map(|(user, password)| (user.replace("{n}", n), password.replace("{n}", n)))
}

async fn connect_device(spec: &FleetSpec, device: usize) -> Option<Client> {
    let id = format!("{}-dev{device}", spec.prefix);
    let credentials = credentials(spec, &device.to_string());
    let connect = Connect::with_credentials(Version::V311, &id, credentials.as_ref());
    let source = mqtt::source_address(device);
    let mut client = Client::connect_from(spec.addr, Some(source), &connect, WAIT).await.ok()?;
    match client.subscribe(&command_topic(&spec.prefix, device), spec.qos, WAIT).await {
        Ok(code) if code <= 2 => Some(client),
        _ => None,
    }
}

/// One device: telemetry once per period (its own phase), commands counted and acknowledged.
async fn run_device(
    client: Client,
    spec: &FleetSpec,
    device: usize,
    counters: Arc<Counters>,
    mut go: tokio::sync::broadcast::Receiver<Instant>,
) {
    let Ok(traffic_start) = go.recv().await else { return };
    let Client { mut stream, mut reader, version } = client;
    let phase = spec.period.mul_f64(device as f64 / spec.devices.max(1) as f64);
    let mut next_telemetry = tokio::time::Instant::from_std(traffic_start + phase);
    let stop_telemetry = traffic_start + spec.duration;
    let topic = telemetry_topic(&spec.prefix, device);
    let mut payload = [0u8; PAYLOAD];
    let mut out = BytesMut::with_capacity(256);
    let mut pkid = 0u16;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        if counters.stop.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_telemetry), if next_telemetry.into_std() < stop_telemetry => {
                out.clear();
                encode_payload(&mut payload, device as u64, counters.epoch.elapsed().as_nanos() as u64);
                pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                mqtt::publish(&mut out, version, topic.as_bytes(), &payload, spec.qos, pkid);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                next_telemetry += spec.period;
            }
            read = stream.read_buf(reader.buffer_mut()) => {
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let now = counters.epoch.elapsed();
                out.clear();
                while let Ok(Some(frame)) = reader.next_frame() {
                    if frame.packet_type != mqtt::PUBLISH {
                        continue;
                    }
                    let Some((qos, pkid, payload)) = frame.publish(version) else { continue };
                    if qos > 0 {
                        mqtt::puback(&mut out, pkid);
                    }
                    let Some((_, sent_nanos)) = decode_payload(&payload) else { continue };
                    let latency = now.saturating_sub(Duration::from_nanos(sent_nanos));
                    let counter = if latency <= spec.period { &counters.on_time } else { &counters.late };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            _ = check.tick() => {}
        }
    }
    out.clear();
    mqtt::disconnect(&mut out);
    let _ = stream.write_all(&out).await;
}

/// The backend: one command per device per period, evenly spread (counted in `counters.sent`).
async fn backend(spec: &FleetSpec, counters: &Counters, traffic_start: Instant) {
    let id = format!("{}-backend", spec.prefix);
    let credentials = credentials(spec, "backend");
    let connect = Connect::with_credentials(Version::V311, &id, credentials.as_ref());
    let Ok(client) = Client::connect(spec.addr, &connect, WAIT).await else { return };
    let Client { stream, version, .. } = client;
    let (mut read_half, mut write_half) = stream.into_split();
    // PUBACKs are read and discarded (the window is the broker's business here).
    let drain = tokio::task::spawn_local(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(read_half.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let total = (spec.duration.as_secs_f64() / spec.period.as_secs_f64() * spec.devices as f64) as u64;
    let per_second = spec.devices as f64 / spec.period.as_secs_f64();
    let mut sent = 0u64;
    let mut payload = [0u8; PAYLOAD];
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut pkid = 0u16;
    let mut tick = tokio::time::interval(BACKEND_TICK);
    while sent < total && !counters.stop.load(Ordering::Acquire) {
        tick.tick().await;
        let due = ((traffic_start.elapsed().as_secs_f64() * per_second) as u64).min(total);
        out.clear();
        while sent < due {
            let device = (sent % spec.devices as u64) as usize;
            encode_payload(&mut payload, sent, counters.epoch.elapsed().as_nanos() as u64);
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            mqtt::publish(&mut out, version, command_topic(&spec.prefix, device).as_bytes(), &payload, spec.qos, pkid);
            sent += 1;
        }
        if !out.is_empty() && write_half.write_all(&out).await.is_err() {
            break;
        }
        counters.sent.store(sent, Ordering::Release);
    }
    // Keep the connection (and its PUBACK reader) until the devices are told to stop.
    while !counters.stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.clear();
    mqtt::disconnect(&mut out);
    let _ = write_half.write_all(&out).await;
    drain.abort();
}
