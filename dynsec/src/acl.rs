//! ACL evaluation (docs/compatibility.md §3.3–§3.4), compiled per role walk (shared by the
//! principals that walk the same roles, [`RoleRules`]) so that a check costs the same with ten
//! ACLs or ten thousand.
//!
//! mosquitto walks the principal's roles in order (client roles by priority, then each group by
//! the client's group priority and its roles by priority) and, inside each role, the ACLs of the
//! relevant type by priority; the first matching ACL decides. That makes every ACL's position a
//! total order, so the answer is "the allow flag of the first-ordered ACL that matches". We
//! compile the ACLs of a principal's roles into topic tries whose nodes keep the smallest order landing
//! there; a check walks the trie along the topic (literal, `+`, `#` and `%c`/`%u` branches) and
//! keeps the best candidate. Subscribe checks first look for a byte-identical Literal ACL in a
//! hash map — within a role it wins over any Pattern ACL regardless of priority — which the order
//! key encodes as (role visit, literal-before-pattern, position).
//!
//! `%c`/`%u` (mosquitto 2.1 semantics, not 2.0's literal text): a level that is exactly `%c` or
//! `%u` in any non-literal ACL matches the connection's client id / username. An absent or empty
//! value makes such ACLs not match. A value containing `+`, `#` or `/` fails closed: the first
//! such ACL in evaluation order denies (a missing value wins over an unsafe one). A placeholder
//! as the *first* level never matches a topic or filter starting with `$`, whatever the value:
//! mosquitto 2.1 applies its `$` rule to the ACL before substitution, so `%c/#` does not become
//! `$CONTROL/#` for a client that calls itself `$CONTROL` (2.0 has no substitution at all).
//!
//! `allowwildcardsubs` (mosquitto 2.1): when the walk reaches a role that forbids wildcard
//! subscriptions, a subscribe filter containing `+` or `#` anywhere is denied there, before that
//! role's own ACLs; roles visited earlier still decide first.
//!
//! [`explain`] answers "which rule decided?" with the very evaluation [`CompiledAcl::check`]
//! runs: the deciding trie entry is decoded back into its role, ACL type and position, so an
//! explanation cannot disagree with the check it explains.
//!
//! `reference` (test support) is the algorithm written out literally, iterating every ACL; tests
//! hold the compiled form to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{AclType, DefaultAccess, Model, Role};
use crate::topic::{split_hash, valid_filter};

/// The four access kinds a broker asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// PUBLISH from the client (`publishClientSend`).
    Publish,
    /// Delivery to the client (`publishClientReceive`).
    Receive,
    /// SUBSCRIBE (`subscribeLiteral` then `subscribePattern`).
    Subscribe,
    /// UNSUBSCRIBE (`unsubscribeLiteral` then `unsubscribePattern`).
    Unsubscribe,
}

impl AccessKind {
    fn default_index(self) -> usize {
        match self {
            AccessKind::Publish => 0,
            AccessKind::Receive => 1,
            AccessKind::Subscribe => 2,
            AccessKind::Unsubscribe => 3,
        }
    }
}

/// The plugin's answer. `Defer` means "no opinion": the chain then denies unless another source
/// allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    Defer,
}

/// Whose ACLs are evaluated: a username (even one dynsec does not know) or the anonymous client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKey {
    User(String),
    Anonymous,
}

impl PrincipalKey {
    pub fn for_username(username: Option<&str>) -> PrincipalKey {
        match username {
            Some(u) if !u.is_empty() => PrincipalKey::User(u.to_owned()),
            _ => PrincipalKey::Anonymous,
        }
    }
}

/// Roles in evaluation order, each once (a role visited again can never decide anything new).
pub fn role_walk<'m>(model: &'m Model, key: &PrincipalKey) -> Option<Vec<&'m Role>> {
    let mut names: Vec<&str> = Vec::new();
    match key {
        PrincipalKey::User(username) => {
            let client = model.clients.get(username)?;
            names.extend(client.roles.iter().map(|m| m.name.as_str()));
            for membership in &client.groups {
                if let Some(group) = model.groups.get(&membership.name) {
                    names.extend(group.roles.iter().map(|m| m.name.as_str()));
                }
            }
        }
        PrincipalKey::Anonymous => {
            if let Some(group) = model.anonymous_group.as_ref().and_then(|g| model.groups.get(g)) {
                names.extend(group.roles.iter().map(|m| m.name.as_str()));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    Some(names.into_iter().filter(|n| seen.insert(*n)).filter_map(|n| model.roles.get(n)).collect())
}

/// The substitution source of a `%c`/`%u` level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    ClientId,
    Username,
}

fn placeholder(level: &str) -> Option<Placeholder> {
    match level {
        "%c" => Some(Placeholder::ClientId),
        "%u" => Some(Placeholder::Username),
        _ => None,
    }
}

/// What a placeholder resolves to for one check.
#[derive(Clone, Copy)]
enum Substitution<'a> {
    /// Absent or empty: ACLs using the placeholder do not match.
    Missing,
    /// Contains `+`, `#` or `/`: the first ACL using the placeholder denies.
    Unsafe,
    Value(&'a str),
}

fn substitution(value: Option<&str>) -> Substitution<'_> {
    match value {
        None | Some("") => Substitution::Missing,
        Some(v) if v.contains(['+', '#', '/']) => Substitution::Unsafe,
        Some(v) => Substitution::Value(v),
    }
}

