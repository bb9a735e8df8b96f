//! `protocol websockets` listeners end to end (issue 23), plain (ws) and on TLS (wss), with a
//! websocket MQTT client (`dynsec_tests::websocket`, tokio-tungstenite): dynsec logins, ACLs on
//! publish and subscribe, a kick, MQTT 3.1 / 3.1.1 / 5, packets split over websocket messages and
//! several packets in one message, the HTTP answers to bad upgrade requests, `http_dir`,
//! `websockets_headers_size`, and the unauthenticated-socket limits that hold for TCP.
//! paho-mqtt's websockets transport (Python) does one round trip; the browser test is in
//! `websockets_browser.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dynsec_broker::testkit::{self, Connect, DISCONNECT, Next, PUBACK, WAIT};
use dynsec_tests::certs::{self, TestPki};
use dynsec_tests::dynsec_target::{
    ADMIN_PASSWORD, Admin, DynsecBroker, Flavour, Setup, credentials, not_authorised, user,
};
use dynsec_tests::mosquitto::unused_port;
use dynsec_tests::websocket::{Transport, WsClient, http_exchange, status_of, wait_for_listeners};
use tokio_tungstenite::tungstenite::Message;

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

const PASSWORD: &str = "ws-secret";

/// Our broker with its TCP listener, a ws listener and a wss listener (the test CA's server
/// certificate), and `extra` lines for the ws listener.
struct Listeners {
    broker: DynsecBroker,
    ws: SocketAddr,
    wss: SocketAddr,
    pki: TestPki,
    _pki_dir: tempfile::TempDir,
}

impl Listeners {
    fn start(global: &[&str], ws_extra: &[&str]) -> Listeners {
        let pki_dir = tempfile::tempdir().expect("temp dir");
        let pki = certs::generate(pki_dir.path());
        let (ws, wss) = (unused_port(), unused_port());
        let mut common: Vec<String> = global.iter().map(|line| line.to_string()).collect();
        common.push(format!("listener {ws} 127.0.0.1"));
        common.push("protocol websockets".into());
        common.extend(ws_extra.iter().map(|line| line.to_string()));
        common.push(format!("listener {wss} 127.0.0.1"));
        common.push("protocol websockets".into());
        common.push(format!("certfile {}", pki.server_cert().display()));
        common.push(format!("keyfile {}", pki.server_key().display()));
        let setup = Setup { common, ..Setup::default() };
        let broker = DynsecBroker::start(Flavour::Ours, ours(), &setup);
        wait_for_listeners(|| broker.log(), 3);
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Listeners { broker, ws: at(ws), wss: at(wss), pki, _pki_dir: pki_dir }
    }

    fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// Both websocket listeners with the transport that reaches each.
    fn both(&self) -> Vec<(&'static str, SocketAddr, PathBuf)> {
        vec![("ws", self.ws, PathBuf::new()), ("wss", self.wss, self.ca())]
    }
}

fn transport(ca: &Path) -> Transport<'_> {
    if ca.as_os_str().is_empty() { Transport::Plain } else { Transport::Tls { ca } }
}

/// `wsuser` may publish to `ws/in/open` and subscribe to `ws/in/#`; the defaults of
/// `mosquitto_ctrl dynsec init` refuse every other publish and subscribe.
async fn create_ws_user(admin: &mut Admin) {
    admin
        .ok(&format!(
            r#"{{"command":"createRole","rolename":"ws"}},
            {{"command":"addRoleACL","rolename":"ws","acltype":"publishClientSend","topic":"ws/in/open","allow":true}},
            {{"command":"addRoleACL","rolename":"ws","acltype":"subscribePattern","topic":"ws/in/#","allow":true}},
            {{"command":"createClient","username":"wsuser","password":"{PASSWORD}"}},
            {{"command":"addClientRole","username":"wsuser","rolename":"ws"}}"#
        ))
        .await;
}

