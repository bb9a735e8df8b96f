//! The `dynamic-security.json` format: lenient loading (both the 2.0 `password`/`salt`/`iterations`
//! layout and 2.1's `encoded_password`), and writing files that mosquitto 2.0.x itself loads, in
//! its own key order and cJSON layout. The per-entity JSON forms here are also the journal's
//! record format.
//!
//! mosquitto 2.1's additions are read and kept: `changeIndex`, a role's `allowwildcardsubs`, and
//! its caps on priorities (±100000) and refusal of empty ACL topics. They are written only when
//! they differ from what a file without them means (`changeIndex` 0, `allowwildcardsubs` true),
//! so a file that never used them stays byte-identical to mosquitto 2.0's.
//!
//! Loading follows mosquitto (compat §2.4): keys are case-insensitive, entries without a name or
//! with wrong-typed fields are skipped or defaulted, references to unknown roles, groups or
//! clients are dropped. Unlike mosquitto, a file that is not JSON, or whose top-level `clients`,
//! `groups` or `roles` is not an array, is an error rather than an empty configuration — running
//! on it would overwrite the user's data at the next save.

use std::collections::HashSet;

use crate::json::{self, Json};
use crate::model::{
    Acl, AclType, Client, DEFAULT_ACCESS_KEYS, DefaultAccess, Group, Membership, Model, Mutation, Role, clamp_priority,
    insert_membership,
};
use crate::password::PasswordHash;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Json(#[from] json::ParseError),
    #[error("top-level '{0}' is not an array")]
    NotAnArray(&'static str),
    #[error("the document is not a JSON object")]
    NotAnObject,
}

/// Something the loader skipped or dropped, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning(pub String);

fn string(v: &Json, key: &str) -> Option<String> {
    v.get(key).and_then(Json::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int_or(v: &Json, key: &str, default: i32) -> i32 {
    v.get(key).and_then(Json::as_int).unwrap_or(default)
}

fn bool_or(v: &Json, key: &str, default: bool) -> bool {
    v.get(key).and_then(Json::as_bool).unwrap_or(default)
}

fn array<'a>(v: &'a Json, key: &str) -> &'a [Json] {
    v.get(key).and_then(Json::as_array).unwrap_or(&[])
}

/// Parses a role's `acls` array the way mosquitto does for the file, createRole and modifyRole:
/// unknown types, non-string and empty topics are skipped, the first of duplicate topics wins,
/// wrong-typed priority/allow become 0/false, priorities are capped at ±100000 (2.1).
///
/// The result is what [`Role::insert_acl`] one entry at a time gives (priority descending, ties
/// in array order), built with a hash set and one stable sort so that a large array costs
/// O(n log n), not O(n²).
pub fn acls_from_json(acls: &[Json], role: &mut Role) {
    let mut parsed: [Vec<Acl>; 6] = Default::default();
    for entry in acls {
        let Some(kind) = entry.get("acltype").and_then(Json::as_bytes) else { continue };
        let Some(topic) = entry.get("topic").and_then(Json::as_bytes) else { continue };
        let Some(acl_type) = AclType::parse(kind) else { continue };
        if topic.is_empty() {
            continue;
        }
        parsed[acl_type.index()].push(Acl {
            topic: String::from_utf8_lossy(topic).into_owned(),
            priority: clamp_priority(int_or(entry, "priority", 0)),
            allow: bool_or(entry, "allow", false),
        });
    }
    for (list, new) in role.acls.iter_mut().zip(parsed) {
        if new.is_empty() {
            continue;
        }
        let mut seen: HashSet<String> = list.iter().map(|a| a.topic.clone()).collect();
        list.extend(new.into_iter().filter(|acl| seen.insert(acl.topic.clone())));
        list.sort_by_key(|acl| std::cmp::Reverse(acl.priority));
    }
}

pub fn role_from_json(v: &Json) -> Option<Role> {
    let name = v.get("rolename")?.as_bytes()?;
    let mut role = Role::new(&String::from_utf8_lossy(name));
    role.textname = string(v, "textname");
    role.textdescription = string(v, "textdescription");
    role.allow_wildcard_subs = bool_or(v, "allowwildcardsubs", true);
    acls_from_json(array(v, "acls"), &mut role);
    Some(role)
}

/// A client's stored password, from `encoded_password` (2.1) or the 2.0 fields. A password that
/// cannot be decoded leaves the client without one (mosquitto 2.0 would drop the whole client).
fn password_from_json(v: &Json, warnings: &mut Vec<LoadWarning>, username: &str) -> Option<PasswordHash> {
    if let Some(encoded) = v.get("encoded_password").and_then(Json::as_bytes) {
        return match PasswordHash::parse(&String::from_utf8_lossy(encoded)) {
            Ok(hash) => Some(hash),
            Err(e) => {
                warnings.push(LoadWarning(format!("client '{username}': encoded_password ignored: {e}")));
                None
            }
        };
    }
    let salt = v.get("salt").and_then(Json::as_bytes)?;
    let password = v.get("password").and_then(Json::as_bytes)?;
    let iterations = v.get("iterations").and_then(Json::as_int).unwrap_or(-1);
    match PasswordHash::from_dynsec_fields(
        &String::from_utf8_lossy(password),
        &String::from_utf8_lossy(salt),
        iterations.into(),
    ) {
        Ok(hash) => Some(hash),
        Err(e) => {
            warnings.push(LoadWarning(format!("client '{username}': password ignored: {e}")));
            None
        }
    }
}

fn memberships(v: &Json, key: &str, name_key: &str) -> Vec<Membership> {
    let mut list = Vec::new();
    for entry in array(v, key) {
        if let Some(name) = entry.get(name_key).and_then(Json::as_bytes) {
            let name = String::from_utf8_lossy(name).into_owned();
            let priority = clamp_priority(int_or(entry, "priority", -1));
            insert_membership(&mut list, Membership { name, priority });
        }
    }
    list
}

/// A client entry (its `roles` included; group membership lives on groups).
pub fn client_from_json(v: &Json, warnings: &mut Vec<LoadWarning>) -> Option<Client> {
    let username = String::from_utf8_lossy(v.get("username")?.as_bytes()?).into_owned();
    Some(Client {
        clientid: string(v, "clientid"),
        textname: string(v, "textname"),
        textdescription: string(v, "textdescription"),
        disabled: bool_or(v, "disabled", false),
        password: password_from_json(v, warnings, &username),
        roles: memberships(v, "roles", "rolename"),
        groups: Vec::new(),
        username,
    })
}

/// A group entry and its members `(username, priority)`.
pub fn group_from_json(v: &Json) -> Option<(Group, Vec<(String, i32)>)> {
    let name = String::from_utf8_lossy(v.get("groupname")?.as_bytes()?).into_owned();
    let group = Group {
        textname: string(v, "textname"),
        textdescription: string(v, "textdescription"),
        roles: memberships(v, "roles", "rolename"),
        members: Default::default(),
        name,
    };
    let members = array(v, "clients")
        .iter()
        .filter_map(|c| {
            let username = c.get("username")?.as_bytes()?;
            Some((String::from_utf8_lossy(username).into_owned(), clamp_priority(int_or(c, "priority", -1))))
        })
        .collect();
    Some((group, members))
}

pub fn default_access_from_json(v: &Json) -> DefaultAccess {
    let mut access = DefaultAccess::default();
    if let Some(obj) = v.get("defaultACLAccess").filter(|o| o.is_object()) {
        for (i, key) in DEFAULT_ACCESS_KEYS.iter().enumerate() {
            access.set(i, bool_or(obj, key, false));
        }
    }
    access
}

/// mosquitto 2.1's `changeIndex` (0 when absent or not a number, as 2.1 reads it).
pub fn change_index_from_json(v: &Json) -> i64 {
    match v.get("changeIndex") {
        // 2.1 casts the double; Rust's cast saturates where C's would be undefined.
        Some(Json::Number(n)) => *n as i64,
        _ => 0,
    }
}

fn section<'a>(doc: &'a Json, key: &'static str) -> Result<&'a [Json], FileError> {
    match doc.get(key) {
        None => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(FileError::NotAnArray(key)),
    }
}

/// Loads a whole file. An empty file is an empty configuration (as in mosquitto).
pub fn load(bytes: &[u8]) -> Result<(Model, Vec<LoadWarning>), FileError> {
    let mut model = Model::default();
    let mut warnings = Vec::new();
    if bytes.is_empty() {
        return Ok((model, warnings));
    }
    let doc = json::parse(bytes)?;
    if !doc.is_object() {
        return Err(FileError::NotAnObject);
    }
    let (roles, clients, groups) = (section(&doc, "roles")?, section(&doc, "clients")?, section(&doc, "groups")?);
    model.default_access = default_access_from_json(&doc);
    model.change_index = change_index_from_json(&doc);

    // Load order as mosquitto: roles, clients, groups (groups resolve members).
    for entry in roles.iter().filter(|e| e.is_object()) {
        match role_from_json(entry) {
            Some(role) if model.roles.contains_key(&role.name) => {
                warnings.push(LoadWarning(format!("duplicate role '{}' ignored", role.name)))
            }
            Some(role) => {
                model.apply(Mutation::PutRole(role));
            }
            None => warnings.push(LoadWarning("role without a string 'rolename' ignored".into())),
        }
    }
    for entry in clients.iter().filter(|e| e.is_object()) {
        match client_from_json(entry, &mut warnings) {
            Some(client) if model.clients.contains_key(&client.username) => {
                warnings.push(LoadWarning(format!("duplicate client '{}' ignored", client.username)))
            }
            Some(client) => {
                for m in client.roles.iter().filter(|m| !model.roles.contains_key(&m.name)) {
                    warnings
                        .push(LoadWarning(format!("client '{}': unknown role '{}' dropped", client.username, m.name)));
                }
                model.apply(Mutation::PutClient(client));
            }
            None => warnings.push(LoadWarning("client without a string 'username' ignored".into())),
        }
    }
    for entry in groups.iter().filter(|e| e.is_object()) {
        match group_from_json(entry) {
            Some((group, _)) if model.groups.contains_key(&group.name) => {
                warnings.push(LoadWarning(format!("duplicate group '{}' ignored", group.name)))
            }
            Some((group, members)) => {
                let name = group.name.clone();
                for m in group.roles.iter().filter(|m| !model.roles.contains_key(&m.name)) {
                    warnings.push(LoadWarning(format!("group '{name}': unknown role '{}' dropped", m.name)));
                }
                model.apply(Mutation::PutGroup(group));
                for (username, priority) in members {
                    let already = model.groups[&name].members.contains_key(&username);
                    if !model.clients.contains_key(&username) {
                        warnings.push(LoadWarning(format!("group '{name}': unknown client '{username}' dropped")));
                    } else if !already {
                        model.apply(Mutation::SetMembership {
                            group: name.clone(),
                            username,
                            priority: Some(priority),
                        });
                    }
                }
            }
            None => warnings.push(LoadWarning("group without a string 'groupname' ignored".into())),
        }
    }
    if let Some(anon) = doc.get("anonymousGroup").and_then(Json::as_bytes) {
        let anon = String::from_utf8_lossy(anon).into_owned();
        if model.groups.contains_key(&anon) {
            model.anonymous_group = Some(anon);
        } else {
            warnings.push(LoadWarning(format!("anonymousGroup '{anon}' does not exist; ignored")));
        }
    }
    Ok((model, warnings))
}

fn push_opt(obj: &mut Json, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        obj.push(key, Json::str(v));
    }
}

