//! A broker with dynamic security enabled — the real `dynsec-broker` or the real mosquitto 2.0
//! with its plugin — started on a configuration made by `mosquitto_ctrl dynsec init`, so that one
//! table of expectations can run against both and be compared; plus the raw MQTT pieces every
//! such test needs: an administrator sending `$CONTROL/dynamic-security/v1` requests, a login that
//! reports the CONNACK code, and a user client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dynsec::json::{self, Json};
use dynsec_broker::testkit::{self, Connect, Frame, Next, RawClient, WAIT};

use crate::broker::BrokerProcess;
use crate::mosquitto::{Mosquitto, dynsec_plugin, mosquitto_21, mosquitto_ctrl_init};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const REQUEST_TOPIC: &str = "$CONTROL/dynamic-security/v1";
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The `dynsec-broker` binary under test.
    Ours,
    /// The installed mosquitto 2.0 with `mosquitto_dynamic_security.so` (the oracle).
    Mosquitto,
    /// mosquitto 2.1 with its plugin ([`crate::mosquitto::mosquitto_21`]; a test checks that it is
    /// there, or skips as that function allows, before starting it).
    Mosquitto21,
}

enum Process {
    Ours(BrokerProcess),
    Mosquitto(Mosquitto),
}

/// A running broker with dynamic security on `file`, in its own temporary directory.
pub struct DynsecBroker {
    pub flavour: Flavour,
    process: Process,
    addr: SocketAddr,
    file: PathBuf,
    dir: tempfile::TempDir,
}

/// How to start a [`DynsecBroker`].
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub allow_anonymous: bool,
    /// mosquitto.conf lines both brokers understand.
    pub common: Vec<String>,
    /// Lines only `dynsec-broker` understands (mosquitto would refuse them).
    pub ours_only: Vec<String>,
}

impl DynsecBroker {
    /// Starts `flavour` (`ours` is the `dynsec-broker` binary) on a fresh
    /// `mosquitto_ctrl dynsec init` configuration with [`ADMIN`] / [`ADMIN_PASSWORD`]. Failed-login
    /// throttling is off in our broker so that long tables of refused logins compare like for like.
    pub fn start(flavour: Flavour, ours: &Path, setup: &Setup) -> DynsecBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("dynamic-security.json");
        mosquitto_ctrl_init(&file, ADMIN, ADMIN_PASSWORD);
        let installed_21 = match flavour {
            Flavour::Mosquitto21 => {
                Some(mosquitto_21("DynsecBroker::start").expect("mosquitto 2.1 is missing: check mosquitto_21() first"))
            }
            _ => None,
        };
        let plugin = installed_21.as_ref().map_or_else(dynsec_plugin, |installed| installed.dynsec_plugin());
        let mut lines = vec![
            format!("allow_anonymous {}", setup.allow_anonymous),
            format!("plugin {}", plugin.display()),
            format!("plugin_opt_config_file {}", file.display()),
        ];
        lines.extend(setup.common.iter().cloned());
        let process = match flavour {
            Flavour::Mosquitto | Flavour::Mosquitto21 => {
                Process::Mosquitto(Mosquitto::start_installed(installed_21.as_ref(), dir.path(), &lines))
            }
            Flavour::Ours => {
                lines.push("gate_login_throttle false".into());
                lines.extend(setup.ours_only.iter().cloned());
                let config = format!("listener 0 127.0.0.1\nlog_type all\n{}\n", lines.join("\n"));
                Process::Ours(BrokerProcess::start_in(ours, dir.path(), &config, &[]))
            }
        };
        let addr = match &process {
            Process::Ours(b) => b.addr(),
            Process::Mosquitto(m) => SocketAddr::from(([127, 0, 0, 1], m.port())),
        };
        DynsecBroker { flavour, process, addr, file, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The `dynamic-security.json` this broker reads and writes.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the broker has logged so far.
    pub fn log(&self) -> String {
        match &self.process {
            Process::Ours(b) => b.log(),
            Process::Mosquitto(m) => m.log(),
        }
    }

    /// Our broker process (panics for mosquitto).
    pub fn ours(&self) -> &BrokerProcess {
        match &self.process {
            Process::Ours(b) => b,
            Process::Mosquitto(_) => panic!("not dynsec-broker"),
        }
    }
}

/// What a CONNECT produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A CONNACK with this return code (3.x) or reason code (5).
    Connack(u8),
    /// The connection was closed without a CONNACK.
    Closed,
    /// Nothing came back in time.
    Silent,
}

/// The refusal code for a bad login: CONNACK 5 (not authorised) for 3.x, 0x87 for MQTT 5.
pub fn not_authorised(version: u8) -> Login {
    Login::Connack(if version == 5 { 0x87 } else { 5 })
}

