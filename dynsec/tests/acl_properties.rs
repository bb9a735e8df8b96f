//! Property tests: the compiled ACL tries agree with the literal reference evaluator of compat
//! §3.3–§3.4 on random models, principals, client ids, topics and filters; and `acl::explain`
//! decides exactly as the ACL check does and names the rule the reference finds.
// A test that cannot go on should stop: unwrapping is how it says so.
#![allow(clippy::unwrap_used)]

use dynsec::acl::{AccessKind, CompiledAcl, DecidedBy, Decision, PrincipalKey, explain, reference};
use dynsec::model::{Acl, AclType, Client, DefaultAccess, Group, Membership, Model, Mutation, Role, insert_membership};
use dynsec::topic::valid_filter;
use proptest::prelude::*;

/// Small alphabets so that random filters and topics actually collide.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "", "$SYS", "$share", "g", "c1"]).prop_map(str::to_owned),
        2 => Just("+".to_owned()),
        1 => Just("#".to_owned()),
        1 => prop::sample::select(vec!["%c", "%u"]).prop_map(str::to_owned),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn concrete_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$SYS", "c1", "u1", "g"]), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

fn requested_filter() -> impl Strategy<Value = String> {
    filter().prop_filter("valid subscription filter", |f| valid_filter(f) && !f.contains('%'))
}

fn acl_type() -> impl Strategy<Value = AclType> {
    prop::sample::select(AclType::ALL.to_vec())
}

fn role(name: &'static str) -> impl Strategy<Value = Role> {
    // One role in four forbids wildcard subscriptions (mosquitto 2.1's `allowwildcardsubs`).
    (prop::collection::vec((acl_type(), filter(), -3i32..3, any::<bool>()), 0..12), prop::bool::weighted(0.75))
        .prop_map(move |(acls, allow_wildcard_subs)| {
            let mut role = Role { allow_wildcard_subs, ..Role::new(name) };
            for (t, topic, priority, allow) in acls {
                role.insert_acl(t, Acl { topic, priority, allow });
            }
            role
        })
}

const ROLES: [&str; 4] = ["r0", "r1", "r2", "r3"];

fn memberships(names: &'static [&'static str]) -> impl Strategy<Value = Vec<Membership>> {
    prop::collection::vec((prop::sample::select(names.to_vec()), -2i32..2), 0..4).prop_map(|picks| {
        let mut list = Vec::new();
        for (name, priority) in picks {
            insert_membership(&mut list, Membership { name: name.to_owned(), priority });
        }
        list
    })
}

fn model() -> impl Strategy<Value = Model> {
    (
        (role("r0"), role("r1"), role("r2"), role("r3")),
        memberships(&ROLES),
        memberships(&ROLES),
        memberships(&ROLES),
        memberships(&["g0", "g1"]),
        any::<[bool; 4]>(),
        any::<bool>(),
    )
        .prop_map(|(roles, client_roles, g0_roles, g1_roles, client_groups, defaults, anon)| {
            let mut model = Model::default();
            for role in [roles.0, roles.1, roles.2, roles.3] {
                model.apply(Mutation::PutRole(role));
            }
            model.apply(Mutation::PutClient(Client { roles: client_roles, ..Client::new("u1") }));
            model.apply(Mutation::PutGroup(Group { roles: g0_roles, ..Group::new("g0") }));
            model.apply(Mutation::PutGroup(Group { roles: g1_roles, ..Group::new("g1") }));
            for m in client_groups {
                model.apply(Mutation::SetMembership {
                    group: m.name,
                    username: "u1".into(),
                    priority: Some(m.priority),
                });
            }
            let [a, b, c, d] = defaults;
            model.apply(Mutation::SetDefaultAccess(DefaultAccess {
                publish_client_send: a,
                publish_client_receive: b,
                subscribe: c,
                unsubscribe: d,
            }));
            if anon {
                model.apply(Mutation::SetAnonymousGroup(Some("g1".into())));
            }
            model
        })
}

fn principal() -> impl Strategy<Value = PrincipalKey> {
    prop_oneof![
        3 => Just(PrincipalKey::User("u1".into())),
        1 => Just(PrincipalKey::User("stranger".into())),
        1 => Just(PrincipalKey::Anonymous),
    ]
}

fn client_id() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["c1", "a", "", "x/y", "+", "#", "$SYS"]).prop_map(str::to_owned))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn compiled_publish_checks_agree_with_reference(
        model in model(), key in principal(), topic in concrete_topic(), cid in client_id(), receive in any::<bool>()
    ) {
        let kind = if receive { AccessKind::Receive } else { AccessKind::Publish };
        let compiled = CompiledAcl::compile(&model, &key);
        prop_assert_eq!(
            compiled.check(kind, &topic, cid.as_deref()),
            reference::check(&model, &key, kind, &topic, cid.as_deref())
        );
    }

    #[test]
    fn compiled_subscribe_checks_agree_with_reference(
        model in model(), key in principal(), requested in requested_filter(), cid in client_id(), unsub in any::<bool>()
    ) {
        let kind = if unsub { AccessKind::Unsubscribe } else { AccessKind::Subscribe };
        let compiled = CompiledAcl::compile(&model, &key);
        prop_assert_eq!(
            compiled.check(kind, &requested, cid.as_deref()),
            reference::check(&model, &key, kind, &requested, cid.as_deref())
        );
    }
}