/// Position of an ACL in the evaluation order, with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    order: u64,
    allow: bool,
    /// A placeholder ACL denying because its value contains `+`, `#` or `/`.
    fail_closed: bool,
}

fn order_key(visit: usize, literal_phase: bool, position: usize) -> u64 {
    ((visit as u64) << 32) | (u64::from(!literal_phase) << 31) | (position as u64 & 0x7FFF_FFFF)
}

fn better(current: &mut Option<Entry>, candidate: Entry) {
    if current.is_none_or(|c| candidate.order < c.order) {
        *current = Some(candidate);
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    client_id: Option<Box<Node>>,
    username: Option<Box<Node>>,
    /// A filter ends exactly here.
    end: Option<Entry>,
    /// A filter ends here with a trailing `#` (covers this level and everything below).
    hash: Option<Entry>,
}

impl Node {
    fn child(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_default(),
            "%c" => self.client_id.get_or_insert_default(),
            "%u" => self.username.get_or_insert_default(),
            _ => self.children.entry(level.into()).or_default(),
        }
    }
}

/// Smallest order of the ACLs using placeholders, by which placeholders they use: where a
/// fail-closed deny lands. An ACL whose placeholder value is missing never matches (that wins over
/// failing closed), so ACLs using both are tracked apart.
#[derive(Debug, Default)]
struct PlaceholderOrders {
    client_id_only: Option<Entry>,
    username_only: Option<Entry>,
    both: Option<Entry>,
}

impl PlaceholderOrders {
    fn note(&mut self, levels: &[&str], entry: Entry) {
        let uses = |p| levels.iter().any(|l| placeholder(l) == Some(p));
        let slot = match (uses(Placeholder::ClientId), uses(Placeholder::Username)) {
            (true, true) => &mut self.both,
            (true, false) => &mut self.client_id_only,
            (false, true) => &mut self.username_only,
            (false, false) => return,
        };
        better(slot, Entry { allow: false, fail_closed: true, ..entry });
    }

    fn fail_closed(&self, client_id: Substitution, username: Substitution, best: &mut Option<Entry>) {
        let unsafe_c = matches!(client_id, Substitution::Unsafe);
        let unsafe_u = matches!(username, Substitution::Unsafe);
        let missing = matches!(client_id, Substitution::Missing) || matches!(username, Substitution::Missing);
        for (slot, applies) in [
            (self.client_id_only, unsafe_c),
            (self.username_only, unsafe_u),
            (self.both, (unsafe_c || unsafe_u) && !missing),
        ] {
            if let (Some(e), true) = (slot, applies) {
                better(best, e);
            }
        }
    }
}

/// Publish/receive ACLs: MQTT filters matched against concrete topics.
#[derive(Debug, Default)]
struct TopicRules {
    root: Node,
    placeholders: PlaceholderOrders,
}

impl TopicRules {
    fn insert(&mut self, filter: &str, entry: Entry) {
        // Filters mosquitto's matcher rejects (bad wildcards, empty) can never match.
        if filter.is_empty() || !valid_filter(filter) {
            return;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        self.placeholders.note(&levels, entry);
        let mut node = &mut self.root;
        for level in &levels {
            if *level == "#" {
                better(&mut node.hash, entry);
                return;
            }
            node = node.child(level);
        }
        better(&mut node.end, entry);
    }

    fn best(&self, topic: &str, client_id: Substitution, username: Substitution) -> Option<Entry> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut best = None;
        let dollar = topic.starts_with('$');
        walk_topic(&self.root, &levels, 0, dollar, client_id, username, &mut best);
        self.placeholders.fail_closed(client_id, username, &mut best);
        best
    }
}

fn walk_topic(
    node: &Node,
    levels: &[&str],
    depth: usize,
    dollar: bool,
    client_id: Substitution,
    username: Substitution,
    best: &mut Option<Entry>,
) {
    // A filter starting with a wildcard or a placeholder never matches a topic starting with '$'.
    let wildcards_allowed = !(depth == 0 && dollar);
    if wildcards_allowed && let Some(e) = node.hash {
        better(best, e);
    }
    let Some(level) = levels.get(depth) else {
        if let Some(e) = node.end {
            better(best, e);
        }
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk_topic(child, levels, depth + 1, dollar, client_id, username, best);
    }
    if !wildcards_allowed {
        return;
    }
    if let Some(child) = &node.plus {
        walk_topic(child, levels, depth + 1, dollar, client_id, username, best);
    }
    for (slot, value) in [(&node.client_id, client_id), (&node.username, username)] {
        if let (Some(child), Substitution::Value(v)) = (slot, value)
            && v == *level
        {
            walk_topic(child, levels, depth + 1, dollar, client_id, username, best);
        }
    }
}

/// Subscribe/unsubscribe ACLs: Literal by byte equality, Pattern by 2.0's filter-vs-filter rule.
#[derive(Debug, Default)]
struct FilterRules {
    literal: HashMap<Box<str>, Entry>,
    /// The pattern `#`, which covers every filter.
    universal: Option<Entry>,
    root: Node,
    placeholders: PlaceholderOrders,
}

impl FilterRules {
    fn insert_literal(&mut self, filter: &str, entry: Entry) {
        let slot = self.literal.entry(filter.into()).or_insert(entry);
        if entry.order < slot.order {
            *slot = entry;
        }
    }

    fn insert_pattern(&mut self, acl: &str, entry: Entry) {
        if acl == "#" {
            better(&mut self.universal, entry);
            return;
        }
        let (levels, hash) = split_hash(acl);
        self.placeholders.note(&levels, entry);
        let mut node = &mut self.root;
        for level in &levels {
            node = node.child(level);
        }
        better(if hash { &mut node.hash } else { &mut node.end }, entry);
    }

