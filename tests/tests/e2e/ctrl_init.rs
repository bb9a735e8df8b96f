//! `dynsec-ctrl dynsec init` writes what `mosquitto_ctrl dynsec init` writes (same keys, order
//! and values apart from the password hash, salt and iteration count), refuses to overwrite, and
//! the real mosquitto loads the file and lets the administrator in.

use std::path::Path;
use std::process::Command;

use dynsec::json::Json;
use dynsec::password::PasswordHash;
use dynsec_tests::ctrl_harness::{Outcome, run_program};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init};

fn dynsec_ctrl(args: &[&str], stdin: Option<&str>, config_home: &Path) -> Outcome {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_program(Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")), &args, stdin, config_home)
}

fn parse(path: &Path) -> Json {
    dynsec::json::parse(&std::fs::read(path).expect("read config")).expect("valid JSON")
}

fn text(value: Option<&Json>) -> String {
    String::from_utf8(value.and_then(Json::as_bytes).expect("a string").to_vec()).expect("UTF-8")
}

/// The document with the clients' password, salt and iterations replaced by markers.
fn without_secrets(mut document: Json) -> Json {
    let Json::Object(members) = &mut document else {
        return document;
    };
    for (key, value) in members.iter_mut() {
        let (b"clients", Json::Array(clients)) = (key.as_slice(), value) else {
            continue;
        };
        for client in clients.iter_mut() {
            let Json::Object(fields) = client else {
                continue;
            };
            for (name, field) in fields.iter_mut() {
                if matches!(name.as_slice(), b"password" | b"salt" | b"iterations") {
                    *field = Json::str("<secret>");
                }
            }
        }
    }
    document
}

#[test]
fn init_matches_mosquitto_ctrl_and_loads_in_mosquitto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = dir.path().join("ours.json");
    let theirs = dir.path().join("theirs.json");
    mosquitto_ctrl_init(&theirs, "admin", "admin-pw");
    let outcome = dynsec_ctrl(&["dynsec", "init", ours.to_str().unwrap(), "admin", "admin-pw"], None, dir.path());
    assert_eq!(outcome.status, Some(0), "{}", String::from_utf8_lossy(&outcome.stderr));
    assert!(outcome.stderr.is_empty());
    assert!(
        String::from_utf8_lossy(&outcome.stdout)
            .starts_with(&format!("The client 'admin' has been created in the file '{}'.\n", ours.display()))
    );

    let ours_json = parse(&ours);
    let theirs_json = parse(&theirs);
    assert_eq!(
        String::from_utf8(without_secrets(ours_json.clone()).to_pretty()).unwrap(),
        String::from_utf8(without_secrets(theirs_json.clone()).to_pretty()).unwrap()
    );
    // Same layout byte for byte once the secrets are equal: cJSON's tab-indented form, no newline.
    let raw = std::fs::read_to_string(&ours).unwrap();
    assert!(raw.starts_with("{\n\t\"clients\":\t[{\n\t\t\t\"username\":\t\"admin\",\n"));
    assert!(!raw.ends_with('\n'));

    let client = &ours_json.get("clients").and_then(Json::as_array).unwrap()[0];
    let iterations = client.get("iterations").and_then(Json::as_int).unwrap();
    assert_eq!(iterations, 1000);
    let hash =
        PasswordHash::from_dynsec_fields(&text(client.get("password")), &text(client.get("salt")), iterations.into())
            .expect("password fields");
    assert!(hash.loadable_by_mosquitto_2_0(), "12-byte salt and 64-byte PBKDF2-SHA512 output");
    assert!(hash.verify(b"admin-pw"));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The real broker loads it and the administrator can use it.
    let broker = Mosquitto::with_dynsec(dir.path(), &ours);
    let port = broker.port().to_string();
    let listed = Command::new("mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "admin", "-P", "admin-pw", "dynsec", "listClients"])
        .output()
        .expect("run mosquitto_ctrl");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "admin\n", "{}", broker.log());
    let refused = Command::new("mosquitto_ctrl")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "admin", "-P", "wrong", "dynsec", "listClients"])
        .output()
        .expect("run mosquitto_ctrl");
    assert!(String::from_utf8_lossy(&refused.stderr).ends_with("Connection error: Not authorized\n"));
}

#[test]
fn init_refuses_to_overwrite_with_mosquitto_ctrls_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("existing.json");
    std::fs::write(&file, "keep me").unwrap();
    let path = file.to_str().unwrap();
    let ours = dynsec_ctrl(&["dynsec", "init", path, "admin", "pw"], None, dir.path());
    let theirs = run_program(
        Path::new("mosquitto_ctrl"),
        &["dynsec".into(), "init".into(), path.into(), "admin".into(), "pw".into()],
        None,
        dir.path(),
    );
    assert_eq!(ours, theirs);
    assert_eq!(
        String::from_utf8_lossy(&ours.stderr),
        format!("dynsec init: '{path}' already exists. Remove the file or use a different location..\n")
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn init_prompts_twice_when_the_password_is_omitted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("prompted.json");
    let path = file.to_str().unwrap();

    let mismatch = dynsec_ctrl(&["dynsec", "init", path, "root"], Some("one\ntwo\n"), dir.path());
    assert_eq!(String::from_utf8_lossy(&mismatch.stderr), "Error: Passwords do not match.\n");
    assert!(!file.exists());

    let outcome = dynsec_ctrl(&["dynsec", "init", path, "root"], Some("s3cret\ns3cret\n"), dir.path());
    assert_eq!(outcome.status, Some(0));
    assert!(
        String::from_utf8_lossy(&outcome.stdout).starts_with("New password for root: \nReenter password for root: \n")
    );
    let client = &parse(&file).get("clients").and_then(Json::as_array).unwrap()[0].clone();
    let hash = PasswordHash::from_dynsec_fields(
        &text(client.get("password")),
        &text(client.get("salt")),
        client.get("iterations").and_then(Json::as_int).unwrap().into(),
    )
    .unwrap();
    assert!(hash.verify(b"s3cret"));
}