/// `[{"rolename": R, "priority": P?}]` with the -1 default omitted, as every mosquitto output.
pub fn memberships_json(list: &[Membership], name_key: &str) -> Json {
    Json::Array(
        list.iter()
            .map(|m| {
                let mut o = Json::object().with(name_key, Json::str(&m.name));
                if m.priority != -1 {
                    o.push("priority", Json::int(m.priority.into()));
                }
                o
            })
            .collect(),
    )
}

/// The ACL list grouped by type in the fixed order (the form of getRole and of the file).
pub fn acls_json(role: &Role) -> Json {
    let mut out = Vec::new();
    for acl_type in AclType::ALL {
        for acl in &role.acls[acl_type.index()] {
            out.push(
                Json::object()
                    .with("acltype", Json::str(acl_type.name()))
                    .with("topic", Json::str(&acl.topic))
                    .with("priority", Json::int(acl.priority.into()))
                    .with("allow", Json::Bool(acl.allow)),
            );
        }
    }
    Json::Array(out)
}

pub fn role_json(role: &Role) -> Json {
    let mut o = Json::object().with("rolename", Json::str(&role.name));
    push_opt(&mut o, "textname", &role.textname);
    push_opt(&mut o, "textdescription", &role.textdescription);
    if !role.allow_wildcard_subs {
        o.push("allowwildcardsubs", Json::Bool(false));
    }
    o.with("acls", acls_json(role))
}

