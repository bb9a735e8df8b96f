//! P3: provisioning over MQTT. An admin client sends `createClient` commands to
//! `$CONTROL/dynamic-security/v1` in batches (one control message per batch) and waits for each
//! reply before sending the next; the time of every batch is kept, so the curve shows whether a
//! command's cost grows with the number of clients already stored.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dynsec::password::{HashPolicy, PasswordHash};

use crate::mqtt::{self, Client, Connect, Version};
use crate::security_setup::{ADMIN_PASSWORD, ADMIN_USER, ITERATIONS};

pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// Longest wait for one reply (a mosquitto batch at 100,000 clients takes seconds).
const REPLY_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct ProvisioningRun {
    /// Time of each completed batch, in order.
    pub batch_times: Vec<Duration>,
    pub batch_size: usize,
    pub total: Duration,
    /// Commands that answered with an error.
    pub errors: usize,
    /// The time budget ran out before every batch was sent.
    pub stopped_by_budget: bool,
}

impl ProvisioningRun {
    pub fn clients(&self) -> usize {
        self.batch_times.len() * self.batch_size
    }

    /// Mean batch time over the first and the last tenth of the batches.
    pub fn start_end(&self) -> (Duration, Duration) {
        let n = self.batch_times.len();
        if n == 0 {
            return (Duration::ZERO, Duration::ZERO);
        }
        let window = (n / 10).max(1);
        let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len() as u32;
        (mean(&self.batch_times[..window]), mean(&self.batch_times[n - window..]))
    }
}

fn batch_payload(prefix: &str, start: usize, count: usize, with_passwords: bool) -> Vec<u8> {
    let mut s = String::with_capacity(count * 90);
    s.push_str(r#"{"commands":["#);
    for i in start..start + count {
        if i > start {
            s.push(',');
        }
        s.push_str(r#"{"command":"createClient","username":""#);
        s.push_str(prefix);
        s.push_str(&format!("{i:06}\""));
        if with_passwords {
            s.push_str(&format!(r#","password":"secret-{i}""#));
        }
        s.push('}');
    }
    s.push_str("]}");
    s.into_bytes()
}

/// Connects the admin and subscribes to the reply topic.
pub async fn admin(addr: SocketAddr, version: Version, client_id: &str) -> Result<Client, String> {
    let connect =
        Connect { version, client_id, username: Some(ADMIN_USER), password: Some(ADMIN_PASSWORD), keep_alive: 600 };
    let mut client = Client::connect(addr, &connect, Duration::from_secs(20)).await.map_err(|e| e.to_string())?;
    let code = client.subscribe(RESPONSE_TOPIC, 0, Duration::from_secs(20)).await.map_err(|e| e.to_string())?;
    if code > 2 {
        return Err(format!("admin may not subscribe to the reply topic (code {code:#x})"));
    }
    Ok(client)
}

/// Sends one control message and returns the reply payload.
pub async fn command(client: &mut Client, payload: &[u8], wait: Duration) -> Result<Vec<u8>, String> {
    let mut buf = BytesMut::with_capacity(payload.len() + 64);
    mqtt::publish(&mut buf, client.version, REQUEST_TOPIC.as_bytes(), payload, 0, 0);
    client.send(&buf).await.map_err(|e| e.to_string())?;
    loop {
        let frame = client.next(wait).await.map_err(|e| format!("waiting for the reply: {e}"))?;
        if frame.packet_type == mqtt::PUBLISH && frame.publish_topic() == RESPONSE_TOPIC.as_bytes() {
            let (_, _, body) = frame.publish(client.version).ok_or("malformed reply")?;
            return Ok(body.to_vec());
        }
    }
}

/// Provisions `total` clients in batches, stopping early once `budget` is spent.
pub async fn provision(
    addr: SocketAddr,
    total: usize,
    batch: usize,
    with_passwords: bool,
    budget: Duration,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<ProvisioningRun, String> {
    let mut client = admin(addr, Version::V311, "bench-provisioner").await?;
    let prefix = if with_passwords { "dev-pw-" } else { "dev-" };
    let batches = total.div_ceil(batch);
    let mut run = ProvisioningRun { batch_size: batch, ..Default::default() };
    let started = Instant::now();
    for index in 0..batches {
        if started.elapsed() >= budget {
            run.stopped_by_budget = true;
            break;
        }
        let payload = batch_payload(prefix, index * batch, batch.min(total - index * batch), with_passwords);
        let t = Instant::now();
        let reply = command(&mut client, &payload, REPLY_WAIT).await?;
        run.batch_times.push(t.elapsed());
        run.errors += reply.windows(8).filter(|w| w == b"\"error\":").count();
        on_batch(index + 1, batches);
    }
    run.total = started.elapsed();
    Ok(run)
}

/// The hash-cost floor: wall time per PBKDF2-SHA512 hash (the brokers' iteration count) when
/// every core hashes at once, measured here just before it is used, so that it sees the same
/// machine load as the broker does (median of several rounds). × N = the floor for N passwords.
pub fn hash_cost_on_all_cores() -> Duration {
    let policy = HashPolicy::Pbkdf2Sha512 { iterations: ITERATIONS };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    const PER_CORE: u32 = 100;
    let mut samples: Vec<Duration> = (0..5)
        .map(|round| {
            let t = Instant::now();
            std::thread::scope(|scope| {
                for core in 0..cores {
                    scope.spawn(move || {
                        for i in 0..PER_CORE {
                            let _ = PasswordHash::new(format!("pw-{round}-{core}-{i}").as_bytes(), policy);
                        }
                    });
                }
            });
            t.elapsed() / (PER_CORE * cores as u32)
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_json_commands() {
        let text = String::from_utf8(batch_payload("dev-", 5, 2, true)).unwrap();
        assert_eq!(
            text,
            r#"{"commands":[{"command":"createClient","username":"dev-000005","password":"secret-5"},{"command":"createClient","username":"dev-000006","password":"secret-6"}]}"#
        );
    }
}