    fn best(&self, filter: &str, client_id: Substitution, username: Substitution) -> Option<Entry> {
        let mut best = self.literal.get(filter).copied();
        if let Some(e) = self.universal {
            better(&mut best, e);
        }
        let (levels, hash) = split_hash(filter);
        let dollar = filter.starts_with('$');
        walk_filter(&self.root, &levels, hash, 0, dollar, client_id, username, &mut best);
        self.placeholders.fail_closed(client_id, username, &mut best);
        best
    }
}

#[allow(clippy::too_many_arguments)]
fn walk_filter(
    node: &Node,
    levels: &[&str],
    requested_hash: bool,
    depth: usize,
    dollar: bool,
    client_id: Substitution,
    username: Substitution,
    best: &mut Option<Entry>,
) {
    if let Some(e) = node.hash {
        better(best, e);
    }
    let Some(level) = levels.get(depth) else {
        if !requested_hash && let Some(e) = node.end {
            better(best, e);
        }
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk_filter(child, levels, requested_hash, depth + 1, dollar, client_id, username, best);
    }
    // 2.0's filter-vs-filter rule lets `+` and `#` cover `$` filters (docs/compatibility.md §3.4); a placeholder
    // never stands for a first level starting with `$` (module documentation).
    if let Some(child) = &node.plus {
        walk_filter(child, levels, requested_hash, depth + 1, dollar, client_id, username, best);
    }
    if depth == 0 && dollar {
        return;
    }
    for (slot, value) in [(&node.client_id, client_id), (&node.username, username)] {
        if let (Some(child), Substitution::Value(v)) = (slot, value)
            && v == *level
        {
            walk_filter(child, levels, requested_hash, depth + 1, dollar, client_id, username, best);
        }
    }
}

/// One principal's ACLs, compiled: its username (what `%u` stands for) and the rules of its role
/// walk. Immutable: a change to the model compiles a new one.
#[derive(Debug)]
pub struct CompiledAcl {
    username: Option<String>,
    rules: Arc<RoleRules>,
}

/// The compiled rules of one role walk (the principal's roles in evaluation order). They do not
/// depend on who walks them (`%c` and `%u` are substituted at check time), so principals with
/// the same role walk can share them: a fleet with one user per device and one role for all
/// holds one copy (docs/benchmarks.md, "Per-user and per-subscription data").
#[derive(Debug)]
pub struct RoleRules {
    /// `false` for a username dynsec does not know: every check defers, defaults are not applied.
    known: bool,
    defaults: DefaultAccess,
    publish: TopicRules,
    receive: TopicRules,
    subscribe: FilterRules,
    unsubscribe: FilterRules,
    /// Visit index of the first role with `allowwildcardsubs` false, if any.
    wildcards_denied_from: Option<usize>,
    acl_count: usize,
}

impl CompiledAcl {
    pub fn compile(model: &Model, key: &PrincipalKey) -> CompiledAcl {
        CompiledAcl::with_rules(key, Arc::new(RoleRules::compile(model, key)))
    }

    /// `key`'s ACLs from rules compiled for the same role walk ([`walk_key`]).
    pub fn with_rules(key: &PrincipalKey, rules: Arc<RoleRules>) -> CompiledAcl {
        let username = match key {
            PrincipalKey::User(u) => Some(u.clone()),
            PrincipalKey::Anonymous => None,
        };
        CompiledAcl { username, rules }
    }

    /// The rules of the principal's role walk.
    pub fn rules(&self) -> &Arc<RoleRules> {
        &self.rules
    }
}

/// What identifies the rules of `key`'s role walk: its roles' names in evaluation order (`None`:
/// not a client). Under one model, principals with the same key have the same [`RoleRules`].
pub fn walk_key(model: &Model, key: &PrincipalKey) -> Option<Vec<String>> {
    role_walk(model, key).map(|roles| roles.iter().map(|role| role.name.clone()).collect())
}

impl RoleRules {
    pub fn compile(model: &Model, key: &PrincipalKey) -> RoleRules {
        let mut compiled = RoleRules {
            known: false,
            defaults: model.default_access,
            publish: TopicRules::default(),
            receive: TopicRules::default(),
            subscribe: FilterRules::default(),
            unsubscribe: FilterRules::default(),
            wildcards_denied_from: None,
            acl_count: 0,
        };
        let Some(roles) = role_walk(model, key) else {
            return compiled;
        };
        compiled.known = true;
        for (visit, role) in roles.into_iter().enumerate() {
            if !role.allow_wildcard_subs && compiled.wildcards_denied_from.is_none() {
                compiled.wildcards_denied_from = Some(visit);
            }
            for acl_type in AclType::ALL {
                for (position, acl) in role.acls[acl_type.index()].iter().enumerate() {
                    compiled.acl_count += 1;
                    let literal = matches!(acl_type, AclType::SubscribeLiteral | AclType::UnsubscribeLiteral);
                    let entry =
                        Entry { order: order_key(visit, literal, position), allow: acl.allow, fail_closed: false };
                    match acl_type {
                        AclType::PublishClientSend => compiled.publish.insert(&acl.topic, entry),
                        AclType::PublishClientReceive => compiled.receive.insert(&acl.topic, entry),
                        AclType::SubscribeLiteral => compiled.subscribe.insert_literal(&acl.topic, entry),
                        AclType::SubscribePattern => compiled.subscribe.insert_pattern(&acl.topic, entry),
                        AclType::UnsubscribeLiteral => compiled.unsubscribe.insert_literal(&acl.topic, entry),
                        AclType::UnsubscribePattern => compiled.unsubscribe.insert_pattern(&acl.topic, entry),
                    }
                }
            }
        }
        compiled
    }
}

