//! The dynsec data model — clients, groups, roles, ACLs, default access, anonymous group — and
//! the only way to change it: [`Mutation`]s.
//!
//! Every change goes through [`Model::apply`], which returns the inverse mutations (so a batch whose
//! persistence fails can be rolled back) and reports which principals' ACLs changed (so compiled
//! ACL caches are invalidated precisely). Mutations are idempotent "put/delete" operations, which
//! is what lets the journal be replayed over a snapshot that may already contain them. The two ACL
//! edits ([`Mutation::AddAcl`], [`Mutation::RemoveAcl`]) change a role in place, so that a batch
//! of edits does not copy the role per edit; they never reach the journal, which records the
//! edited role's final state instead (see `store.rs`).
//!
//! Group membership is stored once, on the group (`Group::members`), and indexed on the client
//! (`Client::groups`); roles are referenced by name from clients and groups. Both directions are
//! maintained here, so deleting a role detaches it from everyone (mosquitto forgets the reverse
//! link for roles given at creation time — a bug this model cannot have).

use std::collections::{BTreeMap, BTreeSet};

use crate::password::PasswordHash;

/// The six concrete ACL types, in the fixed order mosquitto lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclType {
    PublishClientSend,
    PublishClientReceive,
    SubscribeLiteral,
    SubscribePattern,
    UnsubscribeLiteral,
    UnsubscribePattern,
}

impl AclType {
    pub const ALL: [AclType; 6] = [
        AclType::PublishClientSend,
        AclType::PublishClientReceive,
        AclType::SubscribeLiteral,
        AclType::SubscribePattern,
        AclType::UnsubscribeLiteral,
        AclType::UnsubscribePattern,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AclType::PublishClientSend => "publishClientSend",
            AclType::PublishClientReceive => "publishClientReceive",
            AclType::SubscribeLiteral => "subscribeLiteral",
            AclType::SubscribePattern => "subscribePattern",
            AclType::UnsubscribeLiteral => "unsubscribeLiteral",
            AclType::UnsubscribePattern => "unsubscribePattern",
        }
    }

    /// Case-insensitive, like mosquitto's `strcasecmp`.
    pub fn parse(name: &[u8]) -> Option<AclType> {
        AclType::ALL.into_iter().find(|t| t.name().as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub topic: String,
    pub priority: i32,
    pub allow: bool,
}

/// The four default-access switches; all false unless the file says otherwise (compat §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DefaultAccess {
    pub publish_client_send: bool,
    pub publish_client_receive: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
}

/// The default access keys in mosquitto's fixed order.
pub const DEFAULT_ACCESS_KEYS: [&str; 4] = ["publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"];

impl DefaultAccess {
    pub fn get(&self, key_index: usize) -> bool {
        [self.publish_client_send, self.publish_client_receive, self.subscribe, self.unsubscribe][key_index]
    }

    pub fn set(&mut self, key_index: usize, allow: bool) {
        match key_index {
            0 => self.publish_client_send = allow,
            1 => self.publish_client_receive = allow,
            2 => self.subscribe = allow,
            _ => self.unsubscribe = allow,
        }
    }
}

/// A reference from a client or group to a role, or from a client to a group, with priority.
/// -1 is the default and is omitted from all JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub name: String,
    pub priority: i32,
}

/// Evaluation order of role and group lists: priority descending, then name ascending (bytes).
fn membership_order(a: &Membership, b: &Membership) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
}

/// Inserts keeping evaluation order; returns false if the name is already present.
pub fn insert_membership(list: &mut Vec<Membership>, entry: Membership) -> bool {
    if list.iter().any(|m| m.name == entry.name) {
        return false;
    }
    let at = list.partition_point(|m| membership_order(m, &entry).is_lt());
    list.insert(at, entry);
    true
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    /// mosquitto 2.1's `allowwildcardsubs`: when false, a subscription with `+` or `#` is denied
    /// as soon as the evaluation reaches this role (see `acl.rs`). Defaults to true.
    pub allow_wildcard_subs: bool,
    /// Indexed by [`AclType::index`]; each list in evaluation order (priority descending, ties in
    /// insertion order); topics unique within a list.
    pub acls: [Vec<Acl>; 6],
}

