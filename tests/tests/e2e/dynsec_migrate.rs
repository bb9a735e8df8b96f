//! `dynsec-ctrl dynsec migrate`: a generated mosquitto deployment (mosquitto.conf naming a
//! password_file and an acl_file with user sections, anonymous `topic` lines, `deny` lines and
//! `pattern` lines with `%u`/`%c`) is converted, and then `dynsec-broker` on the converted
//! dynamic-security.json makes the same publish and delivery decisions, case by case, as the real
//! mosquitto 2.0.11 on the original files; mosquitto 2.1.2 loads the converted file and decides
//! the same too.
//!
//! Fails when mosquitto 2.1 is not installed, unless `DYNSEC_SKIP_ORACLE_21=1`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use dynsec::password::{HashPolicy, PasswordHash};
use dynsec_broker::testkit::{self, Next, RawClient};
use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::dynsec_target::credentials;
use dynsec_tests::mosquitto::{Mosquitto, dynsec_plugin, mosquitto_21};

const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
const FEEDER: &str = "feeder";
const LEVELS: [&str; 5] = ["a", "b", "users", "dev", "x"];

/// A small deterministic generator (the cases must be the same on every broker and every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len())]
    }
}

fn password(user: &str) -> String {
    format!("{user}-pw")
}

/// The topics every principal is checked on: concrete topics over a few levels, including each
/// user's and client id's own levels (for the patterns).
fn topics() -> Vec<String> {
    let mut topics: Vec<String> =
        ["a", "a/b", "a/x", "a/b/c", "b", "b/a", "b/b", "b/x", "x", "x/a", "x/a/b", "users", "users/x", "dev/x"]
            .map(String::from)
            .to_vec();
    for user in ["u0", "u1", "u2", "u4", "u5"] {
        topics.push(format!("users/{user}/in"));
        topics.push(format!("users/{user}/secret"));
        topics.push(format!("dev/c-{user}/up"));
    }
    topics.push("dev/c-anon/up".into());
    topics
}

/// An acl_file drawn from `seed`: anonymous `topic` lines, sections for most users (not u5),
/// patterns, the feeder's right to publish everything and every client's right to read its own
/// end marker.
fn acl_file(seed: u64) -> String {
    let mut rng = Lcg(seed);
    let accesses = ["read ", "write ", "readwrite ", "deny ", ""];
    let filter = |rng: &mut Lcg| -> String {
        match rng.next(6) {
            0 => "#".into(),
            1 => format!("{}/#", rng.pick(&LEVELS)),
            2 => format!("{}/+", rng.pick(&LEVELS)),
            3 => format!("+/{}", rng.pick(&LEVELS)),
            4 => format!("{}/{}", rng.pick(&LEVELS), rng.pick(&LEVELS)),
            _ => format!("users/{}/#", rng.pick(&USERS)),
        }
    };
    // A client's own `deny #` would come before the end-marker pattern and hide the marker.
    let rule = |rng: &mut Lcg| -> String {
        let access = rng.pick(&accesses);
        match filter(rng) {
            f if f == "#" && access == "deny " => "topic deny x/#\n".to_owned(),
            f => format!("topic {access}{f}\n"),
        }
    };
    let mut text = String::from("# generated\n");
    for _ in 0..3 {
        text.push_str(&rule(&mut rng));
    }
    for user in &USERS[..5] {
        text.push_str(&format!("\nuser {user}\n"));
        for _ in 0..rng.next(5) {
            text.push_str(&rule(&mut rng));
        }
    }
    text.push_str(&format!("\nuser {FEEDER}\ntopic write #\n\n"));
    text.push_str("pattern readwrite users/%u/#\npattern deny users/%u/secret\npattern read dev/%c/+\n");
    text.push_str("pattern write dev/%c/up\npattern read end/%c\n");
    text
}