impl CompiledAcl {
    /// Number of ACLs compiled in (all roles, all types).
    pub fn acl_count(&self) -> usize {
        self.rules.acl_count
    }

    /// Evaluates one access. `topic` is the concrete topic for publish kinds and the full
    /// requested filter (with any `$share/<group>/` prefix) for subscribe kinds.
    pub fn check(&self, kind: AccessKind, topic: &str, client_id: Option<&str>) -> Decision {
        self.evaluate(kind, topic, client_id).0
    }

    /// The decision and what made it: the one evaluation both [`CompiledAcl::check`] and
    /// [`explain`] run.
    fn evaluate(&self, kind: AccessKind, topic: &str, client_id: Option<&str>) -> (Decision, Source) {
        let rules = &*self.rules;
        if !rules.known {
            return (Decision::Defer, Source::NotAClient);
        }
        let (c, u) = (substitution(client_id), substitution(self.username.as_deref()));
        let best = match kind {
            AccessKind::Publish => rules.publish.best(topic, c, u),
            AccessKind::Receive => rules.receive.best(topic, c, u),
            AccessKind::Subscribe => rules.subscribe.best(topic, c, u),
            AccessKind::Unsubscribe => rules.unsubscribe.best(topic, c, u),
        };
        if kind == AccessKind::Subscribe
            && let Some(denying_visit) = rules.wildcards_denied_from
            && has_wildcard(topic)
            && best.is_none_or(|e| visit_of(e.order) >= denying_visit)
        {
            return (Decision::Deny, Source::WildcardsDenied(denying_visit));
        }
        match best {
            Some(entry) => (if entry.allow { Decision::Allow } else { Decision::Deny }, Source::Acl(entry)),
            None => (default_decision(&rules.defaults, kind, topic), Source::Default),
        }
    }
}

/// What [`CompiledAcl::evaluate`] decided by, before it is named.
#[derive(Debug, Clone, Copy)]
enum Source {
    NotAClient,
    Acl(Entry),
    WildcardsDenied(usize),
    Default,
}

/// What decided an access, named after the model ([`explain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// The username is not a dynsec client: dynsec has no opinion.
    NotAClient,
    /// The first matching ACL in evaluation order. `fail_closed`: it uses `%c`/`%u` and the value
    /// contains `+`, `#` or `/`, so it denies whatever its `allow`.
    Acl { role: String, acl_type: AclType, topic: String, priority: i32, allow: bool, fail_closed: bool },
    /// A wildcard subscription reached a role with `allowwildcardsubs` false.
    WildcardSubscriptionsDenied { role: String },
    /// No ACL matched: the default access for the kind (never for `$CONTROL` topics).
    Default,
}

/// An access decided and explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Exactly what [`CompiledAcl::check`] answers for the same model and access.
    pub decision: Decision,
    /// The roles in evaluation order (empty for a username dynsec does not know).
    pub roles: Vec<String>,
    pub decided_by: DecidedBy,
}

/// Decides one access for `key` under `model` with the evaluation the ACL check uses
/// ([`CompiledAcl::compile`] then the check's own walk) and names what decided it: role, ACL
/// type, topic and priority of the deciding ACL, a role refusing wildcard subscriptions, or the
/// default access.
pub fn explain(
    model: &Model,
    key: &PrincipalKey,
    kind: AccessKind,
    topic: &str,
    client_id: Option<&str>,
) -> Explanation {
    let compiled = CompiledAcl::compile(model, key);
    let (decision, source) = compiled.evaluate(kind, topic, client_id);
    let roles = role_walk(model, key).unwrap_or_default();
    let role_name = |visit: usize| roles.get(visit).map(|r| r.name.clone()).unwrap_or_default();
    let decided_by = match source {
        Source::NotAClient => DecidedBy::NotAClient,
        Source::Default => DecidedBy::Default,
        Source::WildcardsDenied(visit) => DecidedBy::WildcardSubscriptionsDenied { role: role_name(visit) },
        Source::Acl(entry) => {
            let visit = visit_of(entry.order);
            let literal_phase = entry.order & (1 << 31) == 0;
            let position = (entry.order & 0x7FFF_FFFF) as usize;
            let acl_type = match (kind, literal_phase) {
                (AccessKind::Publish, _) => AclType::PublishClientSend,
                (AccessKind::Receive, _) => AclType::PublishClientReceive,
                (AccessKind::Subscribe, true) => AclType::SubscribeLiteral,
                (AccessKind::Subscribe, false) => AclType::SubscribePattern,
                (AccessKind::Unsubscribe, true) => AclType::UnsubscribeLiteral,
                (AccessKind::Unsubscribe, false) => AclType::UnsubscribePattern,
            };
            // The compiled form was built from these very roles in this order.
            let acl = roles.get(visit).and_then(|role| role.acls[acl_type.index()].get(position));
            DecidedBy::Acl {
                role: role_name(visit),
                acl_type,
                topic: acl.map(|a| a.topic.clone()).unwrap_or_default(),
                priority: acl.map_or(0, |a| a.priority),
                allow: acl.is_some_and(|a| a.allow),
                fail_closed: entry.fail_closed,
            }
        }
    };
    Explanation { decision, roles: roles.iter().map(|r| r.name.clone()).collect(), decided_by }
}

