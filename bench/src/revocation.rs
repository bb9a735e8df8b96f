//! P5 (revocation) and the idle-connection half of P6: thousands of idle connected clients, and
//! one victim whose rights an admin revokes while it publishes.
//!
//! The victim (MQTT 5) publishes QoS 1 messages one after another on its own thread and records
//! when each PUBACK arrives and its reason code (0x87 = refused by the ACL), and when the broker
//! disconnects it. The admin sends `removeRoleACL` (then restores the ACL) or `disableClient`
//! (then enables it and lets the victim reconnect) and measures from the arrival of the command's
//! reply to the victim's first refusal or disconnection, whichever comes first (both brokers
//! disconnect the clients of a role whose ACLs change). A refusal or disconnection seen
//! before the reply arrived counts as 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::mqtt::{self, Client, Connect, Version};
use crate::provisioning::{admin, command};
use crate::security_setup::{self, IDLE_USER, VICTIM_ROLE, VICTIM_TOPIC, VICTIM_USER, password_of};

const CONCURRENCY: usize = 256;
const WAIT: Duration = Duration::from_secs(30);
/// Longest wait for the victim to notice a revocation.
const NOTICE_WAIT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Idle connected clients (plain sockets, nobody reads them).
pub struct IdleConnections {
    pub sockets: Vec<std::net::TcpStream>,
    pub refused: usize,
    pub connect_time: Duration,
}

/// Connects `count` idle clients (user `idle` when `auth`) on a thread of their own.
pub fn connect_idle(addr: SocketAddr, version: Version, count: usize, auth: bool) -> Result<IdleConnections, String> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let started = Instant::now();
            let credentials = security_setup::credentials(auth, IDLE_USER);
            let (sockets, refused) = mqtt::connect_many(addr, version, count, CONCURRENCY, WAIT, |index| {
                (format!("idle-{index}"), credentials.clone())
            })
            .await;
            IdleConnections { sockets, refused, connect_time: started.elapsed() }
        })
    })
    .join()
    .map_err(|_| "idle connection thread panicked".to_owned())
}

/// What the victim saw, with times.
#[derive(Default)]
struct VictimLog {
    accepted: Option<Instant>,
    refusals: Vec<Instant>,
    disconnects: Vec<Instant>,
    connected: bool,
}

