//! The one security setup both dynsec brokers get: a `dynamic-security.json` built with the
//! `dynsec` crate's own model and writer (PBKDF2-SHA512 hashes at 1000 iterations in mosquitto
//! 2.0's `password`/`salt`/`iterations` layout, which mosquitto 2.0.11 loads), written once and
//! copied into each broker's directory.
//!
//! Who is in it and why:
//! - `admin` (role `admin`, as `dynsec init` makes it): sends the `$CONTROL` commands.
//! - `bench-100`: the throughput clients; role `acl-100` holds exactly 100 ACLs.
//! - `bench-10k`: the same clients with 10,000 ACLs spread over 5 client roles and 5 groups.
//! - `storm-<round>-<n>`: one distinct user per connect-storm client and round, so that every
//!   CONNECT costs a real password verification (our broker caches successful verifications).
//! - `idle`: the 10,000 idle connections of the revocation and memory scenarios.
//! - `victim`: the client whose rights are revoked (role `victim-role`).
//!
//! Every allowing ACL sits at the lowest priority of the last role evaluated, after the
//! non-matching ones, so a broker that scans ACLs in order (mosquitto) scans them all: that is
//! what "100 ACLs" or "10,000 ACLs" costs it. Non-matching ACLs share the `bench/` prefix so a
//! match attempt is not decided by the first byte. Default access denies everything.

use std::path::Path;

use dynsec::model::{Acl, AclType, Client, DefaultAccess, Group, Membership, Model, Mutation, Role};
use dynsec::password::{HashPolicy, PasswordHash};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "bench-admin-pw";
pub const USER_100: &str = "bench-100";
pub const USER_10K: &str = "bench-10k";
pub const IDLE_USER: &str = "idle";
pub const VICTIM_USER: &str = "victim";
pub const VICTIM_ROLE: &str = "victim-role";
/// The topic the victim may publish to until its ACL is removed.
pub const VICTIM_TOPIC: &str = "victim/topic";
/// Every benchmark message topic is below this prefix.
pub const ALLOWED_FILTER: &str = "bench/#";
/// PBKDF2-SHA512 iterations of every password in the file (mosquitto 2.0 verifies with the
/// file's count, so both brokers pay the same per verification).
pub const ITERATIONS: u32 = 1000;

pub fn password_of(username: &str) -> String {
    format!("pw-{username}")
}

/// (username, password) of `username` for a broker that authenticates (`auth`), else `None`.
pub fn credentials(auth: bool, username: &str) -> Option<(String, String)> {
    auth.then(|| (username.to_owned(), password_of(username)))
}

pub fn storm_user(round: usize, index: usize) -> String {
    format!("storm-{round}-{index}")
}

/// ACLs allowing the benchmark topics, at the lowest priority.
fn allow_bench(role: &mut Role) {
    let allow = |topic: &str| Acl { topic: topic.to_owned(), priority: -1000, allow: true };
    role.insert_acl(AclType::PublishClientSend, allow(ALLOWED_FILTER));
    role.insert_acl(AclType::PublishClientReceive, allow(ALLOWED_FILTER));
    role.insert_acl(AclType::SubscribePattern, allow(ALLOWED_FILTER));
    role.insert_acl(AclType::UnsubscribePattern, allow(ALLOWED_FILTER));
}

/// A role with `count` ACLs: non-matching send/receive ACLs, then (if `allowing`) the four
/// allowing ones, which count towards `count`.
fn role_with_acls(name: &str, count: usize, allowing: bool) -> Role {
    let mut role = Role::new(name);
    let filler = if allowing { count - 4 } else { count };
    for i in 0..filler {
        // Four levels: never matches a three-level `bench/...` benchmark topic.
        let topic = format!("bench/{name}-dev{i}/+/up");
        let acl_type = if i % 2 == 0 { AclType::PublishClientSend } else { AclType::PublishClientReceive };
        role.insert_acl(acl_type, Acl { topic, priority: 0, allow: true });
    }
    if allowing {
        allow_bench(&mut role);
    }
    assert_eq!(role.acl_count(), count);
    role
}

fn client(username: &str, hash: PasswordHash, roles: &[&str]) -> Client {
    Client {
        password: Some(hash),
        roles: roles.iter().map(|r| Membership { name: (*r).to_owned(), priority: -1 }).collect(),
        ..Client::new(username)
    }
}

fn hash(password: &str) -> PasswordHash {
    PasswordHash::new(password.as_bytes(), HashPolicy::Pbkdf2Sha512 { iterations: ITERATIONS })
        .expect("random bytes for a salt")
}

/// Hashes every password on all cores (thousands of PBKDF2 runs).
fn hash_all(usernames: &[String]) -> Vec<PasswordHash> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = usernames.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = usernames
            .chunks(chunk)
            .map(|names| scope.spawn(move || names.iter().map(|u| hash(&password_of(u))).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("hashing thread")).collect()
    })
}

