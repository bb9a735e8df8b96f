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

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use dynsec::commands::{Admin, Processor};
use dynsec::model::Model;
use dynsec::password::{HashPolicy, PasswordHash};
use rumqttd::protocol::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::{self, CONNECT};
use crate::config::Config;
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
            let security = crate::auth_chain::AuthChain::from_config(&config).expect("security chain");
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
        let _ = stream.shutdown().await;
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
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
