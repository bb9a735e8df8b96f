//! How much a client subscribing many new filters holds up everybody else's routing while the
//! broker stores many retained messages (docs/rumqttd.md defect 19: rumqttd 0.20 scans its whole
//! retained store on the router thread for every new filter of a link), against a broker that is
//! already running.
//!
//!     bench-retained-stall HOST:PORT RETAINED FILTERS [one-by-one]
//!
//! 1. Stores RETAINED retained messages (QoS 1, 100-byte payloads, one topic each, under
//!    `stall/r/`).
//! 2. Streams QoS 1 messages from one client to another (`stall/live`, 20 in flight) and records
//!    when each arrives: for 2 s alone (the baseline), then while a persistent-session client
//!    subscribes FILTERS new wildcard filters, one SUBSCRIBE each, all written at once (with
//!    `one-by-one`: each after the previous one's SUBACK) — they match none of the retained
//!    messages, so nothing but the lookup is measured — until the last SUBACK; then 1 s more.
//! 3. Prints, for the baseline and the subscribing phase, the stream's rate and its longest gap
//!    between two deliveries, and how long the subscriptions took.
//!
//! Run it on a fresh broker each time: the retained messages stay (`stall/r/` is not cleared).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dynsec_bench::mqtt::{self, Client, Connect, PUBACK, PUBLISH, SUBACK, Version};

const WAIT: Duration = Duration::from_secs(30);
const FILL_WINDOW: usize = 200;
const STREAM_WINDOW: usize = 20;
const PAYLOAD: [u8; 100] = [b'r'; 100];

fn usage() -> ! {
    eprintln!("usage: bench-retained-stall HOST:PORT RETAINED FILTERS [one-by-one]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 && !(args.len() == 4 && args[3] == "one-by-one") {
        usage();
    }
    let one_by_one = args.len() == 4;
    let addr: SocketAddr = args[0].parse().unwrap_or_else(|_| usage());
    let retained: usize = args[1].parse().unwrap_or_else(|_| usage());
    let filters: usize = args[2].parse().unwrap_or_else(|_| usage());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    if let Err(e) = runtime.block_on(run(addr, retained, filters, one_by_one)) {
        eprintln!("bench-retained-stall: {e}");
        std::process::exit(1);
    }
}

async fn connect(addr: SocketAddr, client_id: &str, persistent: bool) -> Result<Client, String> {
    let connect = Connect::with_credentials(Version::V311, client_id, None);
    let client = if persistent {
        Client::connect_persistent(addr, &connect, 3600, WAIT).await
    } else {
        Client::connect(addr, &connect, WAIT).await
    };
    client.map_err(|e| format!("{client_id}: {e}"))
}

/// Publishes `count` retained messages with a window of `FILL_WINDOW` unacknowledged.
async fn fill(addr: SocketAddr, count: usize) -> Result<(), String> {
    let mut client = connect(addr, "stall-filler", false).await?;
    let (mut sent, mut acked) = (0, 0);
    let mut buf = BytesMut::new();
    while acked < count {
        while sent < count && sent - acked < FILL_WINDOW {
            let topic = format!("stall/r/{}/{sent}", sent / 1000);
            let pkid = (sent % 60_000) as u16 + 1;
            mqtt::publish_with(&mut buf, Version::V311, topic.as_bytes(), &PAYLOAD, 1, pkid, true);
            sent += 1;
        }
        client.send(&buf).await.map_err(|e| e.to_string())?;
        buf.clear();
        let frame = client.next(WAIT).await.map_err(|e| format!("filling: {e}"))?;
        if frame.packet_type == PUBACK {
            acked += 1;
        }
    }
    Ok(())
}