/// The full benchmark configuration (`storm_users` per round, `storm_rounds` rounds).
pub fn full_model(storm_users: usize, storm_rounds: usize) -> Model {
    let mut model = minimal_model();
    model.apply(Mutation::PutRole(role_with_acls("acl-100", 100, true)));

    // 10,000 ACLs: 5 client roles and 5 groups of one role each, 1000 ACLs per role; the
    // allowing ACLs are in the role of the last group evaluated.
    let mut client_roles = Vec::new();
    for i in 0..5 {
        let name = format!("acl-10k-client-{i}");
        model.apply(Mutation::PutRole(role_with_acls(&name, 1000, false)));
        client_roles.push(name);
    }
    let mut groups = Vec::new();
    for i in 0..5 {
        let role = format!("acl-10k-group-{i}");
        model.apply(Mutation::PutRole(role_with_acls(&role, 1000, i == 4)));
        let group = format!("group-10k-{i}");
        model.apply(Mutation::PutGroup(Group {
            roles: vec![Membership { name: role, priority: -1 }],
            ..Group::new(&group)
        }));
        groups.push(group);
    }

    let mut victim_role = Role::new(VICTIM_ROLE);
    victim_role.insert_acl(AclType::PublishClientSend, Acl { topic: VICTIM_TOPIC.into(), priority: 0, allow: true });
    model.apply(Mutation::PutRole(victim_role));

    let mut usernames = vec![USER_100.to_owned(), USER_10K.to_owned(), IDLE_USER.to_owned(), VICTIM_USER.to_owned()];
    for round in 0..storm_rounds {
        usernames.extend((0..storm_users).map(|i| storm_user(round, i)));
    }
    let hashes = hash_all(&usernames);
    for (username, hash) in usernames.iter().zip(hashes) {
        let roles: Vec<&str> = match username.as_str() {
            USER_100 => vec!["acl-100"],
            USER_10K => client_roles.iter().map(String::as_str).collect(),
            VICTIM_USER => vec![VICTIM_ROLE],
            _ => vec![],
        };
        model.apply(Mutation::PutClient(client(username, hash, &roles)));
    }
    for (priority, group) in groups.iter().enumerate() {
        // Higher priority first: group 4 (with the allowing ACLs) is evaluated last.
        model.apply(Mutation::SetMembership {
            group: group.clone(),
            username: USER_10K.to_owned(),
            priority: Some(10 - priority as i32),
        });
    }
    model
}

/// The cluster scenarios' configuration (`crate::cluster`): the admin, `bench-100` with its 100
/// ACLs and the victim, and nothing else. A cluster's first node puts its whole seed into the
/// log as one NATS message, which must stay below nats-server's 1 MB `max_payload`: the
/// full model's thousands of storm users would not (docs/cluster.md, "Snapshots").
pub fn cluster_model() -> Model {
    let mut model = minimal_model();
    model.apply(Mutation::PutRole(role_with_acls("acl-100", 100, true)));
    let mut victim_role = Role::new(VICTIM_ROLE);
    victim_role.insert_acl(AclType::PublishClientSend, Acl { topic: VICTIM_TOPIC.into(), priority: 0, allow: true });
    model.apply(Mutation::PutRole(victim_role));
    let usernames = [USER_100.to_owned(), VICTIM_USER.to_owned()];
    for (username, hash) in usernames.iter().zip(hash_all(&usernames)) {
        let role = if username == USER_100 { "acl-100" } else { VICTIM_ROLE };
        model.apply(Mutation::PutClient(client(username, hash, &[role])));
    }
    model
}

/// Just the admin client, default access denying everything (the provisioning scenario's start).
pub fn minimal_model() -> Model {
    let mut model = dynsec::init::init_model(ADMIN_USER, hash(ADMIN_PASSWORD));
    model.apply(Mutation::SetDefaultAccess(DefaultAccess::default()));
    model
}

pub fn write(model: &Model, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, dynsec::file::save(model))
}

/// ACLs the 10k principal holds (roles reached directly and through groups).
pub fn acl_count(model: &Model, username: &str) -> usize {
    let key = dynsec::acl::PrincipalKey::for_username(Some(username));
    dynsec::acl::CompiledAcl::compile(model, &key).acl_count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynsec::acl::{AccessKind, CompiledAcl, Decision, PrincipalKey};

    #[test]
    fn the_principals_hold_the_promised_acls_and_may_use_the_bench_topics() {
        let model = full_model(2, 1);
        assert_eq!(acl_count(&model, USER_100), 100);
        assert_eq!(acl_count(&model, USER_10K), 10_000);
        for user in [USER_100, USER_10K] {
            let acl = CompiledAcl::compile(&model, &PrincipalKey::for_username(Some(user)));
            for kind in [AccessKind::Publish, AccessKind::Receive, AccessKind::Subscribe] {
                assert_eq!(acl.check(kind, "bench/load/x", Some("c")), Decision::Allow, "{user} {kind:?}");
            }
            assert_ne!(acl.check(AccessKind::Publish, "other/x", Some("c")), Decision::Allow);
        }
        assert!(model.clients.contains_key(&storm_user(0, 1)));
    }
}
