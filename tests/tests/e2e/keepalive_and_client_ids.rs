//! Issue 21, item 5: `max_keepalive` and server-assigned client ids, as mosquitto 2.1.2 does them.
//! With `max_keepalive N` (N > 0) an MQTT 5 client asking for more than N seconds — or for 0, no
//! keepalive at all — is told Server Keep Alive N in its CONNACK and held to it; an MQTT 3.1.1
//! client, which cannot be told, is refused (CONNACK 2, identifier rejected). Without the option
//! (or with 0) any keepalive is accepted. A client without a client id gets one (`auto-<UUID>`,
//! MQTT 5: in the CONNACK's Assigned Client Identifier) when it starts clean. Each table runs
//! against the real `dynsec-broker` binary and mosquitto 2.1.2.

use std::net::SocketAddr;
use std::path::Path;

use bytes::{Buf, Bytes};
use dynsec_broker::testkit::{self, Connect, Next, RawClient};
use dynsec_tests::broker::{BrokerProcess, ScratchDir};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_21};

const BINARY: &str = env!("CARGO_BIN_EXE_dynsec-broker-under-test");

/// What a CONNACK said, as far as these tests look.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: u8,
    server_keep_alive: Option<u16>,
    /// The assigned client id's shape: its prefix up to the first `-` and its length.
    assigned: Option<(String, usize)>,
}