/// A CONNECT with these credentials.
pub fn credentials(version: u8, client_id: &str, username: Option<&str>, password: Option<&[u8]>) -> Connect {
    let mut connect = Connect::new(version, client_id);
    connect.username = username.map(str::to_owned);
    connect.password = password.map(<[u8]>::to_vec);
    connect
}

/// Sends `connect` and reports what came back; the connection, when accepted, is returned too.
pub async fn login(addr: SocketAddr, connect: &Connect) -> (Login, Option<RawClient>) {
    let (client, reply) = RawClient::connect(addr, connect).await;
    match reply {
        Next::Frame(frame) if frame.packet_type == testkit::CONNACK => {
            let code = frame.reason();
            (Login::Connack(code), (code == 0).then_some(client))
        }
        Next::Frame(other) => panic!("{}: expected CONNACK, got {other:?}", connect.client_id),
        Next::Closed => (Login::Closed, None),
        Next::Timeout => (Login::Silent, None),
    }
}

/// A connected user (asserts a successful CONNACK).
pub async fn user(addr: SocketAddr, version: u8, client_id: &str, username: &str, password: &str) -> RawClient {
    RawClient::connected(addr, &credentials(version, client_id, Some(username), Some(password.as_bytes()))).await
}

/// An administrator connection (MQTT 5) subscribed to the response topic.
pub struct Admin {
    pub client: RawClient,
    next_pkid: u16,
}

impl Admin {
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Admin {
        Self::connect_as(addr, client_id, ADMIN, ADMIN_PASSWORD).await
    }

    pub async fn connect_as(addr: SocketAddr, client_id: &str, username: &str, password: &str) -> Admin {
        let mut client = user(addr, 5, client_id, username, password).await;
        assert_eq!(client.subscribe(1, &[(RESPONSE_TOPIC, 0)]).await, [0], "admin may read the responses");
        Admin { client, next_pkid: 1 }
    }

    /// Sends `{"commands":[<commands>]}` at QoS 1 and returns the `responses` array; every frame
    /// received meanwhile other than the PUBACK and the reply fails the test.
    pub async fn request(&mut self, commands: &str) -> Vec<Json> {
        self.next_pkid = self.next_pkid % 60000 + 1;
        let pkid = self.next_pkid;
        let payload = format!(r#"{{"commands":[{commands}]}}"#);
        self.client.publish(REQUEST_TOPIC, payload.as_bytes(), 1, false, pkid).await;
        let (mut acked, mut reply) = (false, None);
        while !acked || reply.is_none() {
            match self.client.next(WAIT).await {
                Next::Frame(f) if f.packet_type == testkit::PUBACK && f.pkid() == pkid => {
                    assert_eq!(f.reason(), 0, "control request PUBACK for {commands}");
                    acked = true;
                }
                Next::Frame(f) if f.packet_type == testkit::PUBLISH && f.publish(true).topic == RESPONSE_TOPIC => {
                    reply = Some(responses(&f));
                }
                other => panic!("control request {commands}: unexpected {other:?}"),
            }
        }
        reply.unwrap_or_default()
    }

    /// Sends commands that must all succeed; returns their responses.
    pub async fn ok(&mut self, commands: &str) -> Vec<Json> {
        let replies = self.request(commands).await;
        for reply in &replies {
            assert!(
                error_of(reply).is_none(),
                "command failed: {} in reply to {commands}",
                String::from_utf8_lossy(&reply.to_compact())
            );
        }
        replies
    }
}

/// The `responses` of a control reply frame.
pub fn responses(frame: &Frame) -> Vec<Json> {
    let publish = frame.publish(true);
    let doc = json::parse(&publish.payload).unwrap_or_else(|e| {
        panic!("control reply is not JSON ({e:?}): {:?}", String::from_utf8_lossy(&publish.payload))
    });
    doc.get("responses").and_then(Json::as_array).expect("a responses array").to_vec()
}

/// The `error` of one response, if any.
pub fn error_of(reply: &Json) -> Option<String> {
    reply.get("error").and_then(Json::as_bytes).map(|e| String::from_utf8_lossy(e).into_owned())
}

/// Reads until the connection closes (bounded) and returns the DISCONNECT reason code if one came
/// first, or `None` for a plain close. Other frames before it fail the test.
pub async fn kicked(client: &mut RawClient) -> Option<u8> {
    let frames = client.expect_closed().await;
    match frames.as_slice() {
        [] => None,
        [d] if d.packet_type == testkit::DISCONNECT => Some(d.reason()),
        other => panic!("expected only a DISCONNECT before the close, got {other:?}"),
    }
}
