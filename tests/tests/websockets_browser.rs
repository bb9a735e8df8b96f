//! A real browser on `protocol websockets` listeners (issue 23): headless Debian Chromium loads a
//! page from the ws listener's `http_dir` (tests/browser/index.html and MQTT.js's browser bundle,
//! npm package `mqtt`), and that page, with MQTT.js, logs in with dynsec credentials, subscribes
//! and publishes through the ws listener (MQTT 5) and the wss listener (MQTT 3.1.1); the ACLs
//! refuse one subscription and one publish. The test drives Chromium through its DevTools protocol
//! (a websocket, with tokio-tungstenite) and reads the page's `window.testResult`.
//!
//! Chromium trusts the wss listener's test certificate by its public key only:
//! `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the server's SubjectPublicKeyInfo>`.
//!
//! Skipped, loudly, only when /usr/bin/chromium or node is missing (scripts/test.sh installs
//! both, and the npm packages of tests/browser).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dynsec_tests::certs;
use dynsec_tests::dynsec_target::{Admin, DynsecBroker, Flavour, Setup};
use dynsec_tests::mosquitto::unused_port;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";
const PASSWORD: &str = "browser-secret";
/// How many times the page's result is polled, 200 ms apart.
const POLLS: usize = 300;

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// MQTT.js's browser bundle, installed from tests/browser/package-lock.json if it is not yet.
fn mqtt_bundle() -> PathBuf {
    let bundle = browser_dir().join("node_modules/mqtt/dist/mqtt.min.js");
    if !bundle.exists() {
        let status = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(browser_dir())
            .status()
            .expect("run npm ci in tests/browser");
        assert!(status.success(), "npm ci in tests/browser failed");
    }
    assert!(bundle.exists(), "{} is missing after npm ci", bundle.display());
    bundle
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate, with the openssl command line.
fn spki_hash(certificate: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        certificate.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().expect("run openssl");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The Chromium process started by the test; killed by its PID when dropped.
struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    log: PathBuf,
}

impl Browser {
    fn launch(url: &str, spki: &str) -> Browser {
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
            .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start chromium");
        Browser { child, profile, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The DevTools endpoint of the browser, from the DevToolsActivePort file Chromium writes.
    async fn devtools_url(&mut self) -> String {
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
    async fn close(mut self, mut devtools: DevTools) {
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
struct DevTools {
    socket: WebSocketStream<TcpStream>,
    next_id: u64,
}

impl DevTools {
    async fn connect(url: &str) -> DevTools {
        let address: SocketAddr =
            url.trim_start_matches("ws://").split('/').next().and_then(|a| a.parse().ok()).expect("DevTools address");
        let tcp = TcpStream::connect(address).await.expect("connect to DevTools");
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await.expect("DevTools websocket");
        DevTools { socket, next_id: 0 }
    }

    /// Sends a command (to a page when `session` is given) and returns its `result`.
    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_chromium_over_ws_and_wss_with_acls() {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !Path::new(CHROMIUM).exists() || !node {
        eprintln!(
            "\n*** SKIPPED mqtt_js_in_chromium_over_ws_and_wss_with_acls: {CHROMIUM} or node is missing \
             (apt-get install chromium nodejs npm; scripts/test.sh does) ***\n"
        );
        return;
    }
    let www = tempfile::tempdir().expect("http_dir");
    fs::copy(browser_dir().join("index.html"), www.path().join("index.html")).expect("copy the page");
    fs::copy(mqtt_bundle(), www.path().join("mqtt.min.js")).expect("copy MQTT.js");
    let pki_dir = tempfile::tempdir().expect("pki dir");
    let pki = certs::generate(pki_dir.path());
    let (ws, wss) = (unused_port(), unused_port());
    let common = vec![
        format!("listener {ws} 127.0.0.1"),
        "protocol websockets".into(),
        format!("http_dir {}", www.path().display()),
        format!("listener {wss} 127.0.0.1"),
        "protocol websockets".into(),
        format!("certfile {}", pki.server_cert().display()),
        format!("keyfile {}", pki.server_key().display()),
    ];
    let broker = DynsecBroker::start(Flavour::Ours, ours(), &Setup { common, ..Setup::default() });
    dynsec_tests::websocket::wait_for_listeners(|| broker.log(), 3);
    let mut admin = Admin::connect(broker.addr(), "browser-admin").await;
    admin
        .ok(&format!(
            r#"{{"command":"createRole","rolename":"web"}},
            {{"command":"addRoleACL","rolename":"web","acltype":"publishClientSend","topic":"browser/in/open","allow":true}},
            {{"command":"addRoleACL","rolename":"web","acltype":"subscribePattern","topic":"browser/in/#","allow":true}},
            {{"command":"createClient","username":"browser","password":"{PASSWORD}"}},
            {{"command":"addClientRole","username":"browser","rolename":"web"}}"#
        ))
        .await;

    let url = format!("http://127.0.0.1:{ws}/index.html?ws={ws}&wss={wss}&user=browser&password={PASSWORD}");
    let mut browser = Browser::launch(&url, &spki_hash(&pki.server_cert()));
    let mut devtools = DevTools::connect(&browser.devtools_url().await).await;
    let mut page_session = None;
    for _ in 0..POLLS {
        let targets = devtools.call("Target.getTargets", json!({}), None).await;
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|all| {
                all.iter().find(|t| t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains("index.html")))
            })
            .cloned();
        if let Some(page) = page {
            let attached = devtools
                .call("Target.attachToTarget", json!({"targetId": page["targetId"], "flatten": true}), None)
                .await;
            page_session = attached["sessionId"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let session = page_session.unwrap_or_else(|| panic!("the page did not open: {}", browser.log()));
    let mut outcome = Value::Null;
    for _ in 0..POLLS {
        let evaluated = devtools
            .call(
                "Runtime.evaluate",
                json!({"expression": "JSON.stringify(window.testResult || null)", "returnByValue": true}),
                Some(&session),
            )
            .await;
        outcome = evaluated["result"]["value"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        if !outcome.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let context =
        format!("page result: {outcome}\n--- chromium ---\n{}\n--- broker ---\n{}", browser.log(), broker.log());
    assert!(!outcome.is_null(), "the page never finished; {context}");
    // MQTT 5 over ws: the refusals come back as reason codes 0x87 (135).
    let ws_result = &outcome["ws"];
    assert_eq!(ws_result["error"], Value::Null, "ws: {context}");
    assert_eq!(ws_result["allowedSubscription"], json!([1]), "ws: {context}");
    assert_eq!(ws_result["deniedSubscription"], json!("refused 135"), "ws: {context}");
    assert_eq!(ws_result["deniedPublish"], json!("refused 135"), "ws: {context}");
    assert_eq!(ws_result["received"], json!(["browser/in/open=hello over ws"]), "ws: {context}");
    // MQTT 3.1.1 over wss: SUBACK 0x80; a refused publish is acknowledged and dropped.
    let wss_result = &outcome["wss"];
    assert_eq!(wss_result["error"], Value::Null, "wss: {context}");
    assert_eq!(wss_result["allowedSubscription"], json!([1]), "wss: {context}");
    assert_eq!(wss_result["deniedSubscription"], json!("refused 128"), "wss: {context}");
    assert_eq!(wss_result["deniedPublish"], json!("acknowledged"), "wss: {context}");
    assert_eq!(wss_result["received"], json!(["browser/in/open=hello over wss"]), "wss: {context}");
    // The page and MQTT.js came from http_dir.
    let log = broker.log();
    assert!(log.contains("serving a file of http_dir"), "{log}");
    browser.close(devtools).await;
}
