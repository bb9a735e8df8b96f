//! Entry points for fuzzers (feature `fuzzing`): each takes arbitrary bytes and must never panic.
//! The libFuzzer targets in `fuzz/` call them, and `tests/tests/fuzz_corpus.rs` replays the
//! committed corpus and every crash ever found through them in CI.
//!
//! - [`control_commands`]: a `$CONTROL/dynamic-security/v1` payload through the command processor,
//!   then the model's invariants.
//! - [`config_text`]: mosquitto.conf parsing.
//! - [`password_file`], [`acl_file`]: the static security files, and an ACL check with the rest
//!   of the input as topic.
//! - [`packet_codec`]: bytes → frames → packets (CONNECT decoding, rumqttd's decoders, topic and
//!   filter validation), with the first byte choosing the protocol level.
//! - [`gate_session`]: bytes sent to a running in-process broker (dynsec security chain, real
//!   router) after a CONNECT chosen by the first byte — the full gate decides.
//! - [`router_session`]: operations decoded from the bytes (attach, publish, retained, will,
//!   subscribe, shared, unsubscribe, acknowledge, detach) driven straight into the real rumqttd
//!   router through the router link, with generated topics and filters that only
//!   `router_guard::admit` screens — so the guard alone must keep the router alive.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use dynsec::commands::{Admin, Processor};
use dynsec::model::Model;
use dynsec::password::{HashPolicy, PasswordHash};
use rumqttd::protocol::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::gate::codec::{self, CONNECT};
use crate::security::Protocol;

const FUZZ_ADMIN_PASSWORD: &str = "fuzz-admin";

/// A cheap hash policy: fuzzing explores parsing, not PBKDF2.
const CHEAP: HashPolicy = HashPolicy::Pbkdf2Sha512 { iterations: 1 };

pub fn control_commands(data: &[u8]) {
    let mut model = match PasswordHash::new(b"x", CHEAP) {
        Ok(hash) => dynsec::init::init_model("admin", hash),
        Err(_) => Model::default(),
    };
    // Run twice: the second run sees the state the first one built.
    for _ in 0..2 {
        let outcome = Processor::new(&mut model, CHEAP, Vec::new(), Admin::default()).run_payload(data);
        assert!(dynsec::json::parse(&outcome.response).is_ok(), "reply is not JSON");
        if let Err(e) = model.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
}

pub fn config_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Config::from_text("fuzz.conf", &text);
}

pub fn password_file(data: &[u8]) {
    let (file, _) = dynsec::static_files::PasswordFile::parse(data);
    for user in file.usernames().take(2) {
        let _ = file.hash_of(user);
    }
}

pub fn acl_file(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(file) = dynsec::static_files::AclFile::parse(&data[..split]) else { return };
    let topic = String::from_utf8_lossy(data.get(split + 1..).unwrap_or_default());
    for username in [None, Some("user"), Some(topic.as_ref())] {
        let _ = file.check(username, &topic, &topic, true);
        let _ = file.check(username, "client", &topic, false);
    }
}

fn protocol_of(selector: u8) -> Protocol {
    match selector % 3 {
        0 => Protocol::V31,
        1 => Protocol::V311,
        _ => Protocol::V5,
    }
}

pub fn packet_codec(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut protocol = protocol_of(selector);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(header)) = codec::peek_frame(&buf, 1 << 20) {
        if header.frame_len() > buf.len() {
            return;
        }
        let frame = buf.split_to(header.frame_len());
        if header.packet_type() == CONNECT {
            if let Ok(connect) = codec::decode_connect(&frame) {
                protocol = connect.protocol;
            }
            continue;
        }
        match codec::decode(protocol, frame) {
            Ok(Packet::Publish(publish, _)) => {
                if let Some(topic) = dynsec::topic::valid_mqtt_utf8(&publish.topic) {
                    let _ = dynsec::topic::valid_topic(topic);
                }
            }
            Ok(Packet::Subscribe(subscribe, _)) => {
                for filter in &subscribe.filters {
                    let _ = dynsec::topic::valid_filter(&filter.path);
                }
            }
            _ => {}
        }
    }
}