struct Victim {
    log: Arc<Mutex<VictimLog>>,
    reconnect: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Victim {
    fn start(addr: SocketAddr) -> Victim {
        let log = Arc::new(Mutex::new(VictimLog::default()));
        let reconnect = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, reconnect, stop) = (log.clone(), reconnect.clone(), stop.clone());
            std::thread::spawn(move || runtime().block_on(victim_loop(addr, log, reconnect, stop)))
        };
        Victim { log, reconnect, stop, thread: Some(thread) }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, VictimLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the victim is connected and had a publish accepted after `since`; asks it to
    /// reconnect (rarely: a refused login counts against the address) while it is disconnected.
    async fn wait_accepting(&self, since: Instant) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let mut next_nudge = Instant::now();
        while Instant::now() < deadline {
            {
                let log = self.log();
                if log.connected && log.accepted.is_some_and(|t| t > since) {
                    return Ok(());
                }
                if !log.connected && Instant::now() >= next_nudge {
                    self.reconnect.store(true, Ordering::Release);
                    next_nudge = Instant::now() + Duration::from_millis(500);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err("the victim's publishes are not accepted".into())
    }

    /// The first refusal or disconnection after `since`, whichever comes first (brokers may
    /// answer a revocation either way: mosquitto and ours disconnect the clients of a changed
    /// role; a client whose rights are gone and who stays connected gets refusals).
    async fn wait_revoked(&self, since: Instant) -> Option<Instant> {
        let deadline = Instant::now() + NOTICE_WAIT;
        while Instant::now() < deadline {
            {
                let log = self.log();
                let after = |times: &Vec<Instant>| times.iter().copied().find(|t| *t > since);
                let first = match (after(&log.refusals), after(&log.disconnects)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if first.is_some() {
                    return first;
                }
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        None
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn victim_loop(addr: SocketAddr, log: Arc<Mutex<VictimLog>>, reconnect: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let password = password_of(VICTIM_USER);
    let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
    let mut payload = [0u8; 100];
    let mut buf = BytesMut::with_capacity(256);
    while !stop.load(Ordering::Acquire) {
        if !reconnect.swap(false, Ordering::AcqRel) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let connect = Connect {
            version: Version::V5,
            client_id: "victim",
            username: Some(VICTIM_USER),
            password: Some(&password),
            keep_alive: 600,
        };
        let mut client = match Client::connect(addr, &connect, WAIT).await {
            Ok(client) => client,
            // Retried only when the harness asks again (see `wait_accepting`).
            Err(_) => continue,
        };
        lock().connected = true;
        let mut pkid = 0u16;
        'connected: while !stop.load(Ordering::Acquire) {
            pkid = pkid % 1000 + 1;
            payload[..2].copy_from_slice(&pkid.to_le_bytes());
            buf.clear();
            mqtt::publish(&mut buf, Version::V5, VICTIM_TOPIC.as_bytes(), &payload, 1, pkid);
            if client.send(&buf).await.is_err() {
                break;
            }
            loop {
                match client.next(Duration::from_secs(2)).await {
                    Ok(frame) if frame.packet_type == mqtt::PUBACK => {
                        let now = Instant::now();
                        if frame.ack_reason() >= 0x80 {
                            lock().refusals.push(now);
                        } else {
                            lock().accepted = Some(now);
                        }
                        break;
                    }
                    Ok(frame) if frame.packet_type == mqtt::DISCONNECT => break 'connected,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                    Err(_) => break 'connected,
                }
            }
        }
        let mut log = lock();
        log.connected = false;
        log.disconnects.push(Instant::now());
    }
}

#[derive(Debug, Clone, Default)]
pub struct RevocationResult {
    /// reply → first refused publish, per repetition.
    pub acl_removal: Vec<Duration>,
    /// reply → disconnection, per repetition.
    pub disable: Vec<Duration>,
}

fn acl_command(command_name: &str) -> Vec<u8> {
    format!(
        r#"{{"commands":[{{"command":"{command_name}","rolename":"{VICTIM_ROLE}","acltype":"publishClientSend","topic":"{VICTIM_TOPIC}","allow":true}}]}}"#
    )
    .into_bytes()
}

fn client_command(command_name: &str) -> Vec<u8> {
    format!(r#"{{"commands":[{{"command":"{command_name}","username":"{VICTIM_USER}"}}]}}"#).into_bytes()
}

/// Revokes the victim's rights `reps` times each way.
pub fn run(addr: SocketAddr, reps: usize) -> Result<RevocationResult, String> {
    runtime().block_on(async move {
        let mut admin = admin(addr, Version::V5, "bench-revoker").await?;
        let victim = Victim::start(addr);
        let mut result = RevocationResult::default();
        let since = |d: Option<Instant>, reply: Instant| d.map(|t| t.saturating_duration_since(reply));
        for _ in 0..reps {
            victim.wait_accepting(Instant::now()).await?;
            let sent = Instant::now();
            command(&mut admin, &acl_command("removeRoleACL"), WAIT).await?;
            let reply = Instant::now();
            let revoked = victim.wait_revoked(sent).await;
            let revoked = since(revoked, reply).ok_or("the victim was neither refused nor disconnected")?;
            result.acl_removal.push(revoked);
            command(&mut admin, &acl_command("addRoleACL"), WAIT).await?;

            victim.wait_accepting(Instant::now()).await?;
            let sent = Instant::now();
            command(&mut admin, &client_command("disableClient"), WAIT).await?;
            let reply = Instant::now();
            let gone = victim.wait_revoked(sent).await;
            result.disable.push(since(gone, reply).ok_or("the victim was neither refused nor disconnected")?);
            command(&mut admin, &client_command("enableClient"), WAIT).await?;
        }
        Ok(result)
    })
}
