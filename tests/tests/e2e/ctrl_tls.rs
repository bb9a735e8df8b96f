//! dynsec-ctrl over TLS (rustls) to a real mosquitto TLS listener, side by side with
//! mosquitto_ctrl: same output when the CA is right (and no plain-text warning), and an
//! immediate one-line error with MOSQ_ERR_TLS's status when it is wrong. Certificates are made with the `openssl` command.

use std::path::Path;
use std::process::Command;

use dynsec_tests::ctrl_harness::{Outcome, run_program};
use dynsec_tests::mosquitto::{Mosquitto, dynsec_plugin, mosquitto_ctrl_init};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/test.sh installs it)")
        .status;
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a server certificate for localhost / 127.0.0.1 signed by it; plus an unrelated CA.
fn make_certificates(dir: &Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Test CA",
            days[0],
            days[1],
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=Other CA",
            days[0],
            days[1],
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
            days[0],
            days[1],
        ],
    );
}

fn run(program: &Path, broker: &Mosquitto, ca: &Path, args: &[&str], dir: &Path) -> Outcome {
    let mut full: Vec<String> = vec!["-h".into(), "localhost".into(), "-p".into(), broker.port().to_string()];
    full.extend([
        "--cafile".into(),
        ca.display().to_string(),
        "-u".into(),
        "admin".into(),
        "-P".into(),
        "admin-pw".into(),
    ]);
    full.extend(args.iter().map(|s| s.to_string()));
    run_program(program, &full, None, dir)
}

#[test]
fn tls_connections_behave_like_mosquitto_ctrl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    make_certificates(d);
    let config = d.join("dynamic-security.json");
    mosquitto_ctrl_init(&config, "admin", "admin-pw");
    let broker = Mosquitto::start(
        d,
        &[
            format!("cafile {}", d.join("ca.pem").display()),
            format!("certfile {}", d.join("server.pem").display()),
            format!("keyfile {}", d.join("server.key").display()),
            "allow_anonymous false".into(),
            format!("plugin {}", dynsec_plugin().display()),
            format!("plugin_opt_config_file {}", config.display()),
        ],
    );
    let ours = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let theirs = Path::new("mosquitto_ctrl");
    let ca = d.join("ca.pem");
    let other = d.join("other.pem");

    for args in [
        &["dynsec", "getDefaultACLAccess"][..],
        &["dynsec", "listClients"],
        &["-V", "mqttv311", "dynsec", "getClient", "admin"],
    ] {
        let want = run(theirs, &broker, &ca, args, d);
        let got = run(ours, &broker, &ca, args, d);
        assert_eq!(want, got, "{args:?}; broker log:\n{}", broker.log());
        assert!(got.stderr.is_empty(), "no plain-text warning over TLS");
        assert!(!got.stdout.is_empty());
    }

    // mosquitto_ctrl 2.0.11 exits 8 when the handshake fails while connecting, but when it fails
    // a moment later (as with this unknown CA) it waits its 10 s silently and exits 0. We always
    // report the failure at once with MOSQ_ERR_TLS's status.
    let got = run(ours, &broker, &other, &["dynsec", "listClients"], d);
    assert_eq!(got.status, Some(8));
    let message = String::from_utf8_lossy(&got.stderr);
    assert!(message.starts_with("Unable to connect (A TLS error occurred"), "{message}");
}