/// The in-process broker used by [`gate_session`], started once per fuzzing process.
struct Gate {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    // Held, never dropped: forgetting it instead made LeakSanitizer report its allocations.
    _broker: crate::broker::Broker,
    _dir: std::path::PathBuf,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        // A panic on any broker task must abort, so that the fuzzer sees it.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::abort();
        }));
        let dir = std::env::temp_dir().join(format!("dynsec-fuzz-gate-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let store = dir.join("ds.json");
        let _ = std::fs::remove_file(&store);
        let _ = std::fs::remove_file(store.with_extension("json.journal"));
        let password_file = dir.join("admin-password");
        let _ = std::fs::write(&password_file, FUZZ_ADMIN_PASSWORD);
        let config_text = format!(
            "listener 0 127.0.0.1\nallow_anonymous true\ngate_connect_timeout 0.2\ngate_login_throttle false\n\
             plugin mosquitto_dynamic_security.so\nplugin_opt_config_file {}\nplugin_opt_password_iterations 1\n\
             plugin_opt_password_init_file {}\n",
            store.display(),
            password_file.display()
        );
        let config = Config::from_text("fuzz.conf", &config_text).expect("fuzz config");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let broker = runtime.block_on(async {
            let security = crate::security::chain::AuthChain::from_config(&config).expect("security chain");
            crate::broker::Broker::start(config, security).await.expect("broker")
        });
        let addr = broker.local_addrs()[0];
        Gate { runtime, addr, _broker: broker, _dir: dir }
    })
}

/// CONNECT packets the first input byte chooses between (anonymous v3.1.1/v5, admin v5).
fn connect_prefix(selector: u8) -> Vec<u8> {
    let mut connect = crate::testkit::Connect::new(if selector & 1 == 0 { 4 } else { 5 }, "");
    if selector & 2 != 0 {
        connect.username = Some("admin".into());
        connect.password = Some(FUZZ_ADMIN_PASSWORD.as_bytes().to_vec());
    }
    connect.encode()
}

pub fn gate_session(data: &[u8]) {
    let _ = gate_exchange(data);
}

/// What [`gate_session`] does, returning the first 64 KiB the broker sent back (so that tests can
/// check the in-process broker really answers).
pub fn gate_exchange(data: &[u8]) -> Vec<u8> {
    let Some((&selector, rest)) = data.split_first() else { return Vec::new() };
    let gate = gate();
    gate.runtime.block_on(async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(gate.addr).await else { return Vec::new() };
        let mut bytes = if selector & 4 == 0 { connect_prefix(selector) } else { Vec::new() };
        bytes.extend_from_slice(rest);
        if stream.write_all(&bytes).await.is_err() {
            return Vec::new();
        }
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        // A well-formed CONNECT is answered before the client's EOF: the gate cancels a login
        // whose client left while its password was verified (docs/security.md), so the EOF
        // waits for the CONNACK (or the close) of the prefix's login.
        if selector & 4 == 0
            && let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await
        {
            received.extend_from_slice(&chunk[..n]);
        }
        let _ = stream.shutdown().await;
        // The broker closes on EOF; the bound only guards against a hang being reported as one.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if received.len() < 64 * 1024 {
                    received.extend_from_slice(&chunk[..n]);
                }
            }
        })
        .await;
        received
    })
}

/// The in-process router used by [`router_session`], started once per fuzzing process.
struct RouterUnderTest {
    runtime: tokio::runtime::Runtime,
    engine: std::sync::Arc<crate::routing::router_link::Rumqttd>,
}

fn router_under_test() -> &'static RouterUnderTest {
    static ROUTER: OnceLock<RouterUnderTest> = OnceLock::new();
    ROUTER.get_or_init(|| {
        // A panic on the router thread must abort, so that the fuzzer sees it.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::abort();
        }));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let engine =
            crate::routing::router_link::Rumqttd::start(&crate::config::GateSettings::default()).expect("router");
        RouterUnderTest { runtime, engine }
    })
}

/// Reads the fuzzer's bytes as operations and their arguments.
struct Ops<'a>(&'a [u8]);