fn varint(body: &mut Bytes) -> usize {
    let (mut value, mut shift) = (0, 0);
    loop {
        let byte = body.get_u8();
        value |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

/// Reads a CONNACK's code and the two properties of interest (v5).
fn answer(frame: &testkit::Frame, v5: bool) -> Answer {
    let mut body = frame.body.clone();
    body.advance(1); // acknowledge flags
    let code = body.get_u8();
    let mut found = Answer { code, server_keep_alive: None, assigned: None };
    if !v5 || body.is_empty() {
        return found;
    }
    let len = varint(&mut body);
    let mut properties = body.split_to(len);
    let string = |p: &mut Bytes| {
        let n = usize::from(p.get_u16());
        String::from_utf8_lossy(&p.split_to(n)).into_owned()
    };
    while properties.has_remaining() {
        match properties.get_u8() {
            0x13 => found.server_keep_alive = Some(properties.get_u16()),
            0x12 => {
                let id = string(&mut properties);
                let prefix = id.split('-').next().unwrap_or_default().to_owned();
                found.assigned = Some((prefix, id.len()));
            }
            0x21 | 0x22 => properties.advance(2),
            0x11 | 0x27 => properties.advance(4),
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => properties.advance(1),
            0x1F | 0x1A | 0x1C | 0x15 | 0x16 => drop(string(&mut properties)),
            0x26 => drop((string(&mut properties), string(&mut properties))),
            other => panic!("unexpected CONNACK property {other:#x}"),
        }
    }
    found
}

async fn connack(addr: SocketAddr, connect: &Connect) -> Answer {
    let (_client, reply) = RawClient::connect(addr, connect).await;
    match reply {
        Next::Frame(frame) if frame.packet_type == testkit::CONNACK => answer(&frame, connect.version == 5),
        other => panic!("{}: CONNACK expected, got {other:?}", connect.client_id),
    }
}

const KEEPALIVES: [u16; 4] = [0, 30, 60, 120];

/// Per (protocol, keepalive asked): the answer.
async fn keepalive_table(addr: SocketAddr) -> Vec<(u8, u16, Answer)> {
    let mut table = Vec::new();
    for version in [4u8, 5] {
        for keep_alive in KEEPALIVES {
            let mut connect = Connect::new(version, &format!("ka-{version}-{keep_alive}"));
            connect.keep_alive = keep_alive;
            table.push((version, keep_alive, connack(addr, &connect).await));
        }
    }
    table
}

fn accepted(server_keep_alive: Option<u16>) -> Answer {
    Answer { code: 0, server_keep_alive, assigned: None }
}

fn expected_keepalives(max_keepalive: Option<u16>) -> Vec<(u8, u16, Answer)> {
    let mut table = Vec::new();
    for version in [4u8, 5] {
        for keep_alive in KEEPALIVES {
            let above = max_keepalive.is_some_and(|max| keep_alive == 0 || keep_alive > max);
            let answer = match (above, version) {
                (false, _) => accepted(None),
                (true, 5) => accepted(max_keepalive),
                (true, _) => Answer { code: 2, server_keep_alive: None, assigned: None },
            };
            table.push((version, keep_alive, answer));
        }
    }
    table
}

/// Empty client ids: (protocol, clean start) → the answer.
async fn assigned_ids(addr: SocketAddr) -> Vec<(u8, bool, Answer)> {
    let mut table = Vec::new();
    for version in [4u8, 5] {
        for clean in [true, false] {
            let mut connect = Connect::new(version, "");
            connect.clean = clean;
            table.push((version, clean, connack(addr, &connect).await));
        }
    }
    table
}

fn expected_ids() -> Vec<(u8, bool, Answer)> {
    let assigned = Answer { code: 0, server_keep_alive: None, assigned: Some(("auto".to_owned(), 41)) };
    vec![
        (4, true, accepted(None)),
        (4, false, Answer { code: 2, server_keep_alive: None, assigned: None }),
        (5, true, assigned.clone()),
        (5, false, assigned),
    ]
}

/// A v5 client that asked for 120 s and was told 1 s is disconnected once it stays silent (bounded
/// by `expect_closed`); returns what came before the close.
async fn held_to_server_keep_alive(addr: SocketAddr) -> Vec<testkit::Frame> {
    let mut connect = Connect::new(5, "ka-held");
    connect.keep_alive = 120;
    let (mut client, reply) = RawClient::connect(addr, &connect).await;
    let Next::Frame(frame) = reply else { panic!("no CONNACK: {reply:?}") };
    assert_eq!(answer(&frame, true), accepted(Some(1)));
    client.expect_closed().await
}

fn start_ours(config: &str) -> BrokerProcess {
    BrokerProcess::start(Path::new(BINARY), &format!("allow_anonymous true\n{config}"))
}

#[tokio::test]
async fn max_keepalive_and_assigned_ids() {
    let default = start_ours("");
    assert_eq!(keepalive_table(default.addr()).await, expected_keepalives(None), "default");
    assert_eq!(assigned_ids(default.addr()).await, expected_ids());
    let unlimited = start_ours("max_keepalive 0\n");
    assert_eq!(keepalive_table(unlimited.addr()).await, expected_keepalives(None), "max_keepalive 0");
    let capped = start_ours("max_keepalive 60\n");
    assert_eq!(keepalive_table(capped.addr()).await, expected_keepalives(Some(60)), "max_keepalive 60");
    let tight = start_ours("max_keepalive 1\n");
    let before_close = held_to_server_keep_alive(tight.addr()).await;
    assert_eq!(
        before_close.iter().map(|f| (f.packet_type, f.reason())).collect::<Vec<_>>(),
        [(testkit::DISCONNECT, 0x8D)]
    );
}

#[tokio::test]
async fn mosquitto_2_1_answers_the_same() {
    let Some(installed) = mosquitto_21("keepalive_and_client_ids::mosquitto_2_1_answers_the_same") else { return };
    let dir = ScratchDir::new("mosquitto-21-keepalive");
    let start = |extra: &str| {
        let mut lines = vec!["allow_anonymous true".to_owned()];
        lines.extend(extra.lines().map(str::to_owned));
        Mosquitto::start_installed(Some(&installed), dir.path(), &lines)
    };
    let addr = |m: &Mosquitto| SocketAddr::from(([127, 0, 0, 1], m.port()));
    let default = start("");
    assert_eq!(keepalive_table(addr(&default)).await, expected_keepalives(None), "default");
    assert_eq!(assigned_ids(addr(&default)).await, expected_ids());
    let unlimited = start("max_keepalive 0");
    assert_eq!(keepalive_table(addr(&unlimited)).await, expected_keepalives(None), "max_keepalive 0");
    let capped = start("max_keepalive 60");
    assert_eq!(keepalive_table(addr(&capped)).await, expected_keepalives(Some(60)), "max_keepalive 60");
    let tight = start("max_keepalive 1");
    // 2.1.2 closes the socket without DISCONNECT 0x8D (docs/known-differences.md).
    assert_eq!(held_to_server_keep_alive(addr(&tight)).await, []);
}
