//! Stored password hashes with unbounded cost parameters (issue 15, item 8) end to end: a
//! `password_file` line `$7$4294967295$…` used to load, and two wrong-password CONNECTs for that
//! user then occupied the broker's password verifiers for hours, so a valid user could not log in.
//! Now the line is dropped at load with a warning naming the file, the line and the limit
//! (docs/store.md, "Limits"), the user is refused at once without hashing, and everyone else logs
//! in as usual.

use std::path::Path;

use dynsec::password::{HashPolicy, PasswordHash};
use dynsec_tests::broker::BrokerProcess;
use dynsec_tests::dynsec_target::{Login, credentials, login, not_authorised};

#[tokio::test]
async fn password_file_hashes_beyond_the_limits_are_dropped_and_cost_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwd = dir.path().join("passwd");
    let good = PasswordHash::new(b"alice-pw", HashPolicy::default()).unwrap().encode();
    std::fs::write(
        &passwd,
        format!(
            "alice:{good}\nslow:$7$4294967295$AAAAAAAAAAAAAAAA$AAAA\n\
             greedy:$argon2id$v=19$m=4194304,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(
        Path::new(env!("CARGO_BIN_EXE_dynsec-broker-under-test")),
        &format!("allow_anonymous false\npassword_file {}\ngate_login_throttle false\n", passwd.display()),
    );
    let log = broker.log();
    let shown = passwd.display();
    for line in [
        format!(
            "{shown}:2: invalid password hash for user slow (PBKDF2 iterations 4294967295 above the limit of 2000000), entry removed"
        ),
        format!(
            "{shown}:3: invalid password hash for user greedy (argon2id memory m=4194304 KiB above the limit of 262144), entry removed"
        ),
    ] {
        assert!(log.contains(&line), "missing warning {line:?} in:\n{log}");
    }

    // Attempts on the dropped users are refused like unknown users (no hash is computed, so they
    // hold no verifier), and a valid user still gets in.
    for (user, v) in [("slow", 4), ("slow", 5), ("greedy", 5), ("slow", 5)] {
        let connect = credentials(v, &format!("{user}-{v}"), Some(user), Some(b"wrong".as_slice()));
        assert_eq!(login(broker.addr(), &connect).await.0, not_authorised(v), "{user} v{v}");
    }
    let alice = credentials(5, "alice-1", Some("alice"), Some(b"alice-pw".as_slice()));
    assert_eq!(login(broker.addr(), &alice).await.0, Login::Connack(0));
}