/// What the streaming subscriber saw: when each message arrived.
async fn stream(addr: SocketAddr, until: tokio::sync::watch::Receiver<bool>) -> Result<Vec<Instant>, String> {
    let mut subscriber = connect(addr, "stall-sub", false).await?;
    subscriber.subscribe("stall/live", 1, WAIT).await.map_err(|e| e.to_string())?;
    let mut publisher = connect(addr, "stall-pub", false).await?;
    let mut arrivals = Vec::new();
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut buf = BytesMut::new();
    while !*until.borrow() {
        while sent - acked < STREAM_WINDOW {
            mqtt::publish(&mut buf, Version::V311, b"stall/live", &PAYLOAD, 1, (sent % 60_000) as u16 + 1);
            sent += 1;
        }
        publisher.send(&buf).await.map_err(|e| e.to_string())?;
        buf.clear();
        tokio::select! {
            frame = publisher.next(WAIT) => {
                if frame.map_err(|e| format!("publisher: {e}"))?.packet_type == PUBACK {
                    acked += 1;
                }
            }
            frame = subscriber.next(WAIT) => {
                let frame = frame.map_err(|e| format!("subscriber: {e}"))?;
                if frame.packet_type == PUBLISH {
                    arrivals.push(Instant::now());
                    let (_, pkid, _) = frame.publish(Version::V311).ok_or("a bad PUBLISH")?;
                    mqtt::puback(&mut buf, pkid);
                    subscriber.send(&buf).await.map_err(|e| e.to_string())?;
                    buf.clear();
                }
            }
        }
    }
    Ok(arrivals)
}

/// Subscribes `count` new filters, one SUBSCRIBE each, written at once (as a client resuming
/// its work sends them) or `one_by_one`; returns when it started and when the last SUBACK came.
async fn subscribe_many(addr: SocketAddr, count: usize, one_by_one: bool) -> Result<(Instant, Instant), String> {
    let mut client = connect(addr, "stall-subscriber", true).await?;
    let mut buf = BytesMut::new();
    let start = Instant::now();
    let mut subacks = 0;
    for n in 0..count {
        mqtt::subscribe(&mut buf, Version::V311, (n % 60_000) as u16 + 1, &format!("stall/none/{n}/+"), 1);
        if !one_by_one && n + 1 < count {
            continue;
        }
        client.send(&buf).await.map_err(|e| e.to_string())?;
        buf.clear();
        while subacks < if one_by_one { n + 1 } else { count } {
            if client.next(WAIT).await.map_err(|e| format!("subscribing: {e}"))?.packet_type == SUBACK {
                subacks += 1;
            }
        }
    }
    Ok((start, Instant::now()))
}

/// Rate (messages/s) and longest gap between deliveries within `[from, to]`.
fn phase(arrivals: &[Instant], from: Instant, to: Instant) -> (f64, Duration) {
    let within: Vec<Instant> = arrivals.iter().copied().filter(|t| *t >= from && *t <= to).collect();
    let mut longest = within.first().map_or(to - from, |first| *first - from);
    for pair in within.windows(2) {
        longest = longest.max(pair[1] - pair[0]);
    }
    if let Some(last) = within.last() {
        longest = longest.max(to - *last);
    }
    (within.len() as f64 / (to - from).as_secs_f64(), longest)
}

async fn run(addr: SocketAddr, retained: usize, filters: usize, one_by_one: bool) -> Result<(), String> {
    let filled = Instant::now();
    fill(addr, retained).await?;
    eprintln!("{retained} retained messages stored in {:.1} s", filled.elapsed().as_secs_f64());
    let (stop, until) = tokio::sync::watch::channel(false);
    let streaming = tokio::spawn(stream(addr, until));
    let baseline_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_end = Instant::now();
    let (start, end) = subscribe_many(addr, filters, one_by_one).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let arrivals = streaming.await.map_err(|e| e.to_string())??;
    let (base_rate, base_gap) = phase(&arrivals, baseline_start + Duration::from_millis(500), baseline_end);
    let (rate, gap) = phase(&arrivals, start, end);
    println!(
        "baseline: {base_rate:.0} msg/s, longest gap {:.1} ms; while subscribing {filters} filters ({:.2} s, {:.1} ms each): \
         {rate:.0} msg/s, longest gap {:.1} ms",
        base_gap.as_secs_f64() * 1000.0,
        (end - start).as_secs_f64(),
        (end - start).as_secs_f64() * 1000.0 / filters.max(1) as f64,
        gap.as_secs_f64() * 1000.0
    );
    Ok(())
}