/// Publish (`true`) or delivery decisions of one principal, per topic.
type Decisions = Vec<(String, String, bool, bool)>;

fn principal_connect(who: Option<&str>, client_id: &str) -> testkit::Connect {
    let pw = who.map(password);
    credentials(5, client_id, who, pw.as_deref().map(str::as_bytes))
}

/// Every decision a broker makes for every principal on every topic: publish (PUBACK reason
/// 0x87 or not) and delivery (received from the feeder through a `#` subscription or not).
async fn decisions(addr: SocketAddr) -> Decisions {
    let topics = topics();
    let mut out = Vec::new();
    let principals: Vec<Option<&str>> = USERS.iter().map(|u| Some(*u)).chain([None]).collect();
    let mut feeder = RawClient::connected(addr, &principal_connect(Some(FEEDER), "c-feeder")).await;
    for who in principals {
        let client_id = format!("c-{}", who.unwrap_or("anon"));
        let mut client = RawClient::connected(addr, &principal_connect(who, &client_id)).await;
        assert_eq!(client.subscribe(1, &[("#", 0)]).await, [0], "acl_file never refuses a subscription");
        // Publish decisions, one QoS 1 message at a time.
        let mut published = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            let pkid = i as u16 + 10;
            client.publish(topic, b"p", 1, false, pkid).await;
            loop {
                match client.next(testkit::WAIT).await {
                    Next::Frame(f) if f.packet_type == testkit::PUBACK && f.pkid() == pkid => {
                        published.push(f.reason() != 0x87);
                        break;
                    }
                    // Its own messages coming back through `#`: not what is measured here.
                    Next::Frame(f) if f.packet_type == testkit::PUBLISH => {}
                    other => panic!("{client_id}: {topic}: expected PUBACK, got {other:?}"),
                }
            }
        }
        // Delivery decisions: the feeder publishes every topic, then this client's end marker.
        for topic in &topics {
            feeder.publish(topic, b"f", 0, false, 0).await;
        }
        let marker = format!("end/{client_id}");
        feeder.publish(&marker, b"end", 0, false, 0).await;
        let mut received = Vec::new();
        loop {
            match client.next(testkit::WAIT).await {
                Next::Frame(f) if f.packet_type == testkit::PUBLISH => {
                    let publish = f.publish(true);
                    if publish.topic == marker {
                        break;
                    }
                    if &publish.payload[..] == b"f" {
                        received.push(publish.topic);
                    }
                }
                other => panic!("{client_id}: waiting for {marker}: {other:?}"),
            }
        }
        for (topic, publish) in topics.iter().zip(published) {
            out.push((client_id.clone(), topic.clone(), publish, received.contains(topic)));
        }
    }
    out
}

fn write_deployment(dir: &Path, seed: u64) -> std::path::PathBuf {
    let policy = HashPolicy::default();
    let mut passwords = String::new();
    for user in USERS.iter().chain([&FEEDER]) {
        let hash = PasswordHash::new(password(user).as_bytes(), policy).unwrap();
        passwords.push_str(&format!("{user}:{}\n", hash.encode()));
    }
    std::fs::write(dir.join("passwords"), passwords).unwrap();
    std::fs::write(dir.join("acls"), acl_file(seed)).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 1883\nallow_anonymous true\npassword_file {}\nacl_file {}\n",
            dir.join("passwords").display(),
            dir.join("acls").display()
        ),
    )
    .unwrap();
    conf
}

#[tokio::test]
async fn migrated_deployments_decide_as_mosquitto_did() {
    let Some(installed) = mosquitto_21("migrated_deployments_decide_as_mosquitto_did") else { return };
    for seed in [0x5eed_2026, 7, 1_000_003] {
        migrated_deployment_decides_as_mosquitto_did(&installed, seed).await;
    }
}