/// A client as stored: 2.0 password fields when mosquitto 2.0 can use them, else 2.1's
/// `encoded_password` (2.0 then loads the client without a password rather than dropping it).
pub fn client_json(client: &Client) -> Json {
    let mut o = Json::object().with("username", Json::str(&client.username));
    push_opt(&mut o, "clientid", &client.clientid);
    push_opt(&mut o, "textname", &client.textname);
    push_opt(&mut o, "textdescription", &client.textdescription);
    if client.disabled {
        o.push("disabled", Json::Bool(true));
    }
    o.push("roles", memberships_json(&client.roles, "rolename"));
    match &client.password {
        Some(hash) if hash.loadable_by_mosquitto_2_0() => {
            if let Some((password, salt, iterations)) = hash.dynsec_fields() {
                o.push("password", Json::str(&password));
                o.push("salt", Json::str(&salt));
                o.push("iterations", Json::int(iterations.into()));
            }
        }
        Some(hash) => o.push("encoded_password", Json::str(&hash.encode())),
        None => {}
    }
    o
}

/// A group as stored: members with their priority (omitted when -1).
pub fn group_json(group: &Group) -> Json {
    let mut o = Json::object().with("groupname", Json::str(&group.name));
    push_opt(&mut o, "textname", &group.textname);
    push_opt(&mut o, "textdescription", &group.textdescription);
    o.push("roles", memberships_json(&group.roles, "rolename"));
    let clients = group
        .members
        .iter()
        .map(|(username, priority)| {
            let mut c = Json::object().with("username", Json::str(username));
            if *priority != -1 {
                c.push("priority", Json::int((*priority).into()));
            }
            c
        })
        .collect();
    o.with("clients", Json::Array(clients))
}