/// First levels and levels that matter to the router: multi-byte starts, the spelling's escape,
/// `$`, wildcards, empty levels.
const LEVELS: [&str; 16] =
    ["a", "é", "€", "日本", "", "$SYS", "$share", "+", "#", "\u{1}", "\u{1}é", "x y", "\u{FFFD}", "$", "%2F", "b"];

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// A topic or filter path: up to four levels, each from [`LEVELS`] or a few raw bytes (read
    /// as lossy UTF-8, so invalid sequences become U+FFFD).
    fn path(&mut self) -> String {
        let shape = self.byte().unwrap_or(0);
        let levels = 1 + usize::from(shape & 3);
        let mut path = String::new();
        for i in 0..levels {
            if i > 0 {
                path.push('/');
            }
            let pick = self.byte().unwrap_or(0);
            if pick & 0x80 == 0 {
                path.push_str(LEVELS[usize::from(pick) % LEVELS.len()]);
            } else {
                let len = usize::from(pick & 3).min(self.0.len());
                let (raw, rest) = self.0.split_at(len);
                path.push_str(&String::from_utf8_lossy(raw));
                self.0 = rest;
            }
        }
        path
    }

    /// A filter: a path, sometimes as `$share/<group>/<path>`.
    fn filter(&mut self) -> String {
        let shared = self.byte().unwrap_or(0);
        let path = self.path();
        match shared % 4 {
            0 => format!("$share/{}/{path}", LEVELS[usize::from(shared >> 4) % LEVELS.len()]),
            _ => path,
        }
    }
}

const CLIENTS: usize = 4;

/// One simulated client (its link, attached on first use).
#[derive(Default)]
struct Client {
    link: Option<crate::routing::router_link::RumqttdLink>,
    /// Acknowledgements held back by a settle without acknowledging, sent first by the next
    /// settle that acknowledges: rumqttd disconnects a link that acknowledges out of order, which
    /// the gate never does (its ack sequencer), so the harness must not either.
    unacked: Vec<Packet>,
}

/// Delivers what the router sent `link` up to the answer of a PINGREQ, acknowledging (in the
/// router's order) when `ack` is set; checks every delivered topic was published. Panics if the
/// router is gone or does not answer.
async fn settle(
    link: &mut crate::routing::router_link::RumqttdLink,
    ack: bool,
    published: &std::collections::HashSet<Vec<u8>>,
    unacked: &mut Vec<Packet>,
) {
    use crate::routing::router_link::{FromRouter, RouterLink};
    use rumqttd::protocol::{PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason};
    if ack {
        for packet in unacked.drain(..) {
            link.push(packet);
        }
    }
    link.push(Packet::PingReq(rumqttd::protocol::PingReq));
    link.flush().expect("the router link is closed: the router died");
    loop {
        let note = tokio::time::timeout(Duration::from_secs(20), link.recv()).await;
        match note.expect("the router does not answer").expect("the router link is closed: the router died") {
            FromRouter::PingResp => return,
            FromRouter::Publish(routed) => {
                assert!(
                    published.contains(&routed.topic[..]),
                    "delivered a topic nobody published: {:?}",
                    String::from_utf8_lossy(&routed.topic)
                );
                if routed.qos > 0 {
                    let packet = if routed.qos == 1 {
                        Packet::PubAck(PubAck { pkid: routed.pkid, reason: PubAckReason::Success }, None)
                    } else {
                        Packet::PubRec(PubRec { pkid: routed.pkid, reason: PubRecReason::Success }, None)
                    };
                    if ack {
                        link.push(packet);
                    } else {
                        unacked.push(packet);
                    }
                }
            }
            FromRouter::PubRel(pkid) => {
                link.push(Packet::PubComp(PubComp { pkid, reason: PubCompReason::Success }, None));
            }
            FromRouter::Paused => link.resume().await.expect("the router died"),
            FromRouter::SubAck(_) | FromRouter::Nothing => {}
        }
        link.flush().expect("the router link is closed: the router died");
    }
}

