//! TLS listeners end to end, dynsec-broker and mosquitto 2.0.11 side by side with the same
//! configuration and certificates made by the test (docs/compatibility.md §5.6): which certificates connect, the
//! certificate identity as username with dynsec ACLs, and SIGHUP replacing the server certificate
//! without dropping a client connected with a certificate (mosquitto regression #1402).

use std::fs;
use std::path::Path;

use dynsec_tests::certs::{self, TestPki};
use dynsec_tests::twin::{BOTH, Client, Connect, Kind, Twin};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A plain listener ({PORT0}) and a mutual-TLS one ({PORT1}) with CN as username and the CRL.
fn mutual_tls_config(pki: &TestPki, extra: &str) -> String {
    format!(
        "per_listener_settings false\nallow_anonymous true\n{extra}\n\
         listener {{PORT0}} 127.0.0.1\n\
         listener {{PORT1}} 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\nrequire_certificate true\n\
         use_identity_as_username true\ncrlfile {}\n",
        p(&pki.server_cert()),
        p(&pki.server_key()),
        p(&pki.ca()),
        p(&pki.path("crl.pem")),
    )
}

fn tls_client(pki: &TestPki, port: u16, stem: Option<&str>) -> Client {
    let mut client = Client::new(port);
    client.cafile = Some(p(&pki.ca()));
    client.cert = stem.map(|stem| {
        let (cert, key) = pki.client(stem);
        (p(&cert), p(&key))
    });
    client
}

#[test]
fn certificates_connect_or_are_refused_as_with_mosquitto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("pki"));
    let config = mutual_tls_config(&pki, "");
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 2);
        for v5 in [false, true] {
            let identity_refused = if v5 { 0x86 } else { 4 };
            let mut localhost = tls_client(&pki, broker.port(1), Some("client"));
            localhost.host = Some("localhost".into());
            let mut wrong_server_ca = tls_client(&pki, broker.port(1), Some("client"));
            wrong_server_ca.cafile = Some(p(&pki.other_ca()));
            let cases: Vec<(&str, Client, Connect)> = vec![
                ("plain listener, anonymous", Client::new(broker.port(0)), Connect::Connack(0)),
                (
                    "valid client certificate, SNI 127.0.0.1",
                    tls_client(&pki, broker.port(1), Some("client")),
                    Connect::Connack(0),
                ),
                ("valid client certificate, SNI localhost", localhost, Connect::Connack(0)),
                ("expired certificate", tls_client(&pki, broker.port(1), Some("expired")), Connect::NoConnack),
                ("certificate of another CA", tls_client(&pki, broker.port(1), Some("untrusted")), Connect::NoConnack),
                (
                    "revoked certificate (crlfile)",
                    tls_client(&pki, broker.port(1), Some("revoked")),
                    Connect::NoConnack,
                ),
                ("no client certificate", tls_client(&pki, broker.port(1), None), Connect::NoConnack),
                (
                    "certificate without CN",
                    tls_client(&pki, broker.port(1), Some("nocn")),
                    Connect::Connack(identity_refused),
                ),
                ("client does not trust the server", wrong_server_ca, Connect::NoConnack),
            ];
            for (name, mut client, expected) in cases {
                client.v5 = v5;
                let got = client.publish("tls/test", "hello");
                assert_eq!(got, expected, "{kind:?}, v5={v5}: {name}\n{}", broker.log());
            }
        }
    }
}

/// The dynsec file: `certuser` (no password: only its certificate identifies it) may publish to
/// `cert/allowed` and subscribe to `cert/#`; nothing else.
fn dynsec_file(dir: &Path, name: &str) -> String {
    let json = r#"{
  "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
  "clients": [{"username": "certuser", "roles": [{"rolename": "cert"}]}],
  "groups": [],
  "roles": [{"rolename": "cert", "acls": [
    {"acltype": "publishClientSend", "topic": "cert/allowed", "priority": 0, "allow": true},
    {"acltype": "subscribePattern", "topic": "cert/#", "priority": 0, "allow": true}
  ]}]
}"#;
    let path = dir.join(name);
    fs::write(&path, json).expect("write dynsec file");
    p(&path)
}

#[test]
fn certificate_identities_get_the_dynsec_acls_of_that_username() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("pki"));
    for kind in BOTH {
        let file = dynsec_file(dir.path(), &format!("dynsec-{kind:?}.json"));
        let plugin = dynsec_tests::mosquitto::dynsec_plugin();
        let extra = format!("plugin {}\nplugin_opt_config_file {file}", p(&plugin));
        let broker = Twin::start(kind, binary(), dir.path(), &mutual_tls_config(&pki, &extra), 2);
        let mut subscriber = tls_client(&pki, broker.port(1), Some("client"));
        subscriber.id = Some("cert-sub".into());
        let subscriber = subscriber.subscribe(&["cert/#"]);
        let mut publisher = tls_client(&pki, broker.port(1), Some("client"));
        publisher.id = Some("cert-pub".into());
        // An MQTT username in CONNECT is replaced by the certificate's CN.
        publisher.username = Some("someone-else".into());
        assert_eq!(publisher.publish("cert/denied", "denied"), Connect::Connack(0), "{kind:?}");
        assert_eq!(publisher.publish("cert/allowed", "allowed"), Connect::Connack(0), "{kind:?}");
        let first = subscriber.next_payload();
        assert_eq!(first, "allowed", "{kind:?}: the denied publish must not be delivered\n{}", broker.log());
    }
}