/// One generated deployment, converted, then the decisions of the three brokers compared.
async fn migrated_deployment_decides_as_mosquitto_did(installed: &dynsec_tests::mosquitto::Installation, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_deployment(dir.path(), seed);
    let converted = dir.path().join("dynamic-security.json");
    let new_conf = dir.path().join("mosquitto-dynsec.conf");
    let run = Command::new(env!("CARGO_BIN_EXE_dynsec-ctrl-under-test"))
        .args(["dynsec", "migrate", "--conf"])
        .arg(&conf)
        .arg("--write-conf")
        .arg(&new_conf)
        .arg("--dynsec-lib")
        .arg(dynsec_plugin())
        .arg(&converted)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{report}{}", String::from_utf8_lossy(&run.stderr));
    assert!(report.contains("Everything was converted."), "{report}");
    let new_conf = std::fs::read_to_string(&new_conf).unwrap();
    assert!(!new_conf.contains("acl_file") && !new_conf.contains("password_file"), "{new_conf}");
    assert!(new_conf.contains(&format!("plugin_opt_config_file {}\n", converted.display())), "{new_conf}");

    // mosquitto 2.0.11 on the original files.
    let lines = [
        "allow_anonymous true".to_owned(),
        format!("password_file {}", dir.path().join("passwords").display()),
        format!("acl_file {}", dir.path().join("acls").display()),
    ];
    let theirs = {
        let run = tempfile::tempdir().unwrap();
        let mosquitto = Mosquitto::start(run.path(), &lines);
        decisions(SocketAddr::from(([127, 0, 0, 1], mosquitto.port()))).await
    };
    // dynsec-broker on the rewritten mosquitto.conf (its listener on an ephemeral port) and a
    // copy of the converted file (the broker may rewrite it).
    let ours = {
        let run = tempfile::tempdir().unwrap();
        let copy = run.path().join("dynamic-security.json");
        std::fs::copy(&converted, &copy).unwrap();
        let config = new_conf
            .replace("listener 1883\n", "listener 0 127.0.0.1\nlog_type all\ngate_login_throttle false\n")
            .replace(&converted.display().to_string(), &copy.display().to_string());
        let broker = BrokerProcess::start_in(
            Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
            run.path(),
            &config,
            &[],
        );
        decisions(broker.addr()).await
    };
    assert!(theirs.len() >= 200, "only {} cases", theirs.len());
    let differing: Vec<_> = ours.iter().zip(&theirs).filter(|(a, b)| a != b).collect();
    assert!(
        differing.is_empty(),
        "seed {seed}: {} of {} cases differ (ours, mosquitto 2.0.11):\n{differing:#?}\n{}",
        differing.len(),
        theirs.len(),
        acl_file(seed)
    );
    // Not vacuous: mosquitto allowed and refused both kinds of access.
    for kind in [2, 3] {
        let allowed = theirs.iter().filter(|c| if kind == 2 { c.2 } else { c.3 }).count();
        assert!(allowed > 0 && allowed < theirs.len(), "access {kind}: {allowed} of {}", theirs.len());
    }

    // mosquitto 2.1.2 loads the converted file and decides the same.
    let run = tempfile::tempdir().unwrap();
    let copy = run.path().join("dynamic-security.json");
    std::fs::copy(&converted, &copy).unwrap();
    let mosquitto = Mosquitto::start_installed(
        Some(installed),
        run.path(),
        &[
            "allow_anonymous true".to_owned(),
            format!("plugin {}", installed.dynsec_plugin().display()),
            format!("plugin_opt_config_file {}", copy.display()),
        ],
    );
    let theirs_21 = decisions(SocketAddr::from(([127, 0, 0, 1], mosquitto.port()))).await;
    let differing: Vec<_> = theirs_21.iter().zip(&theirs).filter(|(a, b)| a != b).collect();
    assert!(
        differing.is_empty(),
        "seed {seed}: {} cases differ (2.1.2 on the converted file, 2.0.11):\n{differing:#?}",
        differing.len()
    );
}
