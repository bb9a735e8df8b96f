//! One `$CONTROL` message carrying N `addRoleACL` commands for one role, through the command
//! processor and the durable store, exactly as a broker runs it. For measuring that the cost of a
//! batch is linear in its size (docs/store.md, "Limits"):
//!
//!     cargo build --release -p dynsec --example acl_batch
//!     /usr/bin/time -v target/release/examples/acl_batch 3000 [HOLDERS]
//!
//! HOLDERS (default 0) clients hold the role, so every edit also finds whom to kick.
//! Prints the payload size, the time the message took, the bytes it appended to the journal and
//! the first reply that is an error (for instance once N exceeds the ACLs-per-role limit).

use std::time::Instant;

use dynsec::commands::Admin;
use dynsec::store::Store;
use dynsec::{Dynsec, Options};

fn main() {
    let edits: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(3000);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dynamic-security.json");
    let (engine, _) = Dynsec::open_or_init(&file, Options::default(), "admin", || "admin-password".into())
        .expect("open the configuration");
    let holders: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut setup = String::from(r#"{"commands":[{"command":"createRole","rolename":"bulk"}"#);
    for i in 0..holders {
        setup.push_str(&format!(
            r#",{{"command":"createClient","username":"holder-{i}","roles":[{{"rolename":"bulk"}}]}}"#
        ));
    }
    setup.push_str("]}");
    engine.handle_control(setup.as_bytes(), Admin::default());
    let journal = Store::journal_path_for(&file);
    let before = std::fs::metadata(&journal).map_or(0, |m| m.len());

    let mut payload = String::from(r#"{"commands":["#);
    for i in 0..edits {
        if i > 0 {
            payload.push(',');
        }
        payload.push_str(&format!(
            r#"{{"command":"addRoleACL","rolename":"bulk","acltype":"publishClientSend","topic":"devices/{i:06}/telemetry","allow":true}}"#
        ));
    }
    payload.push_str("]}");

    let started = Instant::now();
    let result = engine.handle_control(payload.as_bytes(), Admin::default());
    let elapsed = started.elapsed();
    let after = std::fs::metadata(&journal).map_or(0, |m| m.len());
    let reply = String::from_utf8_lossy(&result.response);
    let first_error = reply.find(r#""error""#).map(|at| &reply[at..reply.len().min(at + 120)]);
    println!(
        "{edits} addRoleACL in one message: payload {} KiB, {:.3} s, journal +{} bytes, role holds {} ACLs, first error: {}",
        payload.len() / 1024,
        elapsed.as_secs_f64(),
        after.saturating_sub(before),
        engine.with_model(|m| m.roles["bulk"].acl_count()),
        first_error.unwrap_or("none"),
    );
}