pub fn router_session(data: &[u8]) {
    use crate::routing::envelope::Routable;
    use crate::routing::router_guard::{ToRouter, admit};
    use crate::routing::router_link::{RouterLink, RoutingEngine};
    use bytes::Bytes;
    use rumqttd::protocol::{Filter, Publish, QoS, RetainForwardRule, SubscribeProperties};

    let router = router_under_test();
    let engine = &router.engine;
    router.runtime.block_on(async {
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::default()).collect();
        let id = |slot: usize| format!("fuzz-{slot}");
        let mut published = std::collections::HashSet::new();
        let mut retained = Vec::new();
        let mut ops = Ops(data);
        while let Some(op) = ops.byte() {
            let slot = usize::from(op >> 4) % CLIENTS;
            let kind = op & 0x0F;
            if kind == 0 || kind == 1 {
                // Attach (persistent when kind is 1) after detaching what was there.
                if let Some(mut link) = clients[slot].link.take() {
                    link.detach();
                }
                clients[slot].unacked.clear();
                clients[slot].link = engine.attach(&id(slot), kind == 1).await.ok().map(|attached| attached.link);
                continue;
            }
            if kind == 2 {
                if let Some(mut link) = clients[slot].link.take() {
                    link.detach();
                }
                clients[slot].unacked.clear();
                continue;
            }
            if kind == 6 {
                // A will (through the system link, as `session::publish_will`: retain 0 always,
                // the gate keeps retained messages itself; the byte that chose retain once is
                // still read, so that the corpus decodes as before).
                let topic = ops.path();
                let _retain = ops.byte();
                if admit(ToRouter::Publish { topic: &topic, properties: None }).is_ok() {
                    published.insert(topic.as_bytes().to_vec());
                    let sealed = Bytes::from_static(b"will");
                    engine.inject(Routable { topic: Bytes::from(topic), sealed, properties: None });
                }
                continue;
            }
            if clients[slot].link.is_none() {
                clients[slot].link = engine.attach(&id(slot), false).await.ok().map(|attached| attached.link);
            }
            let client = &mut clients[slot];
            let Some(link) = client.link.as_mut() else { continue };
            match kind {
                3 | 4 => {
                    let topic = ops.path();
                    let retain = kind == 4;
                    if admit(ToRouter::Publish { topic: &topic, properties: None }).is_ok() {
                        published.insert(topic.as_bytes().to_vec());
                        if retain {
                            retained.push(topic.clone());
                        }
                        let payload =
                            if ops.byte().unwrap_or(1) == 0 { Bytes::new() } else { Bytes::from_static(b"p") };
                        link.push(Packet::Publish(Publish::new(Bytes::from(topic), payload, retain), None));
                    }
                }
                5 | 7 => {
                    let path = ops.filter();
                    let options = ops.byte().unwrap_or(0);
                    let subscription_id = (options & 4 != 0).then_some(usize::from(options >> 3));
                    if admit(ToRouter::Subscribe { filter: &path, subscription_id }).is_ok() {
                        let qos = match options % 3 {
                            0 => QoS::AtMostOnce,
                            1 => QoS::AtLeastOnce,
                            _ => QoS::ExactlyOnce,
                        };
                        let filter = Filter {
                            path,
                            qos,
                            nolocal: false,
                            preserve_retain: false,
                            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                        };
                        let properties =
                            subscription_id.map(|id| SubscribeProperties { id: Some(id), user_properties: Vec::new() });
                        link.subscribe(1, vec![filter], properties);
                    }
                }
                8 => {
                    let filter = ops.filter();
                    if admit(ToRouter::Unsubscribe { filter: &filter }).is_ok() {
                        link.unsubscribe(2, &[filter]);
                    }
                }
                9 | 10 => settle(link, kind == 9, &published, &mut client.unacked).await,
                _ => {}
            }
            link.flush().expect("the router link is closed: the router died");
        }
        // Leave nothing behind for the next input: sessions and retained messages.
        for (slot, client) in clients.iter_mut().enumerate() {
            if let Some(mut link) = client.link.take() {
                link.detach();
            }
            engine.purge(&id(slot)).await;
        }
        // The router still routes.
        let mut probe = engine.attach("fuzz-probe", false).await.expect("the router refused a link").link;
        for topic in retained {
            probe.push(Packet::Publish(Publish::new(Bytes::from(topic), Bytes::new(), true), None));
        }
        probe.flush().expect("the router link is closed: the router died");
        settle(&mut probe, true, &published, &mut Vec::new()).await;
        probe.detach();
    });
}