impl Default for Role {
    fn default() -> Self {
        Role {
            name: String::new(),
            textname: None,
            textdescription: None,
            allow_wildcard_subs: true,
            acls: Default::default(),
        }
    }
}

/// mosquitto 2.1 caps every priority at this magnitude (some commands only the upper bound;
/// see `commands.rs`).
pub const PRIORITY_MAX: i32 = 100_000;

/// A priority clamped to ±[`PRIORITY_MAX`].
pub fn clamp_priority(priority: i32) -> i32 {
    priority.clamp(-PRIORITY_MAX, PRIORITY_MAX)
}

impl Role {
    pub fn new(name: &str) -> Role {
        Role { name: name.to_owned(), ..Default::default() }
    }

    /// Adds an ACL in evaluation order; false if the same type already has this exact topic.
    pub fn insert_acl(&mut self, acl_type: AclType, acl: Acl) -> bool {
        let list = &mut self.acls[acl_type.index()];
        if list.iter().any(|a| a.topic == acl.topic) {
            return false;
        }
        let at = list.partition_point(|a| a.priority >= acl.priority);
        list.insert(at, acl);
        true
    }

    pub fn acl_count(&self) -> usize {
        self.acls.iter().map(Vec::len).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Client {
    pub username: String,
    /// When set, only this exact client id may log in with the username.
    pub clientid: Option<String>,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    pub disabled: bool,
    /// `None`: dynsec never authenticates this client (other sources may).
    pub password: Option<PasswordHash>,
    /// Role list in evaluation order.
    pub roles: Vec<Membership>,
    /// Index of the group memberships stored on the groups; kept in evaluation order.
    /// Ignored by [`Mutation::PutClient`], which preserves the current memberships.
    pub groups: Vec<Membership>,
}

impl Client {
    pub fn new(username: &str) -> Client {
        Client { username: username.to_owned(), ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub name: String,
    pub textname: Option<String>,
    pub textdescription: Option<String>,
    pub roles: Vec<Membership>,
    /// Members by username, with the client's priority for this group.
    /// Ignored by [`Mutation::PutGroup`], which preserves the current members.
    pub members: BTreeMap<String, i32>,
}

impl Group {
    pub fn new(name: &str) -> Group {
        Group { name: name.to_owned(), ..Default::default() }
    }
}

/// One idempotent change. Replaying a mutation that is already reflected in the model is a no-op.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// Create or replace a client's own fields and roles (memberships are kept).
    PutClient(Client),
    /// Delete a client and its group memberships.
    DeleteClient(String),
    /// Create or replace a group's own fields and roles (members are kept).
    PutGroup(Group),
    /// Delete a group, its memberships and (if it was) the anonymous-group setting.
    DeleteGroup(String),
    /// Create or replace a role (text and ACLs).
    PutRole(Role),
    /// Delete a role and every reference to it.
    DeleteRole(String),
    /// Add one ACL to a role: in evaluation order, or at index `at` (the undo of a removal puts
    /// it back exactly where it was). Nothing happens if the role is missing or the type already
    /// has the topic. Costs O(the role's ACL list), not a copy of the role, so a batch of ACL edits
    /// stays linear; the journal stores the role's resulting state instead of these edits (see
    /// `store.rs`: they are not safe to replay on their own).
    AddAcl {
        role: String,
        acl_type: AclType,
        acl: Acl,
        at: Option<usize>,
    },
    /// Remove the ACL of this type and topic from a role (nothing if absent). Same cost and
    /// journal treatment as [`Mutation::AddAcl`].
    RemoveAcl {
        role: String,
        acl_type: AclType,
        topic: String,
    },
    /// Set (`Some(priority)`) or remove (`None`) a client's membership of a group.
    SetMembership {
        group: String,
        username: String,
        priority: Option<i32>,
    },
    SetDefaultAccess(DefaultAccess),
    SetAnonymousGroup(Option<String>),
    /// mosquitto 2.1's `changeIndex` (+1 per successful changing command).
    SetChangeIndex(i64),
}

/// Whose compiled ACLs or credentials a change touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub all: bool,
    pub anonymous: bool,
    pub users: BTreeSet<String>,
}

impl Affected {
    pub fn merge(&mut self, other: Affected) {
        self.all |= other.all;
        self.anonymous |= other.anonymous;
        self.users.extend(other.users);
    }

    pub fn is_empty(&self) -> bool {
        !self.all && !self.anonymous && self.users.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub default_access: DefaultAccess,
    pub clients: BTreeMap<String, Client>,
    pub groups: BTreeMap<String, Group>,
    pub roles: BTreeMap<String, Role>,
    pub anonymous_group: Option<String>,
    /// mosquitto 2.1's `changeIndex`: how many changing commands have succeeded, as `getDetails`
    /// reports it and the file keeps it.
    pub change_index: i64,
}

impl Model {
    /// Usernames and the anonymous flag of everyone whose ACL evaluation visits `group`.
    pub fn group_principals(&self, group: &str) -> Affected {
        let mut affected = Affected::default();
        if let Some(g) = self.groups.get(group) {
            affected.users.extend(g.members.keys().cloned());
        }
        affected.anonymous = self.anonymous_group.as_deref() == Some(group);
        affected
    }

    /// Everyone holding `role` directly or through a group (including anonymous clients when the
    /// anonymous group holds it).
    pub fn role_principals(&self, role: &str) -> Affected {
        let mut affected = Affected::default();
        for client in self.clients.values() {
            if client.roles.iter().any(|m| m.name == role) {
                affected.users.insert(client.username.clone());
            }
        }
        for group in self.groups.values() {
            if group.roles.iter().any(|m| m.name == role) {
                affected.merge(self.group_principals(&group.name));
            }
        }
        affected
    }

    /// Applies a mutation. Returns the mutations that undo it (apply them in order) and who is
    /// affected. References to names that do not exist are dropped (never dangling).
    pub fn apply(&mut self, mutation: Mutation) -> (Vec<Mutation>, Affected) {
        self.apply_reporting(mutation, true)
    }

    /// [`Model::apply`] for a change of a role's content (putRole, ACL edits) whose holders the
    /// caller already knows: the same change and undo, without the scan of every client and
    /// group that finds the holders. Other mutations are applied as by [`Model::apply`].
    pub fn apply_to_known_holders(&mut self, mutation: Mutation) -> Vec<Mutation> {
        self.apply_reporting(mutation, false).0
    }

    fn holders(&self, role: &str, wanted: bool) -> Affected {
        if wanted { self.role_principals(role) } else { Affected::default() }
    }

    fn apply_reporting(&mut self, mutation: Mutation, report_holders: bool) -> (Vec<Mutation>, Affected) {
        match mutation {
            Mutation::PutClient(mut client) => {
                let name = client.username.clone();
                client.roles.retain(|m| self.roles.contains_key(&m.name));
                let undo = match self.clients.get(&name) {
                    Some(old) => {
                        client.groups = old.groups.clone();
                        vec![Mutation::PutClient(old.clone())]
                    }
                    None => {
                        client.groups.clear();
                        vec![Mutation::DeleteClient(name.clone())]
                    }
                };
                self.clients.insert(name.clone(), client);
                (undo, user(&name))
            }
            Mutation::DeleteClient(name) => {
                let Some(old) = self.clients.remove(&name) else {
                    return (Vec::new(), Affected::default());
                };
                let mut undo = vec![Mutation::PutClient(old.clone())];
                for membership in &old.groups {
                    if let Some(group) = self.groups.get_mut(&membership.name) {
                        group.members.remove(&name);
                    }
                    undo.push(Mutation::SetMembership {
                        group: membership.name.clone(),
                        username: name.clone(),
                        priority: Some(membership.priority),
                    });
                }
                (undo, user(&name))
            }
            Mutation::PutGroup(mut group) => {
                let name = group.name.clone();
                group.roles.retain(|m| self.roles.contains_key(&m.name));
                let undo = match self.groups.get(&name) {
                    Some(old) => {
                        group.members = old.members.clone();
                        vec![Mutation::PutGroup(old.clone())]
                    }
                    None => {
                        group.members.clear();
                        vec![Mutation::DeleteGroup(name.clone())]
                    }
                };
                self.groups.insert(name.clone(), group);
                (undo, self.group_principals(&name))
            }
            Mutation::DeleteGroup(name) => {
                let affected = self.group_principals(&name);
                let Some(old) = self.groups.remove(&name) else {
                    return (Vec::new(), Affected::default());
                };
                let mut undo = vec![Mutation::PutGroup(old.clone())];
                for (username, priority) in &old.members {
                    if let Some(client) = self.clients.get_mut(username) {
                        client.groups.retain(|m| m.name != name);
                    }
                    undo.push(Mutation::SetMembership {
                        group: name.clone(),
                        username: username.clone(),
                        priority: Some(*priority),
                    });
                }
                if self.anonymous_group.as_deref() == Some(name.as_str()) {
                    self.anonymous_group = None;
                    undo.push(Mutation::SetAnonymousGroup(Some(name.clone())));
                }
                (undo, affected)
            }
            Mutation::PutRole(role) => {
                let name = role.name.clone();
                let undo = match self.roles.insert(name.clone(), role) {
                    Some(old) => Mutation::PutRole(old),
                    None => Mutation::DeleteRole(name.clone()),
                };
                (vec![undo], self.holders(&name, report_holders))
            }
            Mutation::DeleteRole(name) => {
                let affected = self.role_principals(&name);
                let Some(old) = self.roles.remove(&name) else {
                    return (Vec::new(), Affected::default());
                };
                let mut undo = vec![Mutation::PutRole(old)];
                for client in self.clients.values_mut() {
                    if client.roles.iter().any(|m| m.name == name) {
                        let mut restored = client.clone();
                        restored.groups.clear();
                        undo.push(Mutation::PutClient(restored));
                        client.roles.retain(|m| m.name != name);
                    }
                }
                for group in self.groups.values_mut() {
                    if group.roles.iter().any(|m| m.name == name) {
                        let mut restored = group.clone();
                        restored.members.clear();
                        undo.push(Mutation::PutGroup(restored));
                        group.roles.retain(|m| m.name != name);
                    }
                }
                (undo, affected)
            }
            Mutation::AddAcl { role, acl_type, acl, at } => {
                let Some(r) = self.roles.get_mut(&role) else {
                    return (Vec::new(), Affected::default());
                };
                let topic = acl.topic.clone();
                let added = match at {
                    None => r.insert_acl(acl_type, acl),
                    Some(index) => {
                        let list = &mut r.acls[acl_type.index()];
                        let absent = !list.iter().any(|a| a.topic == topic);
                        if absent {
                            list.insert(index.min(list.len()), acl);
                        }
                        absent
                    }
                };
                if !added {
                    return (Vec::new(), Affected::default());
                }
                let affected = self.holders(&role, report_holders);
                (vec![Mutation::RemoveAcl { role, acl_type, topic }], affected)
            }
            Mutation::RemoveAcl { role, acl_type, topic } => {
                let Some(r) = self.roles.get_mut(&role) else {
                    return (Vec::new(), Affected::default());
                };
                let list = &mut r.acls[acl_type.index()];
                let Some(index) = list.iter().position(|a| a.topic == topic) else {
                    return (Vec::new(), Affected::default());
                };
                let acl = list.remove(index);
                let affected = self.holders(&role, report_holders);
                (vec![Mutation::AddAcl { role, acl_type, acl, at: Some(index) }], affected)
            }
            Mutation::SetMembership { group, username, priority } => {
                let (Some(g), Some(c)) = (self.groups.get_mut(&group), self.clients.get_mut(&username)) else {
                    return (Vec::new(), Affected::default());
                };
                let old = g.members.get(&username).copied();
                if old == priority {
                    return (Vec::new(), Affected::default());
                }
                c.groups.retain(|m| m.name != group);
                match priority {
                    Some(p) => {
                        g.members.insert(username.clone(), p);
                        insert_membership(&mut c.groups, Membership { name: group.clone(), priority: p });
                    }
                    None => {
                        g.members.remove(&username);
                    }
                }
                let undo = Mutation::SetMembership { group, username: username.clone(), priority: old };
                (vec![undo], user(&username))
            }
            Mutation::SetDefaultAccess(access) => {
                let old = std::mem::replace(&mut self.default_access, access);
                let affected = Affected { all: old != access, ..Default::default() };
                (vec![Mutation::SetDefaultAccess(old)], affected)
            }
            Mutation::SetAnonymousGroup(name) => {
                let name = name.filter(|n| self.groups.contains_key(n));
                let old = std::mem::replace(&mut self.anonymous_group, name);
                (vec![Mutation::SetAnonymousGroup(old)], Affected { anonymous: true, ..Default::default() })
            }
            Mutation::SetChangeIndex(index) => {
                let old = std::mem::replace(&mut self.change_index, index);
                if old == index {
                    return (Vec::new(), Affected::default());
                }
                (vec![Mutation::SetChangeIndex(old)], Affected::default())
            }
        }
    }

    /// Checks the invariants the rest of the crate relies on; used by tests and after loading.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, client) in &self.clients {
            if *name != client.username {
                return Err(format!("client key {name} != {}", client.username));
            }
            for m in &client.roles {
                if !self.roles.contains_key(&m.name) {
                    return Err(format!("client {name} references missing role {}", m.name));
                }
            }
            for m in &client.groups {
                match self.groups.get(&m.name).and_then(|g| g.members.get(name)) {
                    Some(p) if *p == m.priority => {}
                    _ => return Err(format!("client {name} group index {} out of sync", m.name)),
                }
            }
            if !client.roles.is_sorted_by(|a, b| membership_order(a, b).is_le())
                || !client.groups.is_sorted_by(|a, b| membership_order(a, b).is_le())
            {
                return Err(format!("client {name} lists out of order"));
            }
        }
        for (name, group) in &self.groups {
            for m in &group.roles {
                if !self.roles.contains_key(&m.name) {
                    return Err(format!("group {name} references missing role {}", m.name));
                }
            }
            for username in group.members.keys() {
                let indexed = self.clients.get(username).is_some_and(|c| c.groups.iter().any(|m| &m.name == name));
                if !indexed {
                    return Err(format!("group {name} member {username} not indexed"));
                }
            }
        }
        if let Some(anon) = &self.anonymous_group
            && !self.groups.contains_key(anon)
        {
            return Err(format!("anonymous group {anon} missing"));
        }
        Ok(())
    }
}

fn user(name: &str) -> Affected {
    Affected { users: BTreeSet::from([name.to_owned()]), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Model {
        let mut model = Model::default();
        let mut role = Role::new("r");
        for topic in ["a/#", "b", "c"] {
            role.insert_acl(AclType::PublishClientSend, Acl { topic: topic.into(), priority: 0, allow: true });
        }
        model.apply(Mutation::PutRole(role));
        let mut client = Client::new("u");
        insert_membership(&mut client.roles, Membership { name: "r".into(), priority: -1 });
        model.apply(Mutation::PutClient(client));
        let mut group = Group::new("g");
        insert_membership(&mut group.roles, Membership { name: "r".into(), priority: 3 });
        model.apply(Mutation::PutGroup(group));
        model.apply(Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: Some(2) });
        model.apply(Mutation::SetAnonymousGroup(Some("g".into())));
        model
    }

    fn acl(topic: &str, priority: i32) -> Acl {
        Acl { topic: topic.into(), priority, allow: true }
    }

    /// Applying then undoing every kind of mutation restores the model exactly.
    #[test]
    fn every_mutation_is_undone_by_its_inverse() {
        let mutations = vec![
            Mutation::PutClient(Client::new("v")),
            Mutation::PutClient(Client { disabled: true, ..Client::new("u") }),
            Mutation::DeleteClient("u".into()),
            Mutation::PutGroup(Group { textname: Some("t".into()), ..Group::new("g") }),
            Mutation::DeleteGroup("g".into()),
            Mutation::PutRole(Role::new("r")),
            Mutation::DeleteRole("r".into()),
            Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: None },
            Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: Some(9) },
            Mutation::SetDefaultAccess(DefaultAccess { subscribe: true, ..Default::default() }),
            Mutation::SetAnonymousGroup(None),
            Mutation::SetChangeIndex(7),
            Mutation::PutRole(Role { allow_wildcard_subs: false, ..Role::new("r") }),
            Mutation::AddAcl { role: "r".into(), acl_type: AclType::PublishClientSend, acl: acl("d", 0), at: None },
            Mutation::AddAcl { role: "r".into(), acl_type: AclType::PublishClientSend, acl: acl("d", 7), at: None },
            Mutation::AddAcl { role: "r".into(), acl_type: AclType::PublishClientSend, acl: acl("d", 0), at: Some(1) },
            // The tie order of "a/#", "b", "c" must come back exactly.
            Mutation::RemoveAcl { role: "r".into(), acl_type: AclType::PublishClientSend, topic: "b".into() },
            Mutation::RemoveAcl { role: "r".into(), acl_type: AclType::PublishClientSend, topic: "a/#".into() },
        ];
        for mutation in mutations {
            let mut model = sample();
            let before = model.clone();
            let (undo, _) = model.apply(mutation.clone());
            model.check_invariants().unwrap();
            for m in undo {
                model.apply(m);
            }
            assert_eq!(model, before, "undo of {mutation:?}");
        }
    }

    #[test]
    fn mutations_are_idempotent() {
        let mut model = sample();
        let (_, _) = model.apply(Mutation::DeleteRole("r".into()));
        let once = model.clone();
        model.apply(Mutation::DeleteRole("r".into()));
        assert_eq!(model, once);
        model.apply(Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: Some(5) });
        let twice = model.clone();
        model.apply(Mutation::SetMembership { group: "g".into(), username: "u".into(), priority: Some(5) });
        assert_eq!(model, twice);
    }

    #[test]
    fn deleting_a_role_detaches_it_everywhere_and_reports_holders() {
        let mut model = sample();
        assert_eq!(model.role_principals("r").users, BTreeSet::from(["u".to_owned()]));
        assert!(model.role_principals("r").anonymous);
        let (_, affected) = model.apply(Mutation::DeleteRole("r".into()));
        assert!(affected.users.contains("u") && affected.anonymous);
        assert!(model.clients["u"].roles.is_empty());
        assert!(model.groups["g"].roles.is_empty());
        model.check_invariants().unwrap();
    }

    #[test]
    fn lists_keep_evaluation_order() {
        let mut list = Vec::new();
        for (name, priority) in [("b", 1), ("a", 1), ("c", 5), ("d", -1)] {
            insert_membership(&mut list, Membership { name: name.into(), priority });
        }
        let names: Vec<_> = list.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "d"]);
        let mut role = Role::new("r");
        for (topic, priority) in [("x", 0), ("y", 5), ("z", 0), ("w", 5)] {
            role.insert_acl(AclType::SubscribePattern, Acl { topic: topic.into(), priority, allow: true });
        }
        let topics: Vec<_> = role.acls[AclType::SubscribePattern.index()].iter().map(|a| a.topic.as_str()).collect();
        assert_eq!(topics, ["y", "w", "x", "z"]);
    }
}
