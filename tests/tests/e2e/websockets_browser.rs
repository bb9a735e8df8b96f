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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dynsec_tests::certs;
use dynsec_tests::chromium::{Browser, CHROMIUM, DevTools, POLLS};
use dynsec_tests::dynsec_target::{Admin, DynsecBroker, Flavour, Setup};
use dynsec_tests::mosquitto::unused_port;
use serde_json::{Value, json};

const PASSWORD: &str = "browser-secret";

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
    let spki = format!("--ignore-certificate-errors-spki-list={}", spki_hash(&pki.server_cert()));
    let mut browser = Browser::launch(&url, &[spki]);
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
