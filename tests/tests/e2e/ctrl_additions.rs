//! What dynsec-ctrl adds to mosquitto_ctrl, checked against a real mosquitto: the modify
//! commands, verbose lists, `--json`, options files (`-o` and the default location) and
//! `--timeout`.

use std::net::TcpListener;
use std::path::Path;

use dynsec_tests::ctrl_harness::{Outcome, run_program};
use dynsec_tests::mosquitto::{Mosquitto, mosquitto_ctrl_init};

const WARNING: &str = "Warning: You are running mosquitto_ctrl without encryption.\nThis means all of the configuration changes you are making are visible on the network, including passwords.\n\n";

struct Admin<'a> {
    broker: &'a Mosquitto,
    config_home: &'a Path,
}

impl Admin<'_> {
    fn run(&self, words: &[&str]) -> Outcome {
        let mut args: Vec<String> =
            ["-h", "127.0.0.1", "-p", &self.broker.port().to_string(), "-u", "admin", "-P", "admin-pw"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(words.iter().map(|s| s.to_string()));
        run_program(Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test")), &args, None, self.config_home)
    }

    /// Runs a command that must succeed silently apart from the plain-text warning.
    fn ok(&self, words: &[&str]) -> String {
        let outcome = self.run(words);
        assert_eq!(String::from_utf8_lossy(&outcome.stderr), WARNING, "{words:?}");
        assert_eq!(outcome.status, Some(0), "{words:?}");
        String::from_utf8(outcome.stdout).expect("UTF-8 output")
    }
}

fn start(dir: &Path) -> Mosquitto {
    let config = dir.join("dynamic-security.json");
    mosquitto_ctrl_init(&config, "admin", "admin-pw");
    Mosquitto::with_dynsec(dir, &config)
}

#[test]
fn modify_commands_verbose_lists_and_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start(dir.path());
    let admin = Admin { broker: &broker, config_home: dir.path() };
    for words in [
        &["dynsec", "createRole", "r1"][..],
        &["dynsec", "createRole", "r2"],
        &["dynsec", "createGroup", "g"],
        &["dynsec", "createClient", "u", "-p", "pw"],
    ] {
        admin.ok(words);
    }

    admin.ok(&[
        "dynsec",
        "modifyClient",
        "u",
        "-c",
        "cid",
        "-t",
        "Text",
        "-d",
        "Desc",
        "--role",
        "r1:5",
        "--group",
        "g:2",
    ]);
    assert_eq!(
        admin.ok(&["dynsec", "getClient", "u"]),
        "Username: u\nClientid: cid\nRoles:    r1 (priority: 5)\nGroups:   g (priority: 2)\n"
    );
    admin.ok(&[
        "dynsec",
        "modifyRole",
        "r1",
        "--acl",
        "publishClientSend",
        "a/b",
        "allow",
        "3",
        "--acl",
        "subscribeLiteral",
        "x",
        "deny",
    ]);
    assert_eq!(
        admin.ok(&["dynsec", "getRole", "r1"]),
        "Rolename: r1\nACLs:     publishClientSend    : allow : a/b (priority: 3)\n          subscribeLiteral     : deny  : x (priority: 0)\n"
    );
    admin.ok(&["dynsec", "modifyGroup", "g", "-t", "Group", "--role", "r2:1", "--client", "u:4"]);
    assert_eq!(admin.ok(&["dynsec", "getGroup", "g"]), "Groupname: g\nRoles:     r2 (priority: 1)\nClients:   u\n");
    admin.ok(&["dynsec", "modifyClient", "u", "--no-roles", "-c", ""]);
    assert_eq!(admin.ok(&["dynsec", "getClient", "u"]), "Username: u\nClientid:\nGroups:   g (priority: 4)\n");
    let role_error = admin.run(&["dynsec", "modifyRole", "missing", "-t", "x"]);
    assert_eq!(
        String::from_utf8_lossy(&role_error.stderr),
        format!("{WARNING}modifyRole: Error: Role does not exist\n")
    );

    assert_eq!(
        admin.ok(&["dynsec", "listGroups", "--verbose"]),
        "Groupname: g\nRoles:     r2 (priority: 1)\nClients:   u\n"
    );
    let verbose_clients = admin.ok(&["dynsec", "listClients", "--verbose"]);
    assert!(
        verbose_clients.starts_with("Username: admin\nClientid:\nRoles:    admin (priority: -1)\n\nUsername: u\n"),
        "{verbose_clients}"
    );

    let json = admin.ok(&["--json", "dynsec", "getGroup", "g"]);
    assert_eq!(
        json,
        "{\"command\":\"getGroup\",\"data\":{\"group\":{\"groupname\":\"g\",\"textname\":\"Group\",\"clients\":[{\"username\":\"u\"}],\"roles\":[{\"rolename\":\"r2\",\"priority\":1}]}}}\n"
    );
    assert_eq!(
        admin.ok(&["--json", "dynsec", "getClient", "nobody"]),
        "{\"command\":\"getClient\",\"error\":\"Client not found\"}\n"
    );
}

#[test]
fn options_files_and_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start(dir.path());
    let program = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<String>>();

    // -o FILE (mosquitto_ctrl 2.0.11 ignored it).
    let options = dir.path().join("admin.options");
    std::fs::write(&options, format!("# test\n-h 127.0.0.1\n-p {}\n-u admin\n-P admin-pw\n", broker.port())).unwrap();
    let empty_home = dir.path().join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let outcome =
        run_program(program, &words(&["-o", options.to_str().unwrap(), "dynsec", "listClients"]), None, &empty_home);
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "admin\n", "{}", String::from_utf8_lossy(&outcome.stderr));

    // The default location: $XDG_CONFIG_HOME/dynsec-ctrl, overridden by the command line.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("dynsec-ctrl"), format!("-h 127.0.0.1\n-p {}\n-u admin\n-P wrong\n", broker.port()))
        .unwrap();
    let outcome = run_program(program, &words(&["dynsec", "listClients"]), None, &home);
    assert_eq!(String::from_utf8_lossy(&outcome.stderr), format!("{WARNING}Connection error: Not authorized\n"));
    let outcome = run_program(program, &words(&["-P", "admin-pw", "dynsec", "listClients"]), None, &home);
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "admin\n");

    // A peer that accepts the TCP connection but never answers MQTT.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().unwrap().port().to_string();
    let outcome = run_program(
        program,
        &words(&["-h", "127.0.0.1", "-p", &port, "--timeout", "0.5", "dynsec", "listClients"]),
        None,
        &empty_home,
    );
    assert_eq!(
        String::from_utf8_lossy(&outcome.stderr),
        format!("{WARNING}Error: Timed out after 0.5 seconds waiting for the broker.\n")
    );
    assert_eq!(outcome.status, Some(0), "mosquitto_ctrl's status for a timeout");
}
