//! `$SYS/broker/...` (issue 23): the same scenario run against dynsec-broker and mosquitto 2.0.11
//! with `sys_interval 1`, watched with the real `mosquitto_sub`: the same topic names (minus the
//! ones docs/known-differences.md lists as not published), the retain flag on what a new
//! subscription receives, counters that follow what clients did, the ACL applied, and nothing at
//! all with `sys_interval 0`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use dynsec_tests::twin::{BOTH, Client, Kind, Subscriber, Twin, WAIT, write_file};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test"))
}

/// Published by mosquitto 2.0.11 (a memory-tracking build) but not by us: the broker has no
/// allocator that counts its heap (docs/known-differences.md).
const NOT_PUBLISHED: [&str; 2] = ["$SYS/broker/heap/current", "$SYS/broker/heap/maximum"];

/// The topic and retain flag of a `-d` line `… received PUBLISH (d0, q0, r1, m0, 'topic', …`.
fn publish_line(line: &str) -> Option<(String, bool)> {
    let rest = line.split("received PUBLISH (").nth(1)?;
    let retain = rest.contains(", r1,");
    let topic = rest.split('\'').nth(1)?;
    Some((topic.to_owned(), retain))
}

/// What a `mosquitto_sub -d` saw: each topic's payloads and retain flags, in order.
struct Watch {
    subscriber: Subscriber,
    seen: BTreeMap<String, Vec<(String, bool)>>,
}

impl Watch {
    fn new(client: &Client, filters: &[&str]) -> Watch {
        Watch { subscriber: client.subscribe(filters), seen: BTreeMap::new() }
    }

    /// Reads messages until `done` holds; panics after [`WAIT`] with what was seen.
    fn until(&mut self, what: &str, done: impl Fn(&BTreeMap<String, Vec<(String, bool)>>) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.subscriber.next_matching(left, |line| line.contains("received PUBLISH")) else {
                panic!("never saw {what}: {:#?}", self.seen);
            };
            let (topic, retain) = publish_line(&line).expect("a PUBLISH line names its topic");
            let payload = self.subscriber.next_payload();
            self.seen.entry(topic).or_default().push((payload, retain));
        }
    }

    fn topics(&self) -> BTreeSet<String> {
        self.seen.keys().cloned().collect()
    }
}

fn has_value(seen: &BTreeMap<String, Vec<(String, bool)>>, topic: &str, value: &str) -> bool {
    seen.get(topic).is_some_and(|values| values.iter().any(|(payload, _)| payload == value))
}

fn named(port: u16, username: &str) -> Client {
    let mut client = Client::new(port);
    client.username = Some(username.to_owned());
    client
}

/// `watcher` may read `$SYS`; `nosys` may read everything else (`#` does not cover `$` topics).
fn acl(dir: &Path) -> String {
    write_file(dir, "acl", "user watcher\ntopic read $SYS/#\ntopic readwrite data/#\n\nuser nosys\ntopic readwrite #\n")
}

/// Runs the scenario on one broker and returns the topic names the watcher saw.
fn scenario(kind: Kind) -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let template =
        format!("listener {{PORT0}} 127.0.0.1\nallow_anonymous true\nsys_interval 1\nacl_file {}\n", acl(dir.path()));
    let broker = Twin::start(kind, binary(), dir.path(), &template, 1);
    let port = broker.port(0);

    let mut watcher = Watch::new(&named(port, "watcher"), &["$SYS/#"]);
    // What a new subscription gets: every value, retained, the version first among them.
    watcher.until("the version", |seen| seen.contains_key("$SYS/broker/version"));
    assert!(watcher.seen["$SYS/broker/version"][0].1, "{kind:?}: the version is a retained message");

    // Another client connects (and is denied `$SYS/#`, but not `#`): two clients connected.
    let nosys = named(port, "nosys").subscribe(&["$SYS/#", "#"]);
    watcher.until("clients/connected 2", |seen| has_value(seen, "$SYS/broker/clients/connected", "2"));
    watcher.until("clients/maximum", |seen| seen.contains_key("$SYS/broker/clients/maximum"));

    // Three publishes are counted as three PUBLISH packets received.
    let publisher = named(port, "nosys");
    for n in 0..3 {
        assert_eq!(publisher.publish("data/x", &format!("m{n}")), dynsec_tests::twin::Connect::Connack(0));
    }
    watcher.until("publish/messages/received 3", |seen| has_value(seen, "$SYS/broker/publish/messages/received", "3"));
    assert!(watcher.seen["$SYS/broker/messages/received"].len() >= 2, "{kind:?}: messages/received moved");
    assert!(!watcher.seen["$SYS/broker/uptime"][1..].iter().any(|(_, retain)| *retain), "{kind:?}: updates are live");

    // `nosys` got the data messages and no `$SYS` message.
    for n in 0..3 {
        assert_eq!(nosys.next_payload(), format!("m{n}"));
    }
    assert_eq!(publisher.publish("data/end", "end"), dynsec_tests::twin::Connect::Connack(0));
    assert_eq!(nosys.next_payload(), "end");
    let leaked = nosys.next_matching(Duration::ZERO, |line| line.contains("$SYS"));
    assert_eq!(leaked, None, "{kind:?}: a client denied $SYS/# received a $SYS message");
    watcher.topics()
}

#[test]
fn sys_topics_match_mosquitto() {
    let mut ours = scenario(Kind::Ours);
    let mut theirs = scenario(Kind::Mosquitto);
    for topic in NOT_PUBLISHED {
        theirs.remove(topic);
        ours.remove(topic);
    }
    assert_eq!(ours, theirs, "the $SYS topic names differ from mosquitto 2.0.11's");
    assert!(ours.len() > 40, "{ours:?}");
}

#[test]
fn sys_interval_0_publishes_nothing() {
    for kind in BOTH {
        let dir = tempfile::tempdir().expect("temp dir");
        let template = "listener {PORT0} 127.0.0.1\nallow_anonymous true\nsys_interval 0\n";
        let broker = Twin::start(kind, binary(), dir.path(), template, 1);
        let port = broker.port(0);
        let mut watcher = Watch::new(&Client::new(port), &["$SYS/#", "data/#"]);
        // Markers a little more than one (would-be) interval apart, so that a periodic refresh,
        // if there were one, would come before the last of them.
        for n in 0..3 {
            assert_eq!(Client::new(port).publish("data/x", &format!("m{n}")), dynsec_tests::twin::Connect::Connack(0));
            watcher.until("the marker", |seen| has_value(seen, "data/x", &format!("m{n}")));
            std::thread::sleep(Duration::from_millis(1100));
        }
        assert_eq!(watcher.topics(), BTreeSet::from(["data/x".to_string()]), "{kind:?}");
    }
}
