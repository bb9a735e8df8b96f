//! A headless Debian Chromium driven through its DevTools protocol (a websocket, with
//! tokio-tungstenite), for the browser tests (websockets, the console's UI): launch, attach to a
//! page, evaluate JavaScript, take screenshots, close. The process is killed by its PID on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How many times a condition is polled, 200 ms apart.
pub const POLLS: usize = 300;

/// The Chromium process started by the test; killed by its PID when dropped.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    log: PathBuf,
}

impl Browser {
    /// Starts Chromium on `url`; `extra` are further command-line switches.
    pub fn launch(url: &str, extra: &[String]) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let log = profile.path().join("chromium.log");
        let stderr = fs::File::create(&log).expect("chromium log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start chromium");
        Browser { child, profile, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The DevTools endpoint of the browser, from the DevToolsActivePort file Chromium writes.
    pub async fn devtools_url(&mut self) -> String {
        let file = self.profile.path().join("DevToolsActivePort");
        for _ in 0..POLLS {
            if let Ok(text) = fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited with {status}: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("chromium wrote no DevToolsActivePort: {}", self.log());
    }
}

impl Browser {
    /// Asks Chromium to quit (its helper processes go with it) and waits a bounded time; the
    /// drop kills it if it is still running.
    pub async fn close(mut self, mut devtools: DevTools) {
        let command = json!({"id": u32::MAX, "method": "Browser.close"});
        let _ = devtools.socket.send(Message::text(command.to_string())).await;
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol connection (JSON commands over a websocket).
pub struct DevTools {
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl DevTools {
    pub async fn connect(url: &str) -> DevTools {
        let address: SocketAddr =
            url.trim_start_matches("ws://").split('/').next().and_then(|a| a.parse().ok()).expect("DevTools address");
        let tcp = TcpStream::connect(address).await.expect("connect to DevTools");
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await.expect("DevTools websocket");
        DevTools { socket, next_id: 0 }
    }

    /// Sends a command (to a page when `session` is given) and returns its `result`.
    pub async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let mut command = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(command.to_string())).await.expect("send a DevTools command");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {method}"));
            let Some(Ok(Message::Text(text))) = message else { continue };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == json!(self.next_id) {
                assert!(reply.get("error").is_none(), "DevTools {method}: {reply}");
                return reply["result"].clone();
            }
        }
    }
}

impl DevTools {
    /// Attaches to the first page whose URL contains `needle`; returns its session id.
    pub async fn attach_page(&mut self, needle: &str) -> Option<String> {
        for _ in 0..POLLS {
            let targets = self.call("Target.getTargets", json!({}), None).await;
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|all| {
                    all.iter().find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(needle)))
                })
                .cloned();
            if let Some(page) = page {
                let attached = self
                    .call("Target.attachToTarget", json!({"targetId": page["targetId"], "flatten": true}), None)
                    .await;
                return attached["sessionId"].as_str().map(str::to_owned);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let evaluated = self.call("Runtime.evaluate", params, Some(session)).await;
        evaluated["result"]["value"].clone()
    }

    /// Polls `expression` until it is true (bounded); false if it never was.
    pub async fn wait_for(&mut self, session: &str, expression: &str) -> bool {
        for _ in 0..POLLS {
            if self.eval(session, expression).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self, session: &str) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}), Some(session)).await;
        decode_base64(shot["data"].as_str().unwrap_or_default())
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, s)| n | (u32::from(*s) << (18 - 6 * i)));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
