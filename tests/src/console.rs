//! Test support for the console (`protocol http_api`): a broker with an MQTT listener, a console
//! listener and dynamic security (admin `admin` / [`ADMIN_PASSWORD`]), and a small blocking
//! HTTP/1.1 client (one request per connection) that shows status, headers and body as sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::broker::{BrokerProcess, ScratchDir};
pub use crate::dynsec_target::{ADMIN, ADMIN_PASSWORD};
use crate::mosquitto::dynsec_plugin;

/// A broker with a console.
pub struct ConsoleBroker {
    pub broker: BrokerProcess,
    /// The MQTT listener.
    pub mqtt: SocketAddr,
    /// The `protocol http_api` listener.
    pub http: SocketAddr,
    _dir: ScratchDir,
}

impl ConsoleBroker {
    /// Starts `binary` with an MQTT listener, then an http_api listener, dynamic security, and the
    /// `extra` lines at the end (global options, or options of the http_api listener).
    pub fn start(binary: &Path, extra: &str) -> ConsoleBroker {
        let dir = ScratchDir::new("console");
        let config = format!(
            "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nprotocol http_api\nlog_type all\nallow_anonymous false\n\
             plugin {}\nplugin_opt_config_file {}\n{extra}",
            dynsec_plugin().display(),
            dir.path().join("dynamic-security.json").display()
        );
        let broker = BrokerProcess::start_in(binary, dir.path(), &config, &[("DYNSEC_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
        let addrs: Vec<SocketAddr> = broker
            .log()
            .lines()
            .filter_map(|line| line.split("Opening listen socket on ").nth(1))
            .filter_map(|rest| rest.trim_end_matches('.').parse().ok())
            .collect();
        assert!(addrs.len() >= 2, "two listeners: {}", broker.log());
        ConsoleBroker { broker, mqtt: addrs[0], http: addrs[1], _dir: dir }
    }

    pub fn dir(&self) -> &Path {
        self.broker.dir()
    }

    /// A request to the console.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        request(self.http, method, path, headers, body.as_bytes())
    }

    /// A request with the admin's Basic credentials.
    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = basic(ADMIN, ADMIN_PASSWORD);
        self.request(method, path, &[("Authorization", &auth)], body)
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json_like::Value {
        serde_json_like::parse(&self.body)
    }
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One request on a new connection (`Connection: close`); the answer as sent (chunked bodies are
/// decoded).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect to the console");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write request");
    // A refused oversized body may be answered before it is all read: ignore a reset here.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// JSON for assertions, on the `dynsec` crate's parser (the tests crate keeps serde for dev).
pub mod serde_json_like {
    pub use dynsec::json::Json as Value;

    pub fn parse(text: &str) -> Value {
        dynsec::json::parse(text.as_bytes()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The string at `key`.
    pub fn text(value: &Value, key: &str) -> Option<String> {
        value.get(key).and_then(Value::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// One request over an already open stream (a TLS one, from [`crate::websocket::open_socket`]).
pub async fn request_over(
    mut io: Box<dyn crate::websocket::Io>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await.expect("write request");
    io.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), io.read_to_end(&mut raw)).await;
    parse_response(&raw)
}