#[test]
fn sighup_replaces_the_server_certificate_and_keeps_certificate_clients() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("pki"));
    for kind in BOTH {
        // Each broker gets its own copy of the server files, which the test replaces.
        let live = dir.path().join(format!("live-{kind:?}"));
        fs::create_dir_all(&live).expect("dir");
        fs::copy(pki.server_cert(), live.join("server.pem")).expect("copy");
        fs::copy(pki.server_key(), live.join("server.key")).expect("copy");
        let live_pki = TestPki { dir: live.clone() };
        let config = mutual_tls_config(&pki, "")
            .replace(&p(&pki.server_cert()), &p(&live_pki.server_cert()))
            .replace(&p(&pki.server_key()), &p(&live_pki.server_key()));
        let broker = Twin::start(kind, binary(), dir.path(), &config, 2);
        let mut subscriber = tls_client(&pki, broker.port(1), Some("client"));
        subscriber.id = Some("survivor".into());
        let subscriber = subscriber.subscribe(&["reload/#"]);

        // The new certificate is issued by the other CA: only clients trusting it connect now.
        fs::copy(pki.path("server2.pem"), live.join("server.pem")).expect("copy");
        fs::copy(pki.path("server2.key"), live.join("server.key")).expect("copy");
        broker.hangup();
        let mut new_trust = tls_client(&pki, broker.port(1), Some("client"));
        new_trust.cafile = Some(p(&pki.other_ca()));
        let old_trust = tls_client(&pki, broker.port(1), Some("client"));
        assert_eq!(old_trust.publish("reload/x", "old"), Connect::NoConnack, "{kind:?}: old certificate still served");
        assert_eq!(new_trust.publish("reload/x", "after"), Connect::Connack(0), "{kind:?}\n{}", broker.log());
        let line = subscriber.next_payload();
        assert_eq!(line, "after", "{kind:?}");
        assert_eq!(subscriber.connects(), 1, "{kind:?}: the certificate client was dropped by SIGHUP");

        if kind == Kind::Ours {
            // A broken certificate: the previous one stays in service and the error is logged.
            fs::write(live.join("server.pem"), "not a certificate\n").expect("write");
            broker.hangup();
            assert_eq!(new_trust.publish("reload/x", "still"), Connect::Connack(0), "{}", broker.log());
            assert!(broker.log().contains("keeping the previous certificates"), "{}", broker.log());
            assert_eq!(subscriber.connects(), 1);
        }
    }
}

/// `use_subject_as_username` (the RFC 2253 subject, as an acl_file `user`), `capath` (a directory
/// prepared with `openssl rehash`, as OpenSSL needs) and `tls_version tlsv1.3`.
#[test]
fn subject_as_username_capath_and_minimum_tls_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = certs::generate(&dir.path().join("pki"));
    let capath = dir.path().join("capath");
    fs::create_dir_all(&capath).expect("dir");
    fs::copy(pki.ca(), capath.join("ca.pem")).expect("copy");
    let rehash = std::process::Command::new("openssl").arg("rehash").arg(&capath).status().expect("run openssl");
    assert!(rehash.success(), "openssl rehash failed");
    let acl = dynsec_tests::twin::write_file(
        dir.path(),
        "acl",
        &format!("user {}\ntopic readwrite subject/#\n", certs::CLIENT_SUBJECT_RFC2253),
    );
    let config = format!(
        "allow_anonymous false\nacl_file {acl}\nlistener {{PORT0}} 127.0.0.1\ncertfile {}\nkeyfile {}\ncapath {}\n\
         require_certificate true\nuse_subject_as_username true\ntls_version tlsv1.3\n",
        p(&pki.server_cert()),
        p(&pki.server_key()),
        p(&capath),
    );
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        let mut subscriber = tls_client(&pki, broker.port(0), Some("client"));
        subscriber.id = Some("subject-sub".into());
        let subscriber = subscriber.subscribe(&["subject/#"]);
        let mut publisher = tls_client(&pki, broker.port(0), Some("client"));
        publisher.v5 = true;
        assert_eq!(publisher.publish("subject/x", "by subject"), Connect::Connack(0), "{kind:?}\n{}", broker.log());
        assert_eq!(subscriber.next_payload(), "by subject", "{kind:?}");
        // mosquitto_pub's --tls-version is a minimum too: openssl s_client pins the version.
        let (cert, key) = pki.client("client");
        let handshake = |version: &str| {
            std::process::Command::new("openssl")
                .args(["s_client", version, "-connect", &format!("127.0.0.1:{}", broker.port(0))])
                .args(["-CAfile", &p(&pki.ca()), "-cert", &p(&cert), "-key", &p(&key)])
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run openssl s_client")
                .status
                .success()
        };
        assert!(!handshake("-tls1_2"), "{kind:?}: TLS 1.2 accepted by a tlsv1.3 listener");
        assert!(handshake("-tls1_3"), "{kind:?}: TLS 1.3 refused");
    }
}
