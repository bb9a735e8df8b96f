//! The console's `protocol http_api` listener, step 1 (docs/console.md): mosquitto 2.1.2's
//! `/api/v1/{systree,listeners,version}` with its bodies, access rule and errors; `/healthz` and
//! `/readyz`; `/metrics` counting what real MQTT clients did; the secure headers and bad input.

use std::path::Path;

use dynsec_broker::testkit::{Connect, Next, RawClient};
use dynsec_tests::console::serde_json_like::text;
use dynsec_tests::console::{ADMIN, ADMIN_PASSWORD, ConsoleBroker, basic};

fn ours() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn admin_connect(client_id: &str) -> Connect {
    let mut connect = Connect::new(5, client_id);
    connect.username = Some(ADMIN.into());
    connect.password = Some(ADMIN_PASSWORD.into());
    connect
}

#[test]
fn mosquitto_21_api_paths_answer_as_212_does() {
    let console = ConsoleBroker::start(ours(), "");
    // No credentials and anonymous refused on the listener: 2.1.2's 401.
    let refused = console.request("GET", "/api/v1/version", &[], "");
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.body, "Not authorised\n");
    assert_eq!(refused.header("www-authenticate"), Some("Basic realm=\"Mosquitto API\""));
    let wrong = console.request("GET", "/api/v1/version", &[("Authorization", &basic(ADMIN, "nope"))], "");
    assert_eq!(wrong.status, 401);
    // Anything but GET.
    let post = console.admin("POST", "/api/v1/systree", "");
    assert_eq!((post.status, post.body.as_str()), (405, "Invalid HTTP Method\n"));

    let version = console.admin("GET", "/api/v1/version", "");
    assert_eq!(version.status, 200);
    assert_eq!(version.body, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.header("access-control-allow-origin"), Some("*"));

    let listeners = console.admin("GET", "/api/v1/listeners", "");
    assert_eq!(listeners.status, 200);
    let expected = format!(
        "{{\n\t\"listeners\":\t[{{\n\t\t\t\"port\":\t{},\n\t\t\t\"protocol\":\t\"mqtt\",\n\t\t\t\"tls\":\tfalse,\n\t\t\t\
         \"mtls\":\tfalse,\n\t\t\t\"allow_anonymous\":\tfalse\n\t\t}}, {{\n\t\t\t\"port\":\t{},\n\t\t\t\"protocol\":\t\
         \"httpapi\",\n\t\t\t\"tls\":\tfalse,\n\t\t\t\"mtls\":\tfalse,\n\t\t\t\"allow_anonymous\":\tfalse\n\t\t}}]\n}}",
        console.mqtt.port(),
        console.http.port()
    );
    assert_eq!(listeners.body, expected);

    let systree = console.admin("GET", "/api/v1/systree", "");
    assert_eq!(systree.status, 200);
    assert!(systree.body.starts_with("{\n\t\"$SYS/broker/clients/total\":\t"), "{}", systree.body);
    let keys: Vec<&str> =
        systree.body.lines().filter_map(|l| l.trim_start().strip_prefix('"')?.split('"').next()).collect();
    assert_eq!(keys.len(), 23, "{keys:?}");
    assert_eq!(keys[1], "$SYS/broker/clients/maximum");
    assert_eq!(keys[22], "$SYS/broker/uptime");
    systree.json();
}

#[test]
fn health_and_readiness() {
    let console = ConsoleBroker::start(ours(), "");
    let health = console.request("GET", "/healthz", &[], "");
    assert_eq!(health.status, 200);
    assert_eq!(text(&health.json(), "status").as_deref(), Some("ok"));
    let ready = console.request("GET", "/readyz", &[], "");
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.body, r#"{"ready":true,"listeners":true,"store":true,"router":true}"#);
    // Every answer carries the secure headers.
    for name in ["x-content-type-options", "x-frame-options", "content-security-policy", "referrer-policy"] {
        assert!(health.header(name).is_some(), "{name}: {health:?}");
    }
    let missing = console.request("GET", "/nope", &[], "");
    assert_eq!(missing.status, 404);
}