fn any_kind() -> impl Strategy<Value = AccessKind> {
    prop::sample::select(vec![AccessKind::Publish, AccessKind::Receive, AccessKind::Subscribe, AccessKind::Unsubscribe])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// Explain's decision is the ACL check's (both the compiled check and the engine's handle),
    /// and the rule it names is the one the literal evaluator stops at.
    #[test]
    fn explain_decides_as_the_acl_check_and_names_the_deciding_rule(
        model in model(), key in principal(), topic in concrete_topic(), requested in requested_filter(),
        cid in client_id(), kind in any_kind()
    ) {
        let target = if matches!(kind, AccessKind::Publish | AccessKind::Receive) { topic } else { requested };
        let explained = explain(&model, &key, kind, &target, cid.as_deref());
        let checked = CompiledAcl::compile(&model, &key).check(kind, &target, cid.as_deref());
        prop_assert_eq!(explained.decision, checked);
        let (reference_decision, reference_rule) = reference::explain(&model, &key, kind, &target, cid.as_deref());
        prop_assert_eq!(explained.decision, reference_decision);
        prop_assert_eq!(&explained.decided_by, &reference_rule);
        if let DecidedBy::Acl { allow, fail_closed, .. } = explained.decided_by {
            let expected = if allow && !fail_closed { Decision::Allow } else { Decision::Deny };
            prop_assert_eq!(explained.decision, expected);
        }
    }
}

/// ACL filters that do not start with `$` and whose first level is not `+` or `#` (which 2.0's
/// subscribe rule lets cover `$` filters): literal or `%c`/`%u` first, anything after.
fn filter_without_dollar_reach() -> impl Strategy<Value = String> {
    (prop::sample::select(vec!["%c", "%u", "a", "c1"]), prop::collection::vec(level(), 0..4)).prop_map(
        |(first, rest)| {
            let mut levels = vec![first.to_owned()];
            levels.extend(rest);
            levels.join("/")
        },
    )
}

/// A principal whose every ACL is such a filter, with all default access off.
fn model_without_dollar_rights() -> impl Strategy<Value = Model> {
    prop::collection::vec((acl_type(), filter_without_dollar_reach(), -3i32..3), 1..12).prop_map(|acls| {
        let mut role = Role::new("r0");
        for (t, topic, priority) in acls {
            role.insert_acl(t, Acl { topic, priority, allow: true });
        }
        let mut model = Model::default();
        model.apply(Mutation::PutRole(role));
        for name in ["u1", "$SYS", "$CONTROL"] {
            let mut client = Client::new(name);
            insert_membership(&mut client.roles, Membership { name: "r0".into(), priority: 0 });
            model.apply(Mutation::PutClient(client));
        }
        model
    })
}

/// A `$` topic (`wildcards` false) or a valid `$` filter.
fn dollar_target(wildcards: bool) -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "", "c1", "$SYS", "$CONTROL", "+"]);
    (prop::sample::select(vec!["$SYS", "$CONTROL", "$share"]), prop::collection::vec(level, 0..4), any::<bool>())
        .prop_map(move |(first, rest, hash)| {
            let mut levels = vec![first];
            levels.extend(rest.into_iter().map(|l| if l == "+" && !wildcards { "x" } else { l }));
            if hash && wildcards {
                levels.push("#");
            }
            levels.join("/")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Whatever the client id and username (including ones starting with `$`), ACLs that neither
    /// start with `$` nor with a wildcard grant nothing on a `$` topic or filter.
    #[test]
    fn no_dollar_access_without_a_dollar_acl(
        model in model_without_dollar_rights(),
        user in prop::sample::select(vec!["u1", "$SYS", "$CONTROL"]),
        cid in prop::option::of(prop::sample::select(vec!["$SYS", "$CONTROL", "c1", "$SYS/x"]).prop_map(str::to_owned)),
        topic in dollar_target(false),
        filter in dollar_target(true),
        kind in prop::sample::select(vec![AccessKind::Publish, AccessKind::Receive, AccessKind::Subscribe, AccessKind::Unsubscribe]),
    ) {
        let target = if matches!(kind, AccessKind::Publish | AccessKind::Receive) { topic } else { filter };
        let key = PrincipalKey::User(user.to_owned());
        let compiled = CompiledAcl::compile(&model, &key).check(kind, &target, cid.as_deref());
        let reference = reference::check(&model, &key, kind, &target, cid.as_deref());
        prop_assert_ne!(compiled, dynsec::acl::Decision::Allow, "compiled: {} {:?} {}", user, kind, target);
        prop_assert_ne!(reference, dynsec::acl::Decision::Allow, "reference: {} {:?} {}", user, kind, target);
    }
}

/// The reference matcher itself agrees with the plain topic matcher it is built on.
#[test]
fn filter_matching_reference_sanity() {
    use dynsec::topic::topic_matches_filter;
    assert!(topic_matches_filter("a/+/#", "a/b"));
    assert!(!topic_matches_filter("#", "$SYS/a"));
}
