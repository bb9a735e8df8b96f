//! The example configurations in `config/` start and work, in dynsec-broker and in mosquitto
//! 2.0.11 alike: each file is read from the repository, its ports and paths replaced by the
//! test's own (ephemeral ports, generated certificates and files), nothing else changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dynsec_tests::certs;
use dynsec_tests::mosquitto::{dynsec_plugin, mosquitto_ctrl_init};
use dynsec_tests::twin::{BOTH, Client, Connect, Twin};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn repo_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The example with the test's ports and paths; `paths` maps example paths to real ones.
fn adapt(name: &str, paths: &[(&str, String)]) -> String {
    let mut text = fs::read_to_string(repo_config(name)).expect("read the example configuration");
    text = text.replace("listener 1883 127.0.0.1\n", "listener 1883\n");
    text = text.replace("listener 1883\n", "listener {PORT0} 127.0.0.1\n");
    text = text.replace("listener 8883\n", "listener {PORT1} 127.0.0.1\n");
    text = text.replace("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", &p(&dynsec_plugin()));
    for (from, to) in paths {
        text = text.replace(from, to);
    }
    assert!(!text.contains("/etc/") && !text.contains("/var/"), "a path was not replaced:\n{text}");
    text
}

fn user(port: u16, username: &str, password: &str) -> Client {
    let mut client = Client::new(port);
    client.username = Some(username.into());
    client.password = Some(password.into());
    client
}

#[test]
fn plain_dynsec_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    for kind in BOTH {
        let file = dir.path().join(format!("dynsec-{kind:?}.json"));
        mosquitto_ctrl_init(&file, "admin", "admin-pw");
        let config = adapt("plain-dynsec.conf", &[("/var/lib/dynsec-broker/dynamic-security.json", p(&file))]);
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        assert_eq!(user(broker.port(0), "admin", "admin-pw").publish("t", "m"), Connect::Connack(0), "{kind:?}");
        assert_eq!(user(broker.port(0), "admin", "wrong").publish("t", "m"), Connect::Connack(5), "{kind:?}");
        assert_eq!(Client::new(broker.port(0)).publish("t", "m"), Connect::Connack(5), "{kind:?}");
    }
}

#[test]
fn tls_mutual_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("certs"));
    for kind in BOTH {
        let file = dir.path().join(format!("dynsec-{kind:?}.json"));
        mosquitto_ctrl_init(&file, "admin", "admin-pw");
        let config = adapt(
            "tls-mutual.conf",
            &[("/var/lib/dynsec-broker/dynamic-security.json", p(&file)), ("/etc/dynsec-broker/certs", p(&pki.dir))],
        );
        let broker = Twin::start(kind, binary(), dir.path(), &config, 2);
        let mut with_cert = Client::new(broker.port(1));
        with_cert.cafile = Some(p(&pki.ca()));
        let (cert, key) = pki.client("client");
        with_cert.cert = Some((p(&cert), p(&key)));
        let mut without_cert = with_cert.clone();
        without_cert.cert = None;
        let (revoked_cert, revoked_key) = pki.client("revoked");
        let mut revoked = with_cert.clone();
        revoked.cert = Some((p(&revoked_cert), p(&revoked_key)));
        assert_eq!(with_cert.publish("t", "m"), Connect::Connack(0), "{kind:?}\n{}", broker.log());
        assert_eq!(without_cert.publish("t", "m"), Connect::NoConnack, "{kind:?}");
        assert_eq!(revoked.publish("t", "m"), Connect::NoConnack, "{kind:?}");
        assert_eq!(user(broker.port(0), "admin", "admin-pw").publish("t", "m"), Connect::Connack(0), "{kind:?}");
    }
}

#[test]
fn password_acl_example() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = p(&dir.path().join("passwd"));
    for (flags, name, password) in [(&["-c"][..], "operator", "op-pw"), (&[][..], "dashboard", "dash-pw")] {
        let status = Command::new("mosquitto_passwd")
            .args(flags)
            .args(["-b", &passwd, name, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success());
    }
    let config = adapt(
        "password-acl.conf",
        &[
            ("/etc/dynsec-broker/passwd", passwd.clone()),
            ("/etc/dynsec-broker/example.acl", p(&repo_config("example.acl"))),
        ],
    );
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        let port = broker.port(0);
        let dashboard = user(port, "dashboard", "dash-pw").subscribe(&["plant/#"]);
        let operator = user(port, "operator", "op-pw");
        assert_eq!(operator.publish("plant/safety/valve", "denied"), Connect::Connack(0));
        assert_eq!(operator.publish("plant/line1", "allowed"), Connect::Connack(0));
        assert_eq!(dashboard.next_payload(), "allowed", "{kind:?}");
        assert_eq!(user(port, "operator", "wrong").publish("t", "m"), Connect::Connack(5), "{kind:?}");
    }
}

/// config/websockets.conf: ws (with http_dir) and wss listeners, in dynsec-broker and in
/// mosquitto 2.0.11 (built with libwebsockets) alike, reached by the websocket test client.
#[test]
fn websockets_example() {
    use dynsec_broker::testkit::{CONNACK, Next};
    use dynsec_tests::websocket::{Transport, WsClient, http_exchange, status_of};

    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("certs"));
    let www = dir.path().join("www");
    fs::create_dir_all(&www).expect("http_dir");
    fs::write(www.join("index.html"), "<title>dashboard</title>").expect("index.html");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for kind in BOTH {
        let file = dir.path().join(format!("dynsec-ws-{kind:?}.json"));
        mosquitto_ctrl_init(&file, "admin", "admin-pw");
        let mut config = adapt(
            "websockets.conf",
            &[
                ("/var/lib/dynsec-broker/dynamic-security.json", p(&file)),
                ("/etc/dynsec-broker/certs", p(&pki.dir)),
                ("/var/www/mqtt-dashboard", p(&www)),
            ],
        );
        config = config.replace("listener 9001\n", "listener {PORT1} 127.0.0.1\n");
        config = config.replace("listener 9443\n", "listener {PORT2} 127.0.0.1\n");
        let broker = Twin::start(kind, binary(), dir.path(), &config, 3);
        let at = |index: usize| std::net::SocketAddr::from(([127, 0, 0, 1], broker.port(index)));
        let ca = pki.ca();
        runtime.block_on(async {
            for (name, transport) in [("ws", Transport::Plain), ("wss", Transport::Tls { ca: &ca })] {
                let addr = at(if name == "ws" { 1 } else { 2 });
                for (password, code) in [("admin-pw", 0), ("wrong", 5)] {
                    let mut connect = dynsec_broker::testkit::Connect::new(4, &format!("example-{name}-{code}"));
                    connect.username = Some("admin".into());
                    connect.password = Some(password.as_bytes().to_vec());
                    let (_, reply) = WsClient::connect(addr, transport, &connect).await;
                    match reply {
                        Next::Frame(frame) if frame.packet_type == CONNACK => {
                            assert_eq!(frame.reason(), code, "{kind:?} {name} {password}\n{}", broker.log())
                        }
                        other => panic!("{kind:?} {name}: CONNACK expected, got {other:?}\n{}", broker.log()),
                    }
                }
            }
            let page =
                http_exchange(at(1), Transport::Plain, b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
            assert_eq!(status_of(&page), 200, "{kind:?}: {page}");
            assert!(page.ends_with("<title>dashboard</title>"), "{kind:?}: {page}");
        });
        assert_eq!(user(broker.port(0), "admin", "admin-pw").publish("t", "m"), Connect::Connack(0), "{kind:?}");
    }
}