pub fn default_access_json(access: &DefaultAccess) -> Json {
    let mut o = Json::object();
    for (i, key) in DEFAULT_ACCESS_KEYS.iter().enumerate() {
        o.push(key, Json::Bool(access.get(i)));
    }
    o
}

/// The whole configuration in mosquitto 2.0's layout and key order, cJSON-pretty-printed, with
/// 2.1's `changeIndex` first (where 2.1 writes it) once there is one.
pub fn save(model: &Model) -> Vec<u8> {
    let mut doc = Json::object();
    if model.change_index != 0 {
        doc.push("changeIndex", Json::int(model.change_index));
    }
    doc = doc
        .with("defaultACLAccess", default_access_json(&model.default_access))
        .with("clients", Json::Array(model.clients.values().map(client_json).collect()))
        .with("groups", Json::Array(model.groups.values().map(group_json).collect()));
    if let Some(anon) = &model.anonymous_group {
        doc.push("anonymousGroup", Json::str(anon));
    }
    doc.push("roles", Json::Array(model.roles.values().map(role_json).collect()));
    doc.to_pretty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The batch construction gives exactly what inserting the entries one by one gives,
        /// over an empty role and over one that already has ACLs.
        #[test]
        fn acls_from_json_equals_one_by_one_insertion(
            existing in prop::collection::vec((0usize..6, 0u8..6, -2i32..3), 0..8),
            entries in prop::collection::vec((0usize..7, 0u8..6, -2i32..3, any::<bool>()), 0..30),
        ) {
            let mut role = Role::new("r");
            for (t, topic, priority) in existing {
                role.insert_acl(AclType::ALL[t], Acl { topic: topic.to_string(), priority, allow: true });
            }
            let mut expected = role.clone();
            let json: Vec<Json> = entries
                .iter()
                .map(|(t, topic, priority, allow)| {
                    let kind = AclType::ALL.get(*t).map_or("bogus", |t| t.name());
                    Json::object()
                        .with("acltype", Json::str(kind))
                        .with("topic", Json::str(&topic.to_string()))
                        .with("priority", Json::int((*priority).into()))
                        .with("allow", Json::Bool(*allow))
                })
                .collect();
            for acl_type in AclType::ALL {
                for (t, topic, priority, allow) in &entries {
                    if *t == acl_type.index() {
                        expected.insert_acl(acl_type, Acl { topic: topic.to_string(), priority: *priority, allow: *allow });
                    }
                }
            }
            acls_from_json(&json, &mut role);
            prop_assert_eq!(role, expected);
        }
    }

    /// A client whose stored hash is beyond the cost limits loads without a password (as one
    /// whose hash cannot be decoded), with a warning naming the client and the limit.
    #[test]
    fn hashes_beyond_the_cost_limits_are_dropped_naming_the_client() {
        let file = br#"{"clients": [
            {"username": "slow", "password": "AAAA", "salt": "AAAAAAAAAAAAAAAA", "iterations": 3000000},
            {"username": "greedy", "encoded_password": "$argon2id$v=19$m=4194304,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
            {"username": "fine", "password": "AAAA", "salt": "AAAAAAAAAAAAAAAA", "iterations": 210000}]}"#;
        let (model, warnings) = load(file).unwrap();
        assert!(model.clients["slow"].password.is_none() && model.clients["greedy"].password.is_none());
        assert!(model.clients["fine"].password.is_some());
        assert_eq!(
            warnings,
            [
                LoadWarning(
                    "client 'slow': password ignored: PBKDF2 iterations 3000000 above the limit of 2000000".into()
                ),
                LoadWarning(
                    "client 'greedy': encoded_password ignored: argon2id memory m=4194304 KiB above the limit of 262144"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn loads_leniently_like_mosquitto() {
        let file = br#"{
            "defaultACLAccess": {"publishClientSend": true, "subscribe": "yes"},
            "roles": [{"rolename": "r", "ACLS": [
                {"acltype": "PUBLISHCLIENTSEND", "topic": "a", "priority": 1, "allow": true},
                {"acltype": "publishClientSend", "topic": "a", "allow": false},
                {"acltype": "bogus", "topic": "b"},
                {"acltype": "subscribeLiteral", "topic": 5}]}, {"rolename": "r"}, {"x": 1}, 7],
            "clients": [{"UserName": "u", "textName": "T", "roles": [{"rolename": "r"}, {"rolename": "missing"}],
                         "password": "not base64!", "salt": "AAAA", "iterations": 101},
                        {"username": "u"}, {"username": 3}],
            "groups": [{"groupname": "g", "clients": [{"username": "u", "priority": 4}, {"username": "nobody"}]}],
            "anonymousGroup": "g"
        }"#;
        let (model, warnings) = load(file).unwrap();
        model.check_invariants().unwrap();
        assert!(model.default_access.publish_client_send && !model.default_access.subscribe);
        let role = &model.roles["r"];
        assert_eq!(role.acl_count(), 1);
        assert!(role.acls[0][0].allow);
        let client = &model.clients["u"];
        assert_eq!(client.textname.as_deref(), Some("T"));
        assert_eq!(client.roles.len(), 1);
        assert!(client.password.is_none());
        assert_eq!(client.groups, vec![Membership { name: "g".into(), priority: 4 }]);
        assert_eq!(model.anonymous_group.as_deref(), Some("g"));
        assert!(warnings.len() >= 5, "{warnings:?}");
    }

    #[test]
    fn structural_errors_are_refused() {
        assert!(matches!(load(b"{\"clients\": {}}"), Err(FileError::NotAnArray("clients"))));
        assert!(matches!(load(b"[1]"), Err(FileError::NotAnObject)));
        assert!(load(b"{not json").is_err());
        assert_eq!(load(b"").unwrap().0, Model::default());
    }

    #[test]
    fn save_then_load_is_lossless() {
        let (model, _) = load(br#"{"changeIndex":42,"roles":[{"rolename":"r","textname":"t","allowwildcardsubs":false,"acls":[{"acltype":"subscribePattern","topic":"x/#","priority":-3,"allow":true}]}],
            "clients":[{"username":"u","clientid":"c","disabled":true,"roles":[{"rolename":"r","priority":2}],
              "encoded_password":"$7$101$AAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}],
            "groups":[{"groupname":"g","roles":[{"rolename":"r"}],"clients":[{"username":"u"}]}],"anonymousGroup":"g"}"#)
        .unwrap();
        assert_eq!(model.change_index, 42);
        assert!(!model.roles["r"].allow_wildcard_subs);
        let saved = save(&model);
        let (reloaded, warnings) = load(&saved).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(reloaded, model);
    }

    /// A file as mosquitto 2.1.2 writes it: `changeIndex` first, `encoded_password` (`$7$` with a
    /// 64-byte salt), `allowwildcardsubs` on every role, `priority` on every ACL.
    #[test]
    fn loads_a_file_written_by_mosquitto_2_1() {
        let file = br#"{
	"changeIndex":	2,
	"defaultACLAccess":	{"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
	"clients":	[{
			"username":	"u",
			"roles":	[{"rolename": "w"}],
			"encoded_password":	"$7$1000$YA1qJMJMIV+NVkKCUDWFEexhYSX5guPtbfJ0d7WCcjGNxL0Ihvmli+QzGz6dlgePkl6gTo/rttWZ8BhkBULXuw==$HZ4nXzDPZ+jEBIWFVuOF9IJ4H5gsGMyZ3r+bwHsGiuP+L28Ttu7X49kVxQxPNMAgOrgkZ+dXgsFbRm0ScEkQkA=="
		}],
	"groups":	[],
	"roles":	[{"rolename": "w", "allowwildcardsubs": false, "acls": [
			{"acltype": "subscribePattern", "topic": "a/#", "priority": 0, "allow": true}]},
		{"rolename": "x", "allowwildcardsubs": true, "acls": []}]
}"#;
        let (model, warnings) = load(file).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(model.change_index, 2);
        assert!(!model.roles["w"].allow_wildcard_subs && model.roles["x"].allow_wildcard_subs);
        let hash = model.clients["u"].password.as_ref().expect("the $7$ hash with a 64-byte salt loads");
        assert!(hash.verify(b"p"), "mosquitto 2.1.2 hashed the password 'p'");
        assert!(!hash.verify(b"q"));
        // Written back: 2.1's additions kept where they mean something, nothing else new.
        let saved = String::from_utf8(save(&model)).unwrap();
        assert!(saved.starts_with("{\n\t\"changeIndex\":\t2,\n"), "{saved}");
        assert_eq!(saved.matches("allowwildcardsubs").count(), 1, "{saved}");
    }

    /// 2.1 caps priorities at ±100000 and skips empty ACL topics when it loads a file.
    #[test]
    fn priorities_are_capped_and_empty_topics_skipped_on_load() {
        let file = br#"{"roles":[{"rolename":"r","acls":[
                {"acltype":"publishClientSend","topic":"","allow":true},
                {"acltype":"publishClientSend","topic":"a","priority":2000000,"allow":true},
                {"acltype":"publishClientSend","topic":"b","priority":-2000000,"allow":true}]}],
            "clients":[{"username":"u","roles":[{"rolename":"r","priority":300000}]}],
            "groups":[{"groupname":"g","roles":[{"rolename":"r","priority":-300000}],
                       "clients":[{"username":"u","priority":400000}]}]}"#;
        let (model, _) = load(file).unwrap();
        let priorities: Vec<(String, i32)> =
            model.roles["r"].acls[0].iter().map(|a| (a.topic.clone(), a.priority)).collect();
        assert_eq!(priorities, [("a".to_owned(), 100_000), ("b".to_owned(), -100_000)]);
        assert_eq!(model.clients["u"].roles[0].priority, 100_000);
        assert_eq!(model.groups["g"].roles[0].priority, -100_000);
        assert_eq!(model.groups["g"].members["u"], 100_000);
        assert_eq!(model.change_index, 0);
        assert!(!String::from_utf8(save(&model)).unwrap().contains("changeIndex"));
    }
}