/// What mosquitto 2.1 calls a wildcard subscription: `+` or `#` anywhere in the filter.
fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// The role visit an [`order_key`] belongs to.
fn visit_of(order: u64) -> usize {
    (order >> 32) as usize
}

/// Nothing matched: the default for the kind, which never grants `$CONTROL…`.
fn default_decision(defaults: &DefaultAccess, kind: AccessKind, topic: &str) -> Decision {
    if defaults.get(kind.default_index()) && !topic.starts_with("$CONTROL") { Decision::Allow } else { Decision::Defer }
}

/// The algorithm of docs/compatibility.md §3.3–§3.4 written out literally, iterating every ACL of every visited
/// role. Slow by design; it is the specification the compiled form is tested against (test
/// support: compiled for this crate's tests and with the feature `testing` only).
#[cfg(any(test, feature = "testing"))]
pub mod reference {
    use super::*;
    use crate::topic::{acl_covers_filter, topic_matches_filter};

    /// `Ok(None)`: a placeholder has no value, the ACL does not match. `Err`: a value contains
    /// `+`, `#` or `/`, the ACL denies. Missing wins over unsafe.
    fn substitute(acl: &str, client_id: Option<&str>, username: Option<&str>) -> Result<Option<String>, ()> {
        let value = |level: &str| match placeholder(level) {
            Some(Placeholder::ClientId) => Some(client_id),
            Some(Placeholder::Username) => Some(username),
            None => None,
        };
        let levels: Vec<&str> = acl.split('/').collect();
        if levels.iter().any(|l| matches!(value(l), Some(None | Some("")))) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for level in levels {
            match value(level) {
                Some(Some(v)) if v.contains(['+', '#', '/']) => return Err(()),
                Some(Some(v)) => out.push(v.to_owned()),
                _ => out.push(level.to_owned()),
            }
        }
        Ok(Some(out.join("/")))
    }

    pub fn check(
        model: &Model,
        key: &PrincipalKey,
        kind: AccessKind,
        topic: &str,
        client_id: Option<&str>,
    ) -> Decision {
        explain(model, key, kind, topic, client_id).0
    }

