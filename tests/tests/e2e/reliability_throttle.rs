//! Login throttling end to end: a client guessing passwords from 127.0.0.2 is refused without
//! verification once its address has used up its failures (even with the right password), while
//! a legitimate client on 127.0.0.1 keeps connecting; with throttling switched off the guesser is
//! never refused early.

use std::net::SocketAddr;
use std::path::Path;

use dynsec_broker::testkit::{CONNACK, Connect};
use dynsec_tests::broker::BrokerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const ADMIN_PASSWORD: &str = "throttle-admin";

fn start(dir: &Path, extra: &str) -> BrokerProcess {
    let config = format!(
        "listener 0 127.0.0.1\nlistener 0 127.0.0.2\nallow_anonymous false\nlog_type all\n\
         plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file ds.json\n{extra}"
    );
    BrokerProcess::start_in(
        Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
        dir,
        &config,
        &[("DYNSEC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    )
}

/// CONNECTs from `source` to `broker` and returns the CONNACK return code (v3.1.1).
async fn connack_from(source: &str, broker: SocketAddr, password: &str) -> u8 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(broker).await.unwrap();
    let mut connect = Connect::new(4, "");
    connect.username = Some("admin".into());
    connect.password = Some(password.as_bytes().to_vec());
    stream.write_all(&connect.encode()).await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(buf[0] >> 4, CONNACK);
    buf[3]
}

/// The address of the broker's listener on `ip`.
fn listener_on(broker: &BrokerProcess, ip: &str) -> SocketAddr {
    let log = broker.log();
    log.lines()
        .filter_map(|l| l.split("Opening listen socket on ").nth(1))
        .filter_map(|a| a.trim_end_matches('.').parse::<SocketAddr>().ok())
        .find(|a| a.ip().to_string() == ip)
        .expect("listener address in the log")
}

#[tokio::test]
async fn a_guessing_address_is_refused_while_others_connect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "gate_login_failures_per_address 5\n");
    let (local, other) = (listener_on(&broker, "127.0.0.1"), listener_on(&broker, "127.0.0.2"));
    for guess in 0..5 {
        assert_eq!(connack_from("127.0.0.2", other, &format!("guess-{guess}")).await, 5);
    }
    // Used up: refused before any verification, even with the right password.
    assert_eq!(connack_from("127.0.0.2", other, ADMIN_PASSWORD).await, 5);
    // Everyone else is unaffected.
    for _ in 0..3 {
        assert_eq!(connack_from("127.0.0.1", local, ADMIN_PASSWORD).await, 0);
    }
    let log = broker.log();
    assert!(log.contains("login refused: too many failed logins from this address"), "{log}");
    broker.assert_no_panic();
}

#[tokio::test]
async fn throttling_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "gate_login_throttle false\ngate_login_failures_per_address 2\n");
    let other = listener_on(&broker, "127.0.0.2");
    for guess in 0..4 {
        assert_eq!(connack_from("127.0.0.2", other, &format!("guess-{guess}")).await, 5);
    }
    assert_eq!(connack_from("127.0.0.2", other, ADMIN_PASSWORD).await, 0);
}