/// The value of a sample line `name{labels} value` (or `name value`).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_real_clients_did() {
    let console = ConsoleBroker::start(ours(), "gate_login_failures_per_address 1000\n");
    let scrape = || console.admin("GET", "/metrics", "");
    let before = scrape();
    assert_eq!(before.status, 200, "{before:?}");
    assert!(before.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let unauthorised = console.request("GET", "/metrics", &[], "");
    assert_eq!(unauthorised.status, 401);

    let mut publisher = RawClient::connected(console.mqtt, &admin_connect("metrics-pub")).await;
    for pkid in 1..=25u16 {
        publisher.publish("metrics/t", b"12345", 1, false, pkid).await;
        publisher.expect(dynsec_broker::testkit::PUBACK).await;
    }
    let mut wrong = admin_connect("metrics-wrong");
    wrong.password = Some(b"wrong".to_vec());
    let (_, answer) = RawClient::connect(console.mqtt, &wrong).await;
    assert!(matches!(answer, Next::Frame(_) | Next::Closed));
    // A control command over MQTT is counted by name and result.
    publisher
        .publish(
            "$CONTROL/dynamic-security/v1",
            br#"{"commands":[{"command":"createRole","rolename":"metrics-role"},{"command":"getRole","rolename":"none"}]}"#,
            1,
            false,
            100,
        )
        .await;
    publisher.expect(dynsec_broker::testkit::PUBACK).await;
    // The answer is durable before the PUBACK; the counters are counted before it too.
    let after = scrape().body;
    let before = before.body;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("broker_messages_received_total"), 26.0);
    assert!(delta("broker_publish_bytes_received_total") >= 125.0);
    assert!(delta("broker_client_auth_success_total") >= 1.0, "{after}");
    assert!(delta("broker_client_auth_failure_total") >= 1.0, "{after}");
    // The admin may send commands but not publish on metrics/t (the default admin roles).
    assert!(delta(r#"broker_authorization_total{acl_type="publishClientSend",result="deny"}"#) >= 25.0);
    assert!(delta(r#"broker_authorization_total{acl_type="publishClientSend",result="allow"}"#) >= 1.0);
    assert_eq!(sample(&after, r#"dynsec_control_commands_total{command="createRole",result="success"}"#), 1.0);
    assert_eq!(sample(&after, r#"dynsec_control_commands_total{command="getRole",result="error"}"#), 1.0);
    assert!(sample(&after, "dynsec_password_verification_seconds_count") >= 2.0);
    assert!(sample(&after, "dynsec_change_index") >= 1.0);
    assert!(sample(&after, "dynsec_journal_bytes") >= 0.0);
    assert_eq!(sample(&after, "broker_clients_connected"), 1.0);
    assert!(after.contains(r#"broker_kicks_total{reason="admin"}"#), "{after}");
    assert!(after.trim_end().ends_with("# EOF"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_listener_with_certfile_and_keyfile() {
    use dynsec_tests::console::request_over;
    use dynsec_tests::websocket::{Transport, open_socket};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = dynsec_tests::certs::generate(pki_dir.path());
    let tls = format!("certfile {}\nkeyfile {}\n", pki.server_cert().display(), pki.server_key().display());
    let console = ConsoleBroker::start(ours(), &tls);
    let ca = pki.ca();
    let open = || open_socket(console.http, Transport::Tls { ca: &ca });
    let health = request_over(open().await.expect("TLS"), "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200, "{health:?}");
    let auth = basic(ADMIN, ADMIN_PASSWORD);
    let listeners =
        request_over(open().await.unwrap(), "GET", "/api/v1/listeners", &[("Authorization", &auth)], b"").await;
    assert!(listeners.body.contains("\"protocol\":\t\"httpapi\",\n\t\t\t\"tls\":\ttrue"), "{}", listeners.body);
    // Over HTTPS the session cookie is Secure.
    let body = format!(r#"{{"username":"{ADMIN}","password":"{ADMIN_PASSWORD}"}}"#);
    let login = request_over(open().await.unwrap(), "POST", "/api/dynsec/v1/login", &[], body.as_bytes()).await;
    assert!(login.header("set-cookie").is_some_and(|c| c.contains("; Secure")), "{login:?}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = std::net::TcpStream::connect(console.http).and_then(|mut s| {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        Ok(answer)
    });
    assert!(!plain.unwrap_or_default().starts_with(b"HTTP/1.1 200"));
}
