//! `password_file`, `acl_file` and `allow_anonymous` without dynsec (docs/compatibility.md §5.1–§5.5), each
//! case run against dynsec-broker and mosquitto 2.0.11 with the same configuration file and the
//! same files, with the real mosquitto clients: the anonymous/password decision table for MQTT
//! 3.1.1 and 5, every kind of acl_file line, password files written by `mosquitto_passwd`, and
//! SIGHUP reloading both files (kicking a user whose entry is gone, keeping the others).

use std::path::Path;
use std::process::Command;

use dynsec_tests::twin::{BOTH, Client, Connect, Kind, Twin, write_file};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

fn mosquitto_passwd(args: &[&str]) {
    let output = Command::new("mosquitto_passwd").args(args).output().expect("run mosquitto_passwd");
    assert!(output.status.success(), "mosquitto_passwd {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A password file written by the real mosquitto_passwd: `alice` (PBKDF2, its default) and
/// `carol` (`-H sha512`).
fn passwd_file(dir: &Path) -> String {
    let file = dir.join("passwd");
    let path = file.display().to_string();
    mosquitto_passwd(&["-c", "-b", &path, "alice", "alice-pw"]);
    mosquitto_passwd(&["-H", "sha512", "-b", &path, "carol", "carol-pw"]);
    path
}

fn client(port: u16, v5: bool, username: Option<&str>, password: Option<&str>) -> Client {
    let mut client = Client::new(port);
    client.v5 = v5;
    client.username = username.map(str::to_owned);
    client.password = password.map(str::to_owned);
    client
}

#[test]
fn anonymous_and_password_decision_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = passwd_file(dir.path());
    // (allow_anonymous, password_file set, [no username, alice ok, carol ok (sha512), alice
    // wrong, alice without password, unknown user]) → accepted?
    let table: [(bool, bool, [bool; 6]); 4] = [
        (true, true, [true, true, true, false, false, false]),
        (true, false, [true, true, true, true, true, true]),
        (false, true, [false, true, true, false, false, false]),
        (false, false, [false, false, false, false, false, false]),
    ];
    let attempts: [(Option<&str>, Option<&str>); 6] = [
        (None, None),
        (Some("alice"), Some("alice-pw")),
        (Some("carol"), Some("carol-pw")),
        (Some("alice"), Some("wrong")),
        (Some("alice"), None),
        (Some("mallory"), Some("x")),
    ];
    for (allow_anonymous, with_file, expected) in table {
        let mut config = format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous {allow_anonymous}\n");
        if with_file {
            config.push_str(&format!("password_file {passwd}\n"));
        }
        for kind in BOTH {
            let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
            for v5 in [false, true] {
                for ((username, password), accepted) in attempts.iter().zip(expected) {
                    let want = match (accepted, v5) {
                        (true, _) => Connect::Connack(0),
                        (false, false) => Connect::Connack(5),
                        (false, true) => Connect::Connack(0x87),
                    };
                    let got = client(broker.port(0), v5, *username, *password).publish("t", "m");
                    assert_eq!(
                        got,
                        want,
                        "{kind:?} allow_anonymous {allow_anonymous}, password_file {with_file}, v5 {v5}, \
                         user {username:?} password {password:?}\n{}",
                        broker.log()
                    );
                }
            }
        }
    }
}

/// Every kind of acl_file line. `watcher` reads and `feeder` writes everything, so each case
/// checks one side: the tested client publishes to `watcher`, or receives from `feeder`.
const ACL_FILE: &str = "\
# a comment; the next line is empty

topic read anon/read
topic write anon/write
topic anon/both

user alice
topic readwrite alice/#
topic deny alice/secret
topic other/default
user bob
topic read bob/in
user watcher
topic read #
user feeder
topic write #

pattern read pat/%c/in
pattern write pat/%u/out
";

struct Case {
    name: &'static str,
    /// (username, client id) of the publisher and of the subscriber.
    publisher: (Option<&'static str>, &'static str),
    subscriber: (Option<&'static str>, &'static str),
    topic: &'static str,
    /// A topic the subscriber can read and `feeder` write: its message shows that the tested one
    /// would have arrived first.
    sentinel: &'static str,
    delivered: bool,
}

const WATCHER: (Option<&str>, &str) = (Some("watcher"), "watcher-id");
const FEEDER: (Option<&str>, &str) = (Some("feeder"), "feeder-id");

fn acl_cases() -> Vec<Case> {
    let write = |name, publisher, topic, delivered| Case {
        name,
        publisher,
        subscriber: WATCHER,
        topic,
        sentinel: topic,
        delivered,
    };
    let read = |name, subscriber, topic, sentinel, delivered| Case {
        name,
        publisher: FEEDER,
        subscriber,
        topic,
        sentinel,
        delivered,
    };
    vec![
        write("anonymous topic write", (None, "anon1"), "anon/write", true),
        write("anonymous topic read is not write", (None, "anon1"), "anon/read", false),
        write("anonymous topic without access = readwrite", (None, "anon1"), "anon/both", true),
        write("user readwrite", (Some("alice"), "a1"), "alice/x", true),
        write("user deny wins over readwrite", (Some("alice"), "a1"), "alice/secret", false),
        write("user topic without access", (Some("alice"), "a1"), "other/default", true),
        write("anonymous block is not for users", (Some("alice"), "a1"), "anon/both", false),
        write("user read is not write", (Some("bob"), "b1"), "bob/in", false),
        write("pattern %u write", (Some("bob"), "b1"), "pat/bob/out", true),
        write("pattern %u is another user's", (Some("bob"), "b1"), "pat/alice/out", false),
        write("pattern %u skipped without username", (None, "anon1"), "pat/anon1/out", false),
        read("anonymous topic read", (None, "anon2"), "anon/read", "anon/both", true),
        read("anonymous topic write is not read", (None, "anon2"), "anon/write", "anon/both", false),
        read("user read", (Some("bob"), "b2"), "bob/in", "bob/in", true),
        read("user deny on read", (Some("alice"), "a2"), "alice/secret", "alice/x", false),
        read("pattern %c read", (Some("bob"), "cid7"), "pat/cid7/in", "bob/in", true),
        read("pattern %c is another client's", (Some("bob"), "cid7"), "pat/cid8/in", "bob/in", false),
        read("pattern %c for anonymous", (None, "anon3"), "pat/anon3/in", "anon/both", true),
    ]
}

fn as_client(port: u16, (username, id): (Option<&str>, &str)) -> Client {
    let mut client = Client::new(port);
    client.username = username.map(str::to_owned);
    client.id = Some(id.to_owned());
    client
}

/// Runs one case: true if the tested message arrived before the sentinel.
fn delivered(broker: &Twin, case: &Case) -> bool {
    let port = broker.port(0);
    let filters: Vec<&str> =
        if case.topic == case.sentinel { vec![case.topic] } else { vec![case.topic, case.sentinel] };
    let subscriber = as_client(port, case.subscriber).subscribe(&filters);
    assert_eq!(as_client(port, case.publisher).publish(case.topic, "tested"), Connect::Connack(0));
    assert_eq!(as_client(port, FEEDER).publish(case.sentinel, "sentinel"), Connect::Connack(0));
    subscriber.next_payload() == "tested"
}

#[test]
fn acl_file_lines_match_mosquitto() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = write_file(dir.path(), "acl", ACL_FILE);
    let config = format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n");
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        for case in acl_cases() {
            assert_eq!(delivered(&broker, &case), case.delivered, "{kind:?}: {}\n{}", case.name, broker.log());
        }
    }
}