    /// The decision and the rule that made it, found by iterating every ACL literally.
    pub fn explain(
        model: &Model,
        key: &PrincipalKey,
        kind: AccessKind,
        topic: &str,
        client_id: Option<&str>,
    ) -> (Decision, DecidedBy) {
        let Some(roles) = role_walk(model, key) else {
            return (Decision::Defer, DecidedBy::NotAClient);
        };
        let username = match key {
            PrincipalKey::User(u) => Some(u.as_str()),
            PrincipalKey::Anonymous => None,
        };
        let verdict = |allow: bool| if allow { Decision::Allow } else { Decision::Deny };
        let by = |role: &Role, acl_type: AclType, acl: &crate::model::Acl, fail_closed: bool| DecidedBy::Acl {
            role: role.name.clone(),
            acl_type,
            topic: acl.topic.clone(),
            priority: acl.priority,
            allow: acl.allow,
            fail_closed,
        };
        for role in roles {
            if kind == AccessKind::Subscribe && !role.allow_wildcard_subs && has_wildcard(topic) {
                return (Decision::Deny, DecidedBy::WildcardSubscriptionsDenied { role: role.name.clone() });
            }
            let (literal, pattern) = match kind {
                AccessKind::Publish => (None, AclType::PublishClientSend),
                AccessKind::Receive => (None, AclType::PublishClientReceive),
                AccessKind::Subscribe => (Some(AclType::SubscribeLiteral), AclType::SubscribePattern),
                AccessKind::Unsubscribe => (Some(AclType::UnsubscribeLiteral), AclType::UnsubscribePattern),
            };
            if let Some(lit) = literal
                && let Some(acl) = role.acls[lit.index()].iter().find(|a| a.topic == topic)
            {
                return (verdict(acl.allow), by(role, lit, acl, false));
            }
            for acl in &role.acls[pattern.index()] {
                if literal.is_none() && (acl.topic.is_empty() || !crate::topic::valid_filter(&acl.topic)) {
                    continue;
                }
                let filter = match substitute(&acl.topic, client_id, username) {
                    Err(()) => return (Decision::Deny, by(role, pattern, acl, true)),
                    Ok(None) => continue,
                    Ok(Some(f)) => f,
                };
                // mosquitto 2.1 compares the `$` of the unsubstituted ACL with the topic's.
                let first_level = acl.topic.split('/').next().unwrap_or("");
                if topic.starts_with('$') && placeholder(first_level).is_some() {
                    continue;
                }
                let matched = if literal.is_some() {
                    acl_covers_filter(&filter, topic)
                } else {
                    topic_matches_filter(&filter, topic)
                };
                if matched {
                    return (verdict(acl.allow), by(role, pattern, acl, false));
                }
            }
        }
        (default_decision(&model.default_access, kind, topic), DecidedBy::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Acl, Client, Group, Membership, Mutation, insert_membership};

    fn role(name: &str, acls: &[(AclType, &str, i32, bool)]) -> Mutation {
        let mut role = Role::new(name);
        for (t, topic, priority, allow) in acls {
            role.insert_acl(*t, Acl { topic: (*topic).into(), priority: *priority, allow: *allow });
        }
        Mutation::PutRole(role)
    }

    fn client(name: &str, roles: &[(&str, i32)]) -> Mutation {
        let mut c = Client::new(name);
        for (r, p) in roles {
            insert_membership(&mut c.roles, Membership { name: (*r).into(), priority: *p });
        }
        Mutation::PutClient(c)
    }

    fn group(name: &str, roles: &[(&str, i32)]) -> Mutation {
        let mut g = Group::new(name);
        for (r, p) in roles {
            insert_membership(&mut g.roles, Membership { name: (*r).into(), priority: *p });
        }
        Mutation::PutGroup(g)
    }

    fn member(g: &str, u: &str, p: i32) -> Mutation {
        Mutation::SetMembership { group: g.into(), username: u.into(), priority: Some(p) }
    }

    use AccessKind::*;
    use AclType::*;
    use Decision::*;

    /// One row: principal (None = anonymous), access, topic/filter, client id, expected decision.
    type Row = (Option<&'static str>, AccessKind, &'static str, Option<&'static str>, Decision);

    fn check_table(mutations: Vec<Mutation>, rows: &[Row]) {
        let mut model = Model::default();
        for m in mutations {
            model.apply(m);
        }
        model.check_invariants().unwrap();
        for (who, kind, topic, client_id, expected) in rows {
            let key = PrincipalKey::for_username(*who);
            let compiled = CompiledAcl::compile(&model, &key);
            let got = compiled.check(*kind, topic, *client_id);
            let reference = reference::check(&model, &key, *kind, topic, *client_id);
            assert_eq!(got, *expected, "compiled: {who:?} {kind:?} {topic} {client_id:?}");
            assert_eq!(reference, *expected, "reference: {who:?} {kind:?} {topic} {client_id:?}");
        }
    }

    /// §3.3 step 1–3: client roles before group roles whatever the priorities; group order by the
    /// client's group priority; role order by priority then name; first decisive match wins.
    #[test]
    fn evaluation_order() {
        check_table(
            vec![
                role("low_client", &[(PublishClientSend, "t/#", 0, false)]),
                role("high_group", &[(PublishClientSend, "t/#", 100, true), (PublishClientSend, "g/#", 0, true)]),
                role("a", &[(PublishClientSend, "x", 0, true)]),
                role("b", &[(PublishClientSend, "x", 0, false)]),
                role("p1", &[(PublishClientSend, "y", 0, true)]),
                role("p2", &[(PublishClientSend, "y", 0, false)]),
                client("u", &[("low_client", -5)]),
                client("v", &[("b", 1), ("a", 1)]),
                client("w", &[("p1", 1), ("p2", 2)]),
                group("g_hi", &[("p1", 0)]),
                group("g_lo", &[("p2", 0)]),
                group("g1", &[("high_group", 1000)]),
                client("m", &[]),
                member("g1", "u", 50),
                member("g_hi", "m", 9),
                member("g_lo", "m", 1),
            ],
            &[
                // client role beats a group role of higher priority
                (Some("u"), Publish, "t/1", None, Deny),
                // falls through to the group role when the client's roles don't match
                (Some("u"), Publish, "g/1", None, Allow),
                // equal priority: role name ascending
                (Some("v"), Publish, "x", None, Allow),
                // higher role priority first
                (Some("w"), Publish, "y", None, Deny),
                // groups by the client's priority in them
                (Some("m"), Publish, "y", None, Allow),
            ],
        );
    }

    /// `allowwildcardsubs: false` (mosquitto 2.1, acl.c): reaching such a role denies a filter
    /// with `+` or `#` anywhere, before the role's own ACLs (even a Literal ACL equal to the
    /// filter); roles visited earlier decide first; filters without wildcards and other access
    /// kinds are untouched; the anonymous group's roles count too.
    #[test]
    fn roles_without_wildcard_subscriptions() {
        let no_wildcards = |name: &str, acls: &[(AclType, &str, i32, bool)]| match role(name, acls) {
            Mutation::PutRole(r) => Mutation::PutRole(Role { allow_wildcard_subs: false, ..r }),
            _ => unreachable!(),
        };
        check_table(
            vec![
                no_wildcards("strict", &[(SubscribePattern, "#", 0, true), (SubscribeLiteral, "lit/+", 0, true)]),
                role("first", &[(SubscribePattern, "early/#", 0, true), (SubscribePattern, "no/#", 0, false)]),
                role("open", &[(SubscribePattern, "#", 0, true), (UnsubscribePattern, "#", 0, true)]),
                client("u", &[("strict", 0)]),
                client("v", &[("first", 5), ("strict", 1), ("open", 0)]),
                client("w", &[("open", 5), ("strict", 0)]),
                group("anon", &[("strict", 0)]),
                Mutation::SetAnonymousGroup(Some("anon".into())),
            ],
            &[
                (Some("u"), Subscribe, "a/b", None, Allow),
                (Some("u"), Subscribe, "a/+", None, Deny),
                (Some("u"), Subscribe, "#", None, Deny),
                (Some("u"), Subscribe, "lit/+", None, Deny),
                (Some("u"), Subscribe, "$share/g/a/#", None, Deny),
                (Some("u"), Subscribe, "$share/g/a/b", None, Allow),
                // a role earlier in the walk decides first, either way
                (Some("v"), Subscribe, "early/#", None, Allow),
                (Some("v"), Subscribe, "no/+", None, Deny),
                (Some("v"), Subscribe, "other/#", None, Deny),
                (Some("v"), Subscribe, "other/x", None, Allow),
                (Some("w"), Subscribe, "other/#", None, Allow),
                // only subscriptions
                (Some("w"), Unsubscribe, "other/#", None, Allow),
                (None, Subscribe, "x/#", None, Deny),
                (None, Subscribe, "x/y", None, Allow),
            ],
        );
    }

    /// Within a role: ACL priority descending, ties in insertion order.
    #[test]
    fn acl_priorities_within_a_role() {
        check_table(
            vec![
                role(
                    "r",
                    &[
                        (PublishClientSend, "a/#", 0, true),
                        (PublishClientSend, "a/secret", 10, false),
                        (PublishClientReceive, "b/+", 0, false),
                        (PublishClientReceive, "b/#", 0, true),
                    ],
                ),
                client("u", &[("r", 0)]),
            ],
            &[
                (Some("u"), Publish, "a/secret", None, Deny),
                (Some("u"), Publish, "a/other", None, Allow),
                (Some("u"), Receive, "b/x", None, Deny),
                (Some("u"), Receive, "b/x/y", None, Allow),
            ],
        );
    }

    /// Literal before pattern for subscribe/unsubscribe, regardless of priority; literal is
    /// byte equality; pattern is 2.0 filter-vs-filter.
    #[test]
    fn subscribe_literal_beats_pattern() {
        check_table(
            vec![
                role(
                    "r",
                    &[
                        (SubscribeLiteral, "a/b", -10, false),
                        (SubscribePattern, "a/#", 10, true),
                        (UnsubscribeLiteral, "a/b", -10, true),
                        (UnsubscribePattern, "a/#", 10, false),
                        (SubscribePattern, "foo/+", 0, true),
                    ],
                ),
                client("u", &[("r", 0)]),
            ],
            &[
                (Some("u"), Subscribe, "a/b", None, Deny),
                (Some("u"), Subscribe, "a/c", None, Allow),
                (Some("u"), Subscribe, "a/+", None, Allow),
                (Some("u"), Unsubscribe, "a/b", None, Allow),
                (Some("u"), Unsubscribe, "a/c", None, Deny),
                (Some("u"), Subscribe, "foo/+", None, Allow),
                (Some("u"), Subscribe, "foo/#", None, Defer),
                (Some("u"), Subscribe, "foo", None, Defer),
            ],
        );
    }

    /// A literal in a later role does not beat a pattern in an earlier role.
    #[test]
    fn literal_precedence_is_per_role() {
        check_table(
            vec![
                role("first", &[(SubscribePattern, "a/#", 0, false)]),
                role("second", &[(SubscribeLiteral, "a/b", 0, true)]),
                client("u", &[("first", 2), ("second", 1)]),
            ],
            &[(Some("u"), Subscribe, "a/b", None, Deny)],
        );
    }

    /// §3.4: `$` topics, 2.0's pattern `#` covering `$` and `$share` filters, shared subscriptions
    /// checked with the full filter, delivery with the real topic.
    #[test]
    fn dollar_topics_and_shared_subscriptions() {
        check_table(
            vec![
                role(
                    "r",
                    &[
                        (PublishClientSend, "#", 0, true),
                        (PublishClientReceive, "+/x", 0, true),
                        (PublishClientReceive, "$SYS/#", 0, true),
                        (SubscribePattern, "t/#", 0, true),
                    ],
                ),
                role("all", &[(SubscribePattern, "#", 0, true)]),
                client("u", &[("r", 0)]),
                client("root", &[("all", 0)]),
            ],
            &[
                (Some("u"), Publish, "$SYS/x", None, Defer),
                (Some("u"), Publish, "$CONTROL/dynamic-security/v1", None, Defer),
                (Some("u"), Receive, "$x/x", None, Defer),
                (Some("u"), Receive, "a/x", None, Allow),
                (Some("u"), Receive, "$SYS/broker/uptime", None, Allow),
                (Some("u"), Subscribe, "$share/g/t/#", None, Defer),
                (Some("u"), Subscribe, "t/a", None, Allow),
                (Some("root"), Subscribe, "$SYS/#", None, Allow),
                (Some("root"), Subscribe, "$CONTROL/#", None, Allow),
                (Some("root"), Subscribe, "$share/g/t/#", None, Allow),
            ],
        );
    }

    /// §3.3 step 1–2 and 4: unknown usernames defer without defaults, anonymous clients use the
    /// anonymous group then the defaults, defaults never grant `$CONTROL`.
    #[test]
    fn defaults_unknown_users_and_anonymous() {
        let all_allowed = DefaultAccess {
            publish_client_send: true,
            publish_client_receive: true,
            subscribe: true,
            unsubscribe: true,
        };
        check_table(
            vec![
                Mutation::SetDefaultAccess(all_allowed),
                role("anon", &[(PublishClientSend, "blocked", 0, false)]),
                group("anonymous", &[("anon", 0)]),
                Mutation::SetAnonymousGroup(Some("anonymous".into())),
                client("known", &[]),
            ],
            &[
                (Some("stranger"), Publish, "a", None, Defer),
                (Some("stranger"), Subscribe, "a", None, Defer),
                (Some("known"), Publish, "a", None, Allow),
                (Some("known"), Receive, "a", None, Allow),
                (Some("known"), Subscribe, "a/#", None, Allow),
                (Some("known"), Unsubscribe, "a/#", None, Allow),
                (Some("known"), Publish, "$CONTROL/dynamic-security/v1", None, Defer),
                (Some("known"), Subscribe, "$CONTROL/#", None, Defer),
                (Some("known"), Publish, "$CONTROLX", None, Defer),
                (None, Publish, "blocked", None, Deny),
                (None, Publish, "other", None, Allow),
            ],
        );
        check_table(
            vec![client("known", &[])],
            &[(Some("known"), Publish, "a", None, Defer), (None, Subscribe, "a", None, Defer)],
        );
    }

    /// `%c`/`%u` substitution (2.1 semantics) and its fail-closed rules.
    #[test]
    fn placeholder_substitution() {
        check_table(
            vec![
                role(
                    "dev",
                    &[
                        (PublishClientSend, "devices/%c/#", 5, true),
                        (PublishClientSend, "users/%u/inbox", 5, true),
                        (PublishClientSend, "#", 0, true),
                        (SubscribePattern, "devices/%c/#", 0, true),
                        (SubscribeLiteral, "lit/%c", 0, true),
                    ],
                ),
                role("deny", &[(PublishClientReceive, "d/%c", 1, false), (PublishClientReceive, "d/#", 0, true)]),
                client("alice", &[("dev", 0), ("deny", -1)]),
                group("anon", &[("dev", 0)]),
                Mutation::SetAnonymousGroup(Some("anon".into())),
            ],
            &[
                (Some("alice"), Publish, "devices/d1/temp", Some("d1"), Allow),
                (Some("alice"), Publish, "users/alice/inbox", Some("d1"), Allow),
                (Some("alice"), Subscribe, "devices/d1/#", Some("d1"), Allow),
                (Some("alice"), Subscribe, "devices/d2/#", Some("d1"), Defer),
                (Some("alice"), Subscribe, "devices/+/#", Some("d1"), Defer),
                // literal ACLs are never substituted
                (Some("alice"), Subscribe, "lit/%c", Some("d1"), Allow),
                (Some("alice"), Subscribe, "lit/d1", Some("d1"), Defer),
                // a client id with '/' fails closed at the first ACL using %c
                (Some("alice"), Publish, "devices/a/b/x", Some("a/b"), Deny),
                (Some("alice"), Publish, "other", Some("a+b"), Deny),
                (Some("alice"), Subscribe, "x", Some("#"), Deny),
                // missing values: the ACL does not match, evaluation continues
                (None, Publish, "users/x/inbox", Some("c"), Allow),
                (Some("alice"), Receive, "d/c9", Some("c9"), Deny),
                (Some("alice"), Receive, "d/zz", Some("c9"), Allow),
                (Some("alice"), Receive, "d/zz", None, Allow),
            ],
        );
    }

    /// A placeholder as the first level never reaches `$` topics or filters, whatever the client
    /// id or username (issue 15: a client calling itself `$CONTROL` with `%c/#` rights could
    /// drive the admin API). Placeholders further down still work under `$` prefixes.
    #[test]
    fn first_level_placeholders_never_match_dollar_topics() {
        let own =
            |t| [(t, "%c/#", 0, true), (t, "%u/#", 0, true), (t, "%c", 0, true), (t, "%u/+/%c", 0, true)].to_vec();
        let mut acls = Vec::new();
        for t in [PublishClientSend, PublishClientReceive, SubscribePattern, UnsubscribePattern] {
            acls.extend(own(t));
        }
        acls.push((PublishClientSend, "$SYS/broker/connection/%c/state", 0, true));
        check_table(
            vec![role("own", &acls), client("dev", &[("own", 0)]), client("$CONTROL", &[("own", 0)])],
            &[
                (Some("dev"), Publish, "$CONTROL/dynamic-security/v1", Some("$CONTROL"), Defer),
                (Some("dev"), Receive, "$CONTROL/dynamic-security/v1/response", Some("$CONTROL"), Defer),
                (Some("dev"), Subscribe, "$CONTROL/dynamic-security/v1/response", Some("$CONTROL"), Defer),
                (Some("dev"), Subscribe, "$CONTROL/#", Some("$CONTROL"), Defer),
                (Some("dev"), Unsubscribe, "$CONTROL/#", Some("$CONTROL"), Defer),
                (Some("dev"), Publish, "$CONTROL", Some("$CONTROL"), Defer),
                (Some("$CONTROL"), Publish, "$CONTROL/dynamic-security/v1", Some("c1"), Defer),
                (Some("$CONTROL"), Subscribe, "$CONTROL/dynamic-security/v1/response", None, Defer),
                (Some("$CONTROL"), Receive, "$CONTROL/x/c1", Some("c1"), Defer),
                // the same rights on ordinary topics, and below a literal `$` level
                (Some("dev"), Publish, "c1/x", Some("c1"), Allow),
                (Some("dev"), Receive, "dev/x", Some("c1"), Allow),
                (Some("dev"), Subscribe, "c1/#", Some("c1"), Allow),
                (Some("dev"), Publish, "$SYS/broker/connection/c1/state", Some("c1"), Allow),
                (Some("dev"), Publish, "$SYS/broker/connection/c2/state", Some("c1"), Defer),
            ],
        );
    }

    /// ACL topics that createRole accepted without validation never match anything.
    #[test]
    fn invalid_acl_topics_never_match() {
        check_table(
            vec![
                role(
                    "r",
                    &[
                        (PublishClientSend, "a/#/b", 9, false),
                        (PublishClientSend, "", 9, false),
                        (PublishClientSend, "a/#", 0, true),
                    ],
                ),
                client("u", &[("r", 0)]),
            ],
            &[(Some("u"), Publish, "a/x/b", None, Allow), (Some("u"), Publish, "a", None, Allow)],
        );
    }
}