fn login(version: u8, client_id: &str, password: &str) -> Connect {
    credentials(version, client_id, Some("wsuser"), Some(password.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_wss_carry_mqtt_with_dynsec_logins_and_acls() {
    let listeners = Listeners::start(&[], &[]);
    let mut admin = Admin::connect(listeners.broker.addr(), "ws-admin").await;
    create_ws_user(&mut admin).await;
    // A TCP client on the same topics: messages cross between transports.
    let mut tcp = user(listeners.broker.addr(), 5, "ws-tcp-peer", "wsuser", PASSWORD).await;
    tcp.subscribe(1, &[("ws/in/#", 1)]).await;
    for (name, addr, ca) in listeners.both() {
        for version in [3u8, 4, 5] {
            let what = format!("{name}, MQTT version {version}");
            let v5 = version == 5;
            let (mut refused, reply) =
                WsClient::connect(addr, transport(&ca), &login(version, &format!("bad-{name}-{version}"), "wrong"))
                    .await;
            let expected = match not_authorised(version) {
                dynsec_tests::dynsec_target::Login::Connack(code) => code,
                _ => unreachable!(),
            };
            match reply {
                Next::Frame(frame) if frame.packet_type == testkit::CONNACK => {
                    assert_eq!(frame.reason(), expected, "{what}: wrong password")
                }
                other => panic!("{what}: CONNACK expected for a wrong password, got {other:?}"),
            }
            refused.expect_closed().await;

            let id = format!("ws-{name}-{version}");
            let mut client = WsClient::connected(addr, transport(&ca), &login(version, &id, PASSWORD)).await;
            let subprotocol = if version == 3 { "mqttv3.1" } else { "mqtt" };
            assert_eq!(client.subprotocol.as_deref(), Some(subprotocol), "{what}");
            assert_eq!(client.subscribe(1, &[("ws/in/#", 1)]).await, [1], "{what}: allowed subscription");
            // MQTT 3.1 has no failure code: mosquitto echoes the requested QoS (and so do we).
            let denied = match version {
                5 => 0x87,
                4 => 0x80,
                _ => 1,
            };
            assert_eq!(client.subscribe(2, &[("ws/secret", 1)]).await, [denied], "{what}: denied subscription");

            // A publish the ACL refuses: v5 is told (PUBACK 0x87), 3.x gets a plain PUBACK; nobody
            // receives it.
            client.publish("ws/in/closed", b"refused", 1, false, 3).await;
            let puback = client.expect(PUBACK).await;
            assert_eq!((puback.pkid(), puback.reason()), (3, if v5 { 0x87 } else { 0 }), "{what}: denied publish");
            client.publish("ws/in/open", what.as_bytes(), 1, false, 4).await;
            assert_eq!(client.expect(PUBACK).await.reason(), 0, "{what}: allowed publish");
            let echoed = client.expect_publish().await;
            assert_eq!((echoed.topic.as_str(), &echoed.payload[..]), ("ws/in/open", what.as_bytes()), "{what}");
            client.send(&testkit::ack(PUBACK, echoed.pkid)).await;
            let seen = tcp.expect_publish().await;
            assert_eq!((seen.topic.as_str(), &seen.payload[..]), ("ws/in/open", what.as_bytes()), "{what}: TCP peer");
            tcp.send(&testkit::ack(PUBACK, seen.pkid)).await;

            // And from TCP to the websocket.
            tcp.publish("ws/in/open", b"from tcp", 0, false, 0).await;
            assert_eq!(&client.expect_publish().await.payload[..], b"from tcp", "{what}: from the TCP peer");
            assert_eq!(&tcp.expect_publish().await.payload[..], b"from tcp");
            client.send(&testkit::disconnect()).await;
            client.expect_closed().await;
        }
    }
    tcp.expect_quiet().await;
    listeners.broker.ours().assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_may_span_messages_and_messages_may_hold_several_packets() {
    let listeners = Listeners::start(&[], &[]);
    let mut admin = Admin::connect(listeners.broker.addr(), "ws-admin").await;
    create_ws_user(&mut admin).await;
    for (name, addr, ca) in listeners.both() {
        let mut client = WsClient::open(addr, transport(&ca), &["mqtt"]).await.expect("websocket opens");
        client.v5 = true;
        // CONNECT one byte per message.
        let connect = login(5, &format!("ws-split-{name}"), PASSWORD).encode();
        let bytes: Vec<&[u8]> = connect.chunks(1).collect();
        client.send_messages(&bytes).await;
        assert_eq!(client.expect(testkit::CONNACK).await.reason(), 0, "{name}");
        // SUBSCRIBE, PUBLISH and PINGREQ in one message: all three answered, the PUBLISH
        // delivered through the subscription made just before it (the PINGRESP, which does not
        // wait for the router, may come first).
        let mut batch = testkit::subscribe(true, 1, &[("ws/in/#", 0)]);
        batch.extend(testkit::publish(true, "ws/in/open", b"batched", 0, false, 0));
        batch.extend(testkit::pingreq());
        client.send(&batch).await;
        let mut answers = Vec::new();
        for _ in 0..3 {
            match client.next(WAIT).await {
                Next::Frame(frame) => answers.push(frame),
                other => panic!("{name}: three answers expected, got {other:?} after {answers:?}"),
            }
        }
        let types: Vec<u8> = answers.iter().map(|f| f.packet_type).filter(|t| *t != testkit::PINGRESP).collect();
        assert_eq!(types, [testkit::SUBACK, testkit::PUBLISH], "{name}: {answers:?}");
        assert!(answers.iter().any(|f| f.packet_type == testkit::PINGRESP), "{name}: {answers:?}");
        let suback = answers.iter().find(|f| f.packet_type == testkit::SUBACK).expect("SUBACK");
        assert_eq!(suback.codes(true), [0], "{name}");
        let echoed = answers.iter().find(|f| f.packet_type == testkit::PUBLISH).expect("PUBLISH");
        assert_eq!(&echoed.publish(true).payload[..], b"batched", "{name}");
        // A 300 KB PUBLISH in three messages, the cut inside its header and inside its payload;
        // then the end of one packet and a whole second one in the same message.
        let big = vec![b'x'; 300_000];
        let first = testkit::publish(true, "ws/in/open", &big, 0, false, 0);
        let second = testkit::publish(true, "ws/in/open", b"after", 0, false, 0);
        let mut tail = first[100_000..].to_vec();
        tail.extend_from_slice(&second);
        client.send_messages(&[&first[..2], &first[2..100_000], &tail]).await;
        assert_eq!(client.expect_publish().await.payload.len(), big.len(), "{name}");
        assert_eq!(&client.expect_publish().await.payload[..], b"after", "{name}");
        // Pings at the websocket level are answered and change nothing.
        client.send_raw(Message::Ping(b"hello".to_vec().into())).await;
        assert!(client.ping().await.is_empty(), "{name}");
        // A text message is not MQTT: the connection is closed.
        client.send_raw(Message::text("not mqtt")).await;
        let frames = client.expect_closed().await;
        assert!(frames.iter().all(|f| f.packet_type == DISCONNECT), "{name}: {frames:?}");
    }
    listeners.broker.ours().assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_disconnects_websocket_clients() {
    let listeners = Listeners::start(&[], &[]);
    let mut admin = Admin::connect(listeners.broker.addr(), "ws-admin").await;
    create_ws_user(&mut admin).await;
    let mut v5 = WsClient::connected(listeners.ws, Transport::Plain, &login(5, "kick-ws-5", PASSWORD)).await;
    let ca = listeners.ca();
    let mut v311 =
        WsClient::connected(listeners.wss, Transport::Tls { ca: &ca }, &login(4, "kick-wss-4", PASSWORD)).await;
    admin.ok(r#"{"command":"disableClient","username":"wsuser"}"#).await;
    let frames = v5.expect_closed().await;
    assert_eq!(frames.len(), 1, "MQTT 5: one DISCONNECT before the close: {frames:?}");
    assert_eq!((frames[0].packet_type, frames[0].reason()), (DISCONNECT, 0x98), "MQTT 5: administrative action");
    assert!(v311.expect_closed().await.is_empty(), "MQTT 3.1.1: closed without a packet");
    let (_, reply) = WsClient::connect(listeners.ws, Transport::Plain, &login(5, "kick-ws-5", PASSWORD)).await;
    match reply {
        Next::Frame(frame) => assert_eq!(frame.reason(), 0x87, "a disabled client cannot log in again"),
        other => panic!("CONNACK expected, got {other:?}"),
    }
}

/// A complete upgrade request, with `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrade_requests_get_an_http_error_and_the_broker_carries_on() {
    let listeners = Listeners::start(&["websockets_headers_size 2048", "gate_connect_timeout 1"], &[]);
    let v13 = "Sec-WebSocket-Version: 13\r\n";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no subprotocol", upgrade_request(v13), 400, "subprotocol mqtt"),
        ("another subprotocol", upgrade_request(&format!("{v13}Sec-WebSocket-Protocol: chat\r\n")), 400, "mqtt"),
        (
            "websocket version 8",
            upgrade_request("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: mqtt\r\n"),
            426,
            "version 13",
        ),
        (
            "no key",
            upgrade_request(&format!("{v13}Sec-WebSocket-Protocol: mqtt\r\n"))
                .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
            "Sec-WebSocket-Key",
        ),
        ("a plain GET without http_dir", "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426, "no http_dir"),
        ("POST", "POST /mqtt HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(), 405, "GET"),
        ("not HTTP", "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00".into(), 400, "malformed"),
        (
            "headers beyond websockets_headers_size",
            upgrade_request(&format!("{v13}Cookie: {}\r\n", "c".repeat(4000))),
            431,
            "websockets_headers_size",
        ),
        (
            "an incomplete request (gate_connect_timeout)",
            "GET /mqtt HTTP/1.1\r\nHost: x\r\n".into(),
            408,
            "gate_connect_timeout",
        ),
    ];
    for (name, addr, ca) in listeners.both() {
        for (case, request, status, says) in &cases {
            let answer = http_exchange(addr, transport(&ca), request.as_bytes()).await;
            assert_eq!(status_of(&answer), *status, "{name}, {case}: {answer}");
            assert!(answer.contains(says), "{name}, {case}: the answer says why: {answer}");
        }
        // Still serving: a good client connects.
        let mut admin = WsClient::connected(
            addr,
            transport(&ca),
            &credentials(5, "after", Some("admin"), Some(ADMIN_PASSWORD.as_bytes())),
        )
        .await;
        admin.send(&testkit::disconnect()).await;
    }
    listeners.broker.ours().assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_dir_serves_its_files_only() {
    let www = tempfile::tempdir().expect("temp dir");
    std::fs::write(www.path().join("index.html"), "<h1>dashboard</h1>").expect("write");
    std::fs::create_dir(www.path().join("js")).expect("mkdir");
    std::fs::write(www.path().join("js/app.js"), "console.log(1)").expect("write");
    let outside = www.path().parent().expect("parent").join(format!("ws-outside-{}.txt", std::process::id()));
    std::fs::write(&outside, "secret").expect("write");
    std::os::unix::fs::symlink(&outside, www.path().join("escape.txt")).expect("symlink");
    let http_dir = format!("http_dir {}", www.path().display());
    let listeners = Listeners::start(&[], &[&http_dir]);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let ws = listeners.ws;
    let answer = http_exchange(ws, Transport::Plain, get("/").as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("Content-Type: text/html") && answer.ends_with("<h1>dashboard</h1>"), "{answer}");
    let answer = http_exchange(ws, Transport::Plain, get("/js/app.js?v=2").as_bytes()).await;
    assert!(answer.contains("text/javascript") && answer.ends_with("console.log(1)"), "{answer}");
    let head = http_exchange(ws, Transport::Plain, b"HEAD /index.html HTTP/1.1\r\n\r\n").await;
    assert!(head.contains("Content-Length: 18") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    for (path, status) in [("/missing.html", 404), ("/../etc/passwd", 400), ("/%2e%2e/x", 400), ("/escape.txt", 403)] {
        let answer = http_exchange(ws, Transport::Plain, get(path).as_bytes()).await;
        assert_eq!(status_of(&answer), status, "{path}: {answer}");
        assert!(!answer.contains("secret"), "{path}");
    }
    // The wss listener has no http_dir.
    let ca = listeners.ca();
    let answer = http_exchange(listeners.wss, Transport::Tls { ca: &ca }, get("/").as_bytes()).await;
    assert_eq!(status_of(&answer), 426, "{answer}");
    // Websocket clients still connect on the listener with http_dir.
    WsClient::connected(ws, Transport::Plain, &credentials(4, "web", Some("admin"), Some(ADMIN_PASSWORD.as_bytes())))
        .await;
    let _ = std::fs::remove_file(&outside);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_websocket_sockets_are_bounded_like_tcp_ones() {
    let listeners = Listeners::start(
        &["gate_unauthenticated_connections 2", "gate_connect_timeout 1", "gate_connect_max_size 4096"],
        &[],
    );
    // Two silent sockets fill gate_unauthenticated_connections: a third is closed at once, with
    // no HTTP answer at all. (All three on one listener: its accept loop takes them in order.)
    let first = tokio::net::TcpStream::connect(listeners.ws).await.expect("connect");
    let second = tokio::net::TcpStream::connect(listeners.ws).await.expect("connect");
    let answer = http_exchange(
        listeners.ws,
        Transport::Plain,
        upgrade_request("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer, "", "closed without an answer");
    drop((first, second));
    // Until its CONNECT is answered a client may not send much more than gate_connect_max_size:
    // a valid CONNECT followed by 1 MiB of PINGREQs in the same message closes the connection
    // before the login (without that bound the broker would take the whole message in, log the
    // client in and answer every PINGREQ).
    let mut greedy = open_when_slots_free(listeners.ws).await;
    let mut flood = credentials(5, "greedy", Some("admin"), Some(ADMIN_PASSWORD.as_bytes())).encode();
    for _ in 0..(1 << 19) {
        flood.extend(testkit::pingreq());
    }
    greedy.send(&flood).await;
    assert!(greedy.expect_closed().await.is_empty(), "closed without a CONNACK");
    // After a login, max_packet_size is the bound: 1 MiB passes.
    let mut client = WsClient::connected(
        listeners.ws,
        Transport::Plain,
        &credentials(5, "big", Some("admin"), Some(ADMIN_PASSWORD.as_bytes())),
    )
    .await;
    let big = vec![b'x'; 1 << 20];
    client.publish("big/payload", &big, 1, false, 2).await;
    assert_eq!(client.expect(PUBACK).await.pkid(), 2, "the connection carries on");
    // A websocket that never sends CONNECT is closed after gate_connect_timeout.
    let mut idle = open_when_slots_free(listeners.ws).await;
    assert!(idle.expect_closed().await.is_empty());
    listeners.broker.ours().assert_no_panic();
}

/// Opens a websocket, retrying (bounded) while sockets the test dropped are still counted as
/// unauthenticated (until the broker notices they are gone).
async fn open_when_slots_free(addr: SocketAddr) -> WsClient {
    for _ in 0..100 {
        if let Ok(client) = WsClient::open(addr, Transport::Plain, &["mqtt"]).await {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no websocket opened on {addr}");
}

/// paho-mqtt (Python) with `transport="websockets"`: one MQTT 3.1.1 and one MQTT 5 round trip on
/// the ws listener. Skipped, loudly, when python3 lacks paho-mqtt (scripts/test.sh installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_websockets_transport_round_trip() {
    let has_paho =
        Command::new("python3").args(["-c", "import paho.mqtt.client"]).output().is_ok_and(|o| o.status.success());
    if !has_paho {
        eprintln!(
            "\n*** SKIPPED paho_websockets_transport_round_trip: python3 has no paho-mqtt (pip install paho-mqtt) ***\n"
        );
        return;
    }
    let listeners = Listeners::start(&[], &[]);
    let mut admin = Admin::connect(listeners.broker.addr(), "ws-admin").await;
    create_ws_user(&mut admin).await;
    let script = r#"
import sys, threading, paho.mqtt.client as mqtt
port, password, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
got, ready = [], threading.Event()
def on_connect(c, u, flags, reason, props):
    if reason != 0: print("connect refused", reason); ready.set(); return
    c.subscribe("ws/in/#", qos=1)
def on_subscribe(c, u, mid, reasons, props):
    c.publish("ws/in/closed", b"refused", qos=1)
    c.publish("ws/in/open", b"paho " + version.encode(), qos=1)
def on_message(c, u, msg):
    got.append((msg.topic, msg.payload.decode())); ready.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-" + version, transport="websockets", protocol=protocol)
c.ws_set_options(path="/mqtt")
c.username_pw_set("wsuser", password)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
ready.wait(10)
c.disconnect(); c.loop_stop()
print(got)
"#;
    for version in ["4", "5"] {
        let output = tokio::task::spawn_blocking({
            let port = listeners.ws.port().to_string();
            move || {
                Command::new("python3").args(["-c", script, &port, PASSWORD, version]).output().expect("run python3")
            }
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "paho v{version}: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(
            stdout.trim(),
            format!("[('ws/in/open', 'paho {version}')]"),
            "paho v{version}: {}",
            listeners.broker.log()
        );
    }
}
