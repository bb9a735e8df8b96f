//! Certificates made by mosquitto-tls(7)'s openssl commands (with OpenSSL 3.0 they are X.509
//! **version 1**), used as a mosquitto deployment uses them: the same configuration run by
//! dynsec-broker, mosquitto 2.0.11 and mosquitto 2.1, the same mosquitto_pub runs against each,
//! and dynsec-ctrl next to mosquitto_ctrl (2.0.11 and 2.1) against a mosquitto TLS listener.
//! Accepted and refused must be identical: valid, expired, revoked, other-CA and missing client
//! certificates; a v1 server certificate; a v3 server certificate naming its host only in the CN;
//! a v1 root CA.
//!
//! The man page's commands run verbatim, with `-subj`/`-passout`/`-passin` added so that they do
//! not prompt, and the client key made like the server key (unencrypted: the man page's `-des3`
//! would make mosquitto_pub prompt for its pass phrase).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::ctrl_harness::run_program;
use dynsec_tests::mosquitto::{Mosquitto, dynsec_plugin, mosquitto_21, mosquitto_ctrl_init};
use dynsec_tests::twin::{Client, Connect, Kind, Twin};

fn broker_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/test.sh installs it)");
    assert!(output.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// The X.509 version openssl reads in a certificate (`Version: 1 (0x0)` → 1).
fn x509_version(dir: &Path, cert: &str) -> u32 {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", cert])
        .current_dir(dir)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.lines().find_map(|line| line.trim().strip_prefix("Version: ")).expect("a Version line");
    version.split_whitespace().next().and_then(|v| v.parse().ok()).expect("a version number")
}

const CA_PASS: [&str; 2] = ["-passout", "pass:recipe-ca"];
const CA_PASS_IN: [&str; 2] = ["-passin", "pass:recipe-ca"];

/// mosquitto-tls(7), CERTIFICATE AUTHORITY.
fn certificate_authority(dir: &Path, stem: &str, subject: &str) {
    let (key, crt) = (format!("{stem}.key"), format!("{stem}.crt"));
    let mut args = vec!["req", "-new", "-x509", "-days", "3650", "-extensions", "v3_ca", "-keyout", &key, "-out", &crt];
    args.extend(["-subj", subject]);
    args.extend(CA_PASS);
    openssl(dir, &args);
}

/// mosquitto-tls(7), SERVER / CLIENT: a key, a request, and the CA's signature. `days` "-1" makes
/// an already expired certificate; `extfile` (not in the recipe) makes a v3 certificate.
fn signed_by(dir: &Path, ca: &str, stem: &str, subject: &str, days: &str, extfile: Option<&str>) {
    let (key, csr, crt) = (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.crt"));
    if !dir.join(&key).exists() {
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
    }
    openssl(dir, &["req", "-out", &csr, "-key", &key, "-new", "-subj", subject]);
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    let mut args = vec!["x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key, "-CAcreateserial"];
    args.extend(["-out", &crt, "-days", days]);
    args.extend(CA_PASS_IN);
    if let Some(extfile) = extfile {
        args.extend(["-extfile", extfile]);
    }
    openssl(dir, &args);
}

/// Every certificate of the test, in `dir`.
fn make_pki(dir: &Path) {
    certificate_authority(dir, "ca", "/O=Recipe/CN=Recipe CA");
    signed_by(dir, "ca", "server", "/O=Recipe/CN=localhost", "3650", None);
    signed_by(dir, "ca", "client", "/O=Recipe/CN=certuser", "3650", None);
    signed_by(dir, "ca", "expired", "/O=Recipe/CN=expireduser", "-1", None);
    signed_by(dir, "ca", "revoked", "/O=Recipe/CN=revokeduser", "3650", None);
    // What the same `x509 -req` makes with OpenSSL 3.2 and later: v3, the host only in the CN.
    fs::write(dir.join("v3.ext"), "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n").expect("write");
    signed_by(dir, "ca", "server-v3cn", "/O=Recipe/CN=localhost", "3650", Some("v3.ext"));
    certificate_authority(dir, "other-ca", "/O=Elsewhere/CN=Other CA");
    signed_by(dir, "other-ca", "stranger", "/O=Elsewhere/CN=certuser", "3650", None);
    fs::write(dir.join("v3-leaf.ext"), "subjectKeyIdentifier=hash\nbasicConstraints=CA:FALSE\n").expect("write");
    // A version 1 root (self-signed without extensions), with a v1 and a v3 client under it.
    openssl(dir, &["genrsa", "-out", "v1ca.key", "2048"]);
    openssl(dir, &["req", "-new", "-key", "v1ca.key", "-out", "v1ca.csr", "-subj", "/O=Old/CN=V1 Root"]);
    openssl(dir, &["x509", "-req", "-in", "v1ca.csr", "-signkey", "v1ca.key", "-out", "v1ca.crt", "-days", "3650"]);
    for (stem, ext) in [("v1ca-client", None), ("v1ca-client-v3", Some("v3-leaf.ext"))] {
        let (key, csr, crt) = (format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.crt"));
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
        openssl(dir, &["req", "-out", &csr, "-key", &key, "-new", "-subj", "/O=Old/CN=certuser"]);
        let mut args = vec!["x509", "-req", "-in", &csr, "-CA", "v1ca.crt", "-CAkey", "v1ca.key"];
        args.extend(["-CAcreateserial", "-out", &crt, "-days", "3650"]);
        if let Some(ext) = ext {
            args.extend(["-extfile", ext]);
        }
        openssl(dir, &args);
    }
    // A CRL of the recipe CA revoking `revoked.crt` (openssl ca; v2, as webpki and OpenSSL read it).
    fs::write(dir.join("index.txt"), "").expect("write");
    fs::write(dir.join("crlnumber"), "01\n").expect("write");
    fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = recipe\n[recipe]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\ncertificate = ca.crt\nprivate_key = ca.key\n",
    )
    .expect("write");
    let mut revoke = vec!["ca", "-config", "ca.cnf", "-revoke", "revoked.crt"];
    revoke.extend(CA_PASS_IN);
    openssl(dir, &revoke);
    let mut gencrl = vec!["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"];
    gencrl.extend(CA_PASS_IN);
    openssl(dir, &gencrl);

    for v1 in ["server.crt", "client.crt", "expired.crt", "revoked.crt", "stranger.crt", "v1ca.crt", "v1ca-client.crt"]
    {
        assert_eq!(x509_version(dir, v1), 1, "{v1}: this OpenSSL no longer makes version 1 certificates");
    }
    assert_eq!(x509_version(dir, "server-v3cn.crt"), 3);
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// {PORT0}: the recipe's server certificate, client certificates required, CN as username, CRL.
/// {PORT1}: the v3 server certificate with the host only in the CN, no client certificate.
/// {PORT2}: client certificates required, trusting only the version 1 root.
fn config(dir: &Path) -> String {
    format!(
        "per_listener_settings false\nallow_anonymous true\n\
         listener {{PORT0}} 127.0.0.1\ncertfile {server}\nkeyfile {key}\ncafile {ca}\nrequire_certificate true\n\
         use_identity_as_username true\ncrlfile {crl}\n\
         listener {{PORT1}} 127.0.0.1\ncertfile {v3cn}\nkeyfile {v3cn_key}\n\
         listener {{PORT2}} 127.0.0.1\ncertfile {server}\nkeyfile {key}\ncafile {v1ca}\nrequire_certificate true\n\
         use_identity_as_username true\n",
        server = p(dir, "server.crt"),
        key = p(dir, "server.key"),
        ca = p(dir, "ca.crt"),
        crl = p(dir, "crl.pem"),
        v3cn = p(dir, "server-v3cn.crt"),
        v3cn_key = p(dir, "server-v3cn.key"),
        v1ca = p(dir, "v1ca.crt"),
    )
}

fn client(dir: &Path, port: u16, host: &str, cafile: &str, cert: Option<&str>) -> Client {
    let mut client = Client::new(port);
    client.host = Some(host.into());
    client.cafile = Some(p(dir, cafile));
    client.cert = cert.map(|stem| (p(dir, &format!("{stem}.crt")), p(dir, &format!("{stem}.key"))));
    client
}

#[test]
fn recipe_certificates_connect_or_are_refused_as_with_mosquitto() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    make_pki(dir);
    let mut kinds = vec![Kind::Ours, Kind::Mosquitto];
    if mosquitto_21("recipe_certificates_connect_or_are_refused_as_with_mosquitto").is_some() {
        kinds.push(Kind::Mosquitto21);
    }
    for kind in kinds {
        let broker = Twin::start(kind, broker_binary(), dir, &config(dir), 3);
        let (recipe, v3cn, v1root) = (broker.port(0), broker.port(1), broker.port(2));
        let cases: Vec<(&str, Client, Connect)> = vec![
            ("v1 client, v1 server", client(dir, recipe, "localhost", "ca.crt", Some("client")), Connect::Connack(0)),
            ("expired v1 client", client(dir, recipe, "localhost", "ca.crt", Some("expired")), Connect::NoConnack),
            ("revoked v1 client", client(dir, recipe, "localhost", "ca.crt", Some("revoked")), Connect::NoConnack),
            (
                "v1 client of another CA",
                client(dir, recipe, "localhost", "ca.crt", Some("stranger")),
                Connect::NoConnack,
            ),
            ("no client certificate", client(dir, recipe, "localhost", "ca.crt", None), Connect::NoConnack),
            (
                "server not in CN (127.0.0.1)",
                client(dir, recipe, "127.0.0.1", "ca.crt", Some("client")),
                Connect::NoConnack,
            ),
            (
                "client trusts another CA",
                client(dir, recipe, "localhost", "other-ca.crt", Some("client")),
                Connect::NoConnack,
            ),
            ("v3 server, host only in CN", client(dir, v3cn, "localhost", "ca.crt", None), Connect::Connack(0)),
            (
                "v1 client of a v1 root",
                client(dir, v1root, "localhost", "ca.crt", Some("v1ca-client")),
                Connect::Connack(0),
            ),
            (
                "v3 client of a v1 root",
                client(dir, v1root, "localhost", "ca.crt", Some("v1ca-client-v3")),
                Connect::Connack(0),
            ),
            (
                "recipe client, v1 root listener",
                client(dir, v1root, "localhost", "ca.crt", Some("client")),
                Connect::NoConnack,
            ),
        ];
        for (name, client, expected) in cases {
            let got = client.publish("recipe/test", "hello");
            assert_eq!(got, expected, "{kind:?}: {name}\n{}", broker.log());
        }
    }
}

/// A version 1 server certificate starts the broker; with the wrong key it is still refused, with
/// the right message.
#[test]
fn broker_starts_with_a_v1_server_certificate_and_checks_its_key() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    make_pki(dir);
    let listener =
        |cert: &str, key: &str| format!("listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n", p(dir, cert), p(dir, key));
    let broker = BrokerProcess::start_with_text(broker_binary(), &listener("server.crt", "server.key"));
    drop(broker);
    let (status, log) = BrokerProcess::expect_start_failure(broker_binary(), &listener("server.crt", "client.key"));
    assert_ne!(status, 0, "{log}");
    assert!(log.contains("do not match"), "{log}");
}

/// Whether a mosquitto_ctrl-like program listed the clients (`admin` among them).
fn ctrl_lists_clients(
    program: &Path,
    env_lib: Option<&Path>,
    port: u16,
    host: &str,
    cafile: &Path,
    home: &Path,
) -> bool {
    let args: Vec<String> = [
        "-h",
        host,
        "-p",
        &port.to_string(),
        "--cafile",
        &cafile.display().to_string(),
        "-u",
        "admin",
        "-P",
        "admin-pw",
        "dynsec",
        "listClients",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let outcome = match env_lib {
        // mosquitto_ctrl 2.1 with its own libmosquitto.
        Some(lib) => {
            let output = Command::new(program)
                .args(&args)
                .env("LD_LIBRARY_PATH", lib)
                .env("HOME", home)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run mosquitto_ctrl 2.1");
            return output.status.success() && String::from_utf8_lossy(&output.stdout).contains("admin");
        }
        None => run_program(program, &args, None, home),
    };
    outcome.status == Some(0) && String::from_utf8_lossy(&outcome.stdout).contains("admin")
}

#[test]
fn dynsec_ctrl_trusts_the_server_certificates_mosquitto_ctrl_trusts() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    make_pki(dir);
    let dynsec = dir.join("dynamic-security.json");
    mosquitto_ctrl_init(&dynsec, "admin", "admin-pw");
    let plugin = [
        "allow_anonymous false".to_string(),
        format!("plugin {}", dynsec_plugin().display()),
        format!("plugin_opt_config_file {}", dynsec.display()),
    ];
    let server = |stem: &str| {
        let mut lines = vec![
            format!("certfile {}", p(dir, &format!("{stem}.crt"))),
            format!("keyfile {}", p(dir, &format!("{stem}.key"))),
        ];
        lines.extend(plugin.iter().cloned());
        Mosquitto::start(dir, &lines)
    };
    let v1 = server("server");
    let v3cn = server("server-v3cn");

    let ours: PathBuf = env!("CARGO_BIN_EXE_dynsec-ctrl-under-test").into();
    let mut programs: Vec<(&str, PathBuf, Option<PathBuf>)> =
        vec![("dynsec-ctrl", ours, None), ("mosquitto_ctrl 2.0", "mosquitto_ctrl".into(), None)];
    if let Some(installed) = mosquitto_21("dynsec_ctrl_trusts_the_server_certificates_mosquitto_ctrl_trusts") {
        programs.push(("mosquitto_ctrl 2.1", installed.prefix.join("bin/mosquitto_ctrl"), Some(installed.lib_dir())));
    }
    let (ca, other_ca) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
    let cases = [
        ("v1 server certificate", v1.port(), "localhost", &ca, true),
        ("v3 server certificate, host only in CN", v3cn.port(), "localhost", &ca, true),
        ("v1 server certificate, host not in CN", v1.port(), "127.0.0.1", &ca, false),
        ("v1 server certificate, another CA trusted", v1.port(), "localhost", &other_ca, false),
    ];
    // A refusing mosquitto_ctrl 2.0 may wait its full 10 s: every run gets a thread of its own.
    std::thread::scope(|scope| {
        let mut runs = Vec::new();
        for (program_name, program, lib) in &programs {
            for (case, port, host, cafile, expected) in &cases {
                let handle = scope.spawn(move || ctrl_lists_clients(program, lib.as_deref(), *port, host, cafile, dir));
                runs.push((program_name, case, expected, handle));
            }
        }
        for (program_name, case, expected, handle) in runs {
            let accepted = handle.join().expect("a ctrl run panicked");
            assert_eq!(accepted, *expected, "{program_name}: {case}\n{}", v1.log());
        }
    });
}