#[test]
fn an_acl_file_of_comments_only_denies_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = write_file(dir.path(), "acl", "# nothing but a comment\n");
    let config = format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n");
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        for identity in [(None, "anon"), (Some("alice"), "a1")] {
            let subscriber = as_client(broker.port(0), identity).subscribe(&["x/#"]);
            assert_eq!(as_client(broker.port(0), identity).publish("x/y", "denied"), Connect::Connack(0));
            let quiet = subscriber.next_matching(std::time::Duration::from_secs(1), |line| line == "denied");
            assert_eq!(quiet, None, "{kind:?}: {identity:?} received a message");
        }
    }
}

#[test]
fn sighup_reloads_password_and_acl_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    for kind in BOTH {
        let sub_dir = dir.path().join(format!("{kind:?}"));
        std::fs::create_dir_all(&sub_dir).expect("dir");
        let passwd = passwd_file(&sub_dir);
        mosquitto_passwd(&["-b", &passwd, "bob", "bob-pw"]);
        let acl = write_file(&sub_dir, "acl", "user alice\ntopic readwrite a/#\nuser bob\ntopic readwrite a/#\n");
        let config =
            format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n");
        let broker = Twin::start(kind, binary(), &sub_dir, &config, 1);
        let port = broker.port(0);
        let alice = |id: &str| {
            let mut c = client(port, true, Some("alice"), Some("alice-pw"));
            c.id = Some(id.into());
            c
        };
        let alice_sub = alice("alice-sub").subscribe(&["a/#", "b/#"]);
        let mut bob = client(port, true, Some("bob"), Some("bob-pw"));
        bob.id = Some("bob-sub".into());
        let bob_sub = bob.subscribe(&["a/#"]);

        // bob leaves the password file; alice's rights move from a/# to b/#.
        mosquitto_passwd(&["-D", &passwd, "bob"]);
        write_file(&sub_dir, "acl", "user alice\ntopic readwrite b/#\n");
        broker.hangup();
        assert!(
            bob_sub.next_matching(twin_wait(), |line| line.contains("sending CONNECT")).is_some(),
            "{kind:?}: bob, removed from the password file, was not disconnected\n{}",
            broker.log()
        );
        assert_eq!(bob.publish("a/x", "m"), Connect::Connack(0x87), "{kind:?}");
        assert_eq!(alice("alice-pub").publish("a/x", "old rights"), Connect::Connack(0));
        assert_eq!(alice("alice-pub").publish("b/x", "new rights"), Connect::Connack(0));
        assert_eq!(alice_sub.next_payload(), "new rights", "{kind:?}");
        assert_eq!(alice_sub.connects(), 1, "{kind:?}: alice was disconnected by the reload");

        if kind == Kind::Ours {
            // An invalid acl_file keeps the rights of the previous one; the error names the line.
            write_file(&sub_dir, "acl", "user alice\ntopic readwrite c/#\nbogus line\n");
            broker.hangup();
            assert!(broker.log().contains("acl:3"), "{}", broker.log());
            assert_eq!(alice("alice-pub").publish("b/x", "kept"), Connect::Connack(0));
            assert_eq!(alice_sub.next_payload(), "kept");
            assert_eq!(alice_sub.connects(), 1);
        }
    }
}

fn twin_wait() -> std::time::Duration {
    dynsec_tests::twin::WAIT
}

#[test]
fn a_password_file_from_dynsec_ctrl_works_in_mosquitto_and_ours() {
    // dynsec-ctrl → mosquitto is covered in ctrl_passwd.rs; here the same file serves both.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("passwd").display().to_string();
    let ctrl = Path::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"));
    let output = Command::new(ctrl).args(["passwd", "-c", "-b", &file, "dave", "dave-pw"]).output().expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let config = format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous false\npassword_file {file}\n");
    for kind in BOTH {
        let broker = Twin::start(kind, binary(), dir.path(), &config, 1);
        let port = broker.port(0);
        assert_eq!(client(port, false, Some("dave"), Some("dave-pw")).publish("t", "m"), Connect::Connack(0));
        assert_eq!(client(port, false, Some("dave"), Some("nope")).publish("t", "m"), Connect::Connack(5));
    }
}
