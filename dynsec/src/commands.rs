//! The `$CONTROL/dynamic-security/v1` command protocol (compat §1): envelope parsing, the 32
//! commands with mosquitto's check order and exact error strings, and the response objects.
//!
//! Semantics are mosquitto 2.0.20's, i.e. 2.0.11 plus its fixes: `modifyClient`/`modifyGroup`
//! validate everything before changing anything, deleting the anonymous group is refused instead
//! of crashing the broker, duplicate ACLs in `createRole`/`modifyRole` keep the first. On top of
//! that, mosquitto 2.1.2's additions (docs/known-differences.md, "mosquitto 2.0.11 vs 2.1.2"):
//! `getDetails` and `changeIndex`, a role's `allowwildcardsubs`, modifyRole kicking the role's
//! holders, "Empty …" errors for empty names at creation, and priorities capped at 100000 — on
//! both sides or only above, command by command, as 2.1.2 does it. Commands run
//! in order and each sees the previous ones' effects; there is no rollback of earlier commands
//! when a later one fails.
//!
//! The processor only changes the [`Model`] through [`Mutation`]s and records their inverses, so
//! the caller (the engine) can persist the batch and roll it back if persistence fails. Password
//! hashing is done before the batch runs, in parallel, by [`prepare_passwords`]: it is the only
//! expensive part and must not run while the model is locked.

use std::collections::{BTreeSet, HashSet};

use crate::connections::{ConnectionDirectory, ConnectionSnapshot};
use crate::file::{acls_from_json, acls_json, memberships_json};
use crate::json::{self, Json};
use crate::model::{
    Acl, AclType, Affected, Client, DEFAULT_ACCESS_KEYS, Group, Membership, Model, Mutation, PRIORITY_MAX, Role,
    clamp_priority, insert_membership,
};
use crate::password::{HashPolicy, PasswordHash};
use crate::topic::{valid_filter, valid_mqtt_utf8};

/// Connected clients to disconnect once the reply is out (compat §3.7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kicks {
    pub users: BTreeSet<String>,
    pub anonymous: bool,
}

impl Kicks {
    fn add(&mut self, affected: Affected) {
        self.users.extend(affected.users);
        self.anonymous |= affected.anonymous;
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.anonymous
    }
}

/// Who sent the request, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    pub client_id: String,
    pub username: Option<String>,
}

/// Everything one control message produced.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// `{"responses":[…]}`, compact JSON.
    pub response: Vec<u8>,
    pub kicks: Kicks,
    /// The changes made, in order (what the store must persist).
    pub mutations: Vec<Mutation>,
    /// Undo lists, one per mutation, in the same order.
    pub undo: Vec<Vec<Mutation>>,
    /// Principals whose ACLs or credentials changed.
    pub affected: Affected,
}

impl BatchOutcome {
    /// Reverts every change of the batch, newest first.
    pub fn roll_back(&mut self, model: &mut Model) {
        while let Some(undo) = self.undo.pop() {
            for m in undo {
                model.apply(m);
            }
        }
        self.mutations.clear();
    }
}

/// Caps on what one control message may ask for (docs/store.md, "Limits"). mosquitto has none;
/// without them one message of many ACL edits could hold the write lock for as long as it likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Commands in one `$CONTROL` message; a longer message is refused whole, before anything
    /// in it runs. The default equals the largest batch `dynsec-ctrl dynsec batch` sends.
    pub max_commands_per_message: usize,
    /// ACLs one role may hold (all six types together), enforced by addRoleACL, createRole and
    /// modifyRole. A role loaded from a file keeps what it has; it just cannot grow past this.
    pub max_acls_per_role: usize,
}

impl Limits {
    pub const DEFAULT_MAX_COMMANDS_PER_MESSAGE: usize = 10_000;
    pub const DEFAULT_MAX_ACLS_PER_ROLE: usize = 10_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_commands_per_message: Self::DEFAULT_MAX_COMMANDS_PER_MESSAGE,
            max_acls_per_role: Self::DEFAULT_MAX_ACLS_PER_ROLE,
        }
    }
}

/// The parsed envelope: either the command array or a top-level error reply.
pub enum Envelope {
    Commands(Vec<Json>),
    Invalid(String),
}

/// Parses a payload; a command array longer than `limits` allows is an envelope error.
pub fn parse_envelope(payload: &[u8], limits: Limits) -> Envelope {
    let Ok(doc) = json::parse(payload) else {
        return Envelope::Invalid("Payload not valid JSON".into());
    };
    match doc.get("commands") {
        Some(Json::Array(commands)) => match too_many_commands(commands.len(), limits) {
            Some(error) => Envelope::Invalid(error),
            None => Envelope::Commands(commands.clone()),
        },
        _ => Envelope::Invalid("Invalid/missing commands".into()),
    }
}

fn too_many_commands(count: usize, limits: Limits) -> Option<String> {
    (count > limits.max_commands_per_message)
        .then(|| format!("Too many commands (at most {} per message)", limits.max_commands_per_message))
}

fn too_many_acls(limits: Limits) -> String {
    format!("Too many ACLs in role (at most {})", limits.max_acls_per_role)
}

/// Case-insensitive command lookup; the canonical names are what replies carry.
const COMMANDS: [&str; 32] = [
    "setDefaultACLAccess",
    "getDefaultACLAccess",
    "getDetails",
    "createClient",
    "deleteClient",
    "setClientPassword",
    "setClientId",
    "modifyClient",
    "enableClient",
    "disableClient",
    "getClient",
    "listClients",
    "addClientRole",
    "removeClientRole",
    "createGroup",
    "deleteGroup",
    "modifyGroup",
    "getGroup",
    "listGroups",
    "addGroupClient",
    "removeGroupClient",
    "addGroupRole",
    "removeGroupRole",
    "setAnonymousGroup",
    "getAnonymousGroup",
    "createRole",
    "deleteRole",
    "modifyRole",
    "getRole",
    "listRoles",
    "addRoleACL",
    "removeRoleACL",
];

fn canonical(name: &[u8]) -> Option<&'static str> {
    COMMANDS.into_iter().find(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a successful `command` counts in `changeIndex`: mosquitto 2.1.2 adds one for every
/// command that succeeds and may change something, whether or not it did (enabling an enabled
/// client counts), and nothing for reads or errors.
fn counts_as_change(command: &str) -> bool {
    !matches!(
        command,
        "getDefaultACLAccess"
            | "getDetails"
            | "getClient"
            | "listClients"
            | "getGroup"
            | "listGroups"
            | "getAnonymousGroup"
            | "getRole"
            | "listRoles"
    )
}

/// A priority as 2.1.2 caps it where it only checks the upper bound (addClientRole, the `roles`
/// of create/modify commands, the `groups` of createClient/modifyClient).
fn capped_above(priority: i32) -> i32 {
    priority.min(PRIORITY_MAX)
}

/// The password a command will need hashed, if any (same extraction rules as the commands).
fn password_to_hash(command: &Json) -> Option<&[u8]> {
    let name = canonical(command.get("command")?.as_bytes()?)?;
    let password = command.get("password")?.as_bytes()?;
    match name {
        "createClient" => Some(password),
        "setClientPassword" | "modifyClient" if !password.is_empty() => Some(password),
        _ => None,
    }
}

/// Hashes every password the batch carries, spread over all cores. The result is indexed like
/// `commands`; the processor falls back to hashing inline for anything missing.
pub fn prepare_passwords(commands: &[Json], policy: HashPolicy) -> Vec<Option<PasswordHash>> {
    let jobs: Vec<(usize, &[u8])> =
        commands.iter().enumerate().filter_map(|(i, c)| password_to_hash(c).map(|p| (i, p))).collect();
    let mut out: Vec<Option<PasswordHash>> = vec![None; commands.len()];
    if jobs.is_empty() {
        return out;
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
    let chunk = jobs.len().div_ceil(workers);
    let results: Vec<Vec<(usize, Option<PasswordHash>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|(i, pw)| (*i, PasswordHash::new(pw, policy).ok())).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    for (i, hash) in results.into_iter().flatten() {
        out[i] = hash;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Field access with mosquitto's type rules (compat §1.3).

/// `json_get_string(…, optional=false)`: present and a string.
fn required_str<'a>(cmd: &'a Json, key: &str) -> Option<&'a [u8]> {
    cmd.get(key)?.as_bytes()
}

/// `json_get_string(…, optional=true)`: absent is fine, present-but-not-a-string is an error.
fn optional_str<'a>(cmd: &'a Json, key: &str) -> Result<Option<&'a [u8]>, ()> {
    match cmd.get(key) {
        None => Ok(None),
        Some(v) => v.as_bytes().map(Some).ok_or(()),
    }
}

/// Optional int: absent or wrong type silently becomes the default.
fn int_or(cmd: &Json, key: &str, default: i32) -> i32 {
    cmd.get(key).and_then(Json::as_int).unwrap_or(default)
}

fn bool_or(cmd: &Json, key: &str, default: bool) -> bool {
    cmd.get(key).and_then(Json::as_bool).unwrap_or(default)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A validated name: required string, then the MQTT UTF-8 check.
fn name<'a>(cmd: &'a Json, key: &str, missing: &'static str, bad_utf8: &'static str) -> Result<&'a str, &'static str> {
    let bytes = required_str(cmd, key).ok_or(missing)?;
    valid_mqtt_utf8(bytes).ok_or(bad_utf8)
}

fn username(cmd: &Json) -> Result<&str, &'static str> {
    name(cmd, "username", "Invalid/missing username", "Username not valid UTF-8")
}

fn groupname(cmd: &Json) -> Result<&str, &'static str> {
    name(cmd, "groupname", "Invalid/missing groupname", "Group name not valid UTF-8")
}

fn rolename(cmd: &Json) -> Result<&str, &'static str> {
    name(cmd, "rolename", "Invalid/missing rolename", "Role name not valid UTF-8")
}

/// The name of an entity being created: as [`name`], and refused when empty (mosquitto 2.1),
/// between the type check and the UTF-8 check.
fn new_name<'a>(cmd: &'a Json, key: &str, empty: &'static str) -> Result<&'a str, &'static str> {
    let (missing, bad_utf8) = match key {
        "username" => ("Invalid/missing username", "Username not valid UTF-8"),
        "groupname" => ("Invalid/missing groupname", "Group name not valid UTF-8"),
        _ => ("Invalid/missing rolename", "Role name not valid UTF-8"),
    };
    let bytes = required_str(cmd, key).ok_or(missing)?;
    if bytes.is_empty() {
        return Err(empty);
    }
    valid_mqtt_utf8(bytes).ok_or(bad_utf8)
}

enum RoleListError {
    NotFound,
    Invalid,
}

/// `dynsec_rolelist__load_from_json`: `Ok(None)` when there is no `roles` key.
fn role_list(model: &Model, cmd: &Json) -> Result<Option<Vec<Membership>>, RoleListError> {
    let Some(roles) = cmd.get("roles") else { return Ok(None) };
    let Some(entries) = roles.as_array() else { return Err(RoleListError::Invalid) };
    let mut list = Vec::new();
    for entry in entries {
        let Some(name) = entry.get("rolename").and_then(Json::as_bytes) else {
            return Err(RoleListError::Invalid);
        };
        let name = text(name);
        if !model.roles.contains_key(&name) {
            return Err(RoleListError::NotFound);
        }
        insert_membership(&mut list, Membership { name, priority: capped_above(int_or(entry, "priority", -1)) });
    }
    Ok(Some(list))
}

/// Response for listClients/listGroups/listRoles, with mosquitto's count/offset quirks
/// (`count: 0` returns one element; negative count means all).
fn paged<T>(items: impl Iterator<Item = T>, mut count: i32, offset: i32, mut render: impl FnMut(T) -> Json) -> Json {
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        if i64::try_from(i).unwrap_or(i64::MAX) >= i64::from(offset) {
            out.push(render(item));
            if count >= 0 {
                count -= 1;
                if count <= 0 {
                    break;
                }
            }
        }
    }
    Json::Array(out)
}

/// getClient / verbose listClients object.
pub fn client_info(client: &Client) -> Json {
    let mut o = Json::object().with("username", Json::str(&client.username));
    for (key, value) in
        [("clientid", &client.clientid), ("textname", &client.textname), ("textdescription", &client.textdescription)]
    {
        if let Some(v) = value {
            o.push(key, Json::str(v));
        }
    }
    if client.disabled {
        o.push("disabled", Json::Bool(true));
    }
    o.with("roles", memberships_json(&client.roles, "rolename"))
        .with("groups", memberships_json(&client.groups, "groupname"))
}

/// getGroup / verbose listGroups object: `clients` before `roles`, members without priority.
pub fn group_info(group: &Group) -> Json {
    let mut o = Json::object().with("groupname", Json::str(&group.name));
    for (key, value) in [("textname", &group.textname), ("textdescription", &group.textdescription)] {
        if let Some(v) = value {
            o.push(key, Json::str(v));
        }
    }
    let clients = group.members.keys().map(|u| Json::object().with("username", Json::str(u))).collect();
    o.with("clients", Json::Array(clients)).with("roles", memberships_json(&group.roles, "rolename"))
}

/// getRole / verbose listRoles object, with 2.1's `allowwildcardsubs` before the ACLs.
pub fn role_info(role: &Role) -> Json {
    let mut o = Json::object().with("rolename", Json::str(&role.name));
    for (key, value) in [("textname", &role.textname), ("textdescription", &role.textdescription)] {
        if let Some(v) = value {
            o.push(key, Json::str(v));
        }
    }
    o.with("allowwildcardsubs", Json::Bool(role.allow_wildcard_subs)).with("acls", acls_json(role))
}

type CommandResult = Result<Option<Json>, &'static str>;

/// A command's error: one of mosquitto's fixed strings, or one naming a limit (which carries its
/// configured value).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CommandError {
    Fixed(&'static str),
    Limit(String),
}

impl CommandError {
    fn text(&self) -> &str {
        match self {
            CommandError::Fixed(s) => s,
            CommandError::Limit(s) => s,
        }
    }
}

impl From<&'static str> for CommandError {
    fn from(s: &'static str) -> Self {
        CommandError::Fixed(s)
    }
}

/// The result of the commands that enforce a limit.
type LimitedResult = Result<Option<Json>, CommandError>;

/// Runs the commands of one control message against the model.
pub struct Processor<'a> {
    model: &'a mut Model,
    policy: HashPolicy,
    prepared: Vec<Option<PasswordHash>>,
    outcome: BatchOutcome,
    /// The error message every changing command gets when persistence has failed (see
    /// [`Processor::refuse_changes`]).
    refusal: Option<String>,
    admin: Admin,
    limits: Limits,
    /// Roles whose holders are already in `outcome.affected` / `outcome.kicks`, valid until a
    /// change that can alter who holds a role. Without them every ACL edit would scan all clients
    /// and groups twice: a message of many edits to a widely held role took seconds.
    holders_affected: HashSet<String>,
    holders_kicked: HashSet<String>,
    /// Successful changing commands so far, added to the model's `changeIndex` by one mutation at
    /// the end of the batch (one per command would end the holder caches above at every command).
    changes_counted: i64,
    /// Where getClient / verbose listClients find a client's live connections (the broker's),
    /// and what it said, asked at most once per message.
    connections: Option<&'a dyn ConnectionDirectory>,
    connection_snapshot: std::cell::OnceCell<ConnectionSnapshot>,
}

impl<'a> Processor<'a> {
    pub fn new(model: &'a mut Model, policy: HashPolicy, prepared: Vec<Option<PasswordHash>>, admin: Admin) -> Self {
        Processor {
            model,
            policy,
            prepared,
            outcome: BatchOutcome::default(),
            refusal: None,
            admin,
            limits: Limits::default(),
            holders_affected: HashSet::new(),
            holders_kicked: HashSet::new(),
            changes_counted: 0,
            connections: None,
            connection_snapshot: std::cell::OnceCell::new(),
        }
    }

    /// Reports live connections from `directory` in getClient and verbose listClients.
    pub fn with_connections(mut self, directory: Option<&'a dyn ConnectionDirectory>) -> Self {
        self.connections = directory;
        self
    }

    /// getClient / verbose listClients object, with 2.1's `connections` last when known.
    fn client_json(&self, client: &Client) -> Json {
        let info = client_info(client);
        match self.connections {
            Some(directory) => {
                let snapshot =
                    self.connection_snapshot.get_or_init(|| ConnectionSnapshot::new(directory.known_connections()));
                info.with("connections", snapshot.json(&client.username, client.clientid.as_deref()))
            }
            None => info,
        }
    }

    /// Enforces `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Re-run mode after a failed save: each command that would change something is undone at
    /// once and answered with `message`; reads still answer from the (unchanged) state.
    pub fn refuse_changes(mut self, message: String) -> Self {
        self.refusal = Some(message);
        self
    }

    /// Applies and records a change; a no-op (nothing to undo) is not recorded, so it costs no
    /// disk write. Returns whether anything changed.
    fn apply(&mut self, mutation: Mutation) -> bool {
        // A change of a role's content leaves its holders as they are; anything else may not.
        let content_of = match &mutation {
            Mutation::PutRole(role) => Some(role.name.clone()),
            Mutation::AddAcl { role, .. } | Mutation::RemoveAcl { role, .. } => Some(role.clone()),
            _ => None,
        };
        let (undo, affected) = match &content_of {
            Some(role) if self.holders_affected.contains(role) => {
                (self.model.apply_to_known_holders(mutation.clone()), Affected::default())
            }
            _ => self.model.apply(mutation.clone()),
        };
        if undo.is_empty() {
            return false;
        }
        match content_of {
            Some(role) => {
                self.holders_affected.insert(role);
            }
            None => self.forget_holders(),
        }
        self.outcome.mutations.push(mutation);
        self.outcome.undo.push(undo);
        self.outcome.affected.merge(affected);
        true
    }

    fn forget_holders(&mut self) {
        self.holders_affected.clear();
        self.holders_kicked.clear();
    }

    fn kick_user(&mut self, username: &str) {
        self.outcome.kicks.users.insert(username.to_owned());
    }

    fn kick_group(&mut self, group: &str) {
        let principals = self.model.group_principals(group);
        self.outcome.kicks.add(principals);
    }

    fn kick_role(&mut self, role: &str) {
        if self.holders_kicked.insert(role.to_owned()) {
            let principals = self.model.role_principals(role);
            self.outcome.kicks.add(principals);
        }
    }

    /// Processes a whole envelope payload.
    pub fn run_payload(self, payload: &[u8]) -> BatchOutcome {
        match parse_envelope(payload, self.limits) {
            Envelope::Invalid(error) => BatchOutcome { response: envelope_error(&error), ..Default::default() },
            Envelope::Commands(commands) => self.run(&commands),
        }
    }

    /// Processes the command array (compat §1.2). An array longer than the limit is refused
    /// whole, as [`parse_envelope`] does.
    pub fn run(mut self, commands: &[Json]) -> BatchOutcome {
        if let Some(error) = too_many_commands(commands.len(), self.limits) {
            return BatchOutcome { response: envelope_error(&error), ..Default::default() };
        }
        let mut replies = Vec::with_capacity(commands.len());
        // mosquitto keeps one correlation-data variable across the loop; element-level errors echo
        // whatever the previous command left in it.
        let mut correlation: Option<Vec<u8>> = None;
        for (index, cmd) in commands.iter().enumerate() {
            if !cmd.is_object() {
                replies.push(reply("Unknown command", Err("Command not an object".into()), correlation.as_deref()));
                continue;
            }
            let Some(sent_name) = required_str(cmd, "command") else {
                replies.push(reply("Unknown command", Err("Missing command".into()), correlation.as_deref()));
                continue;
            };
            correlation = match optional_str(cmd, "correlationData") {
                Ok(c) => c.map(<[u8]>::to_vec),
                Err(()) => {
                    let r = Json::object()
                        .with("command", Json::String(sent_name.to_vec()))
                        .with("error", Json::str("Invalid correlationData data type."));
                    replies.push(r);
                    break;
                }
            };
            let Some(command) = canonical(sent_name) else {
                let r = Json::object()
                    .with("command", Json::String(sent_name.to_vec()))
                    .with("error", Json::str("Unknown command"));
                replies.push(with_correlation(r, correlation.as_deref()));
                continue;
            };
            let changes_before = self.outcome.mutations.len();
            // Only a refused change needs its kicks undone; copying them for every command made a
            // message that kicks many clients quadratic.
            let kicks_before = self.refusal.is_some().then(|| self.outcome.kicks.clone());
            let mut result = self.dispatch(command, cmd, index);
            let mut refused = None;
            if let Some(message) = &self.refusal
                && self.outcome.mutations.len() > changes_before
            {
                let undo: Vec<_> = self.outcome.undo.drain(changes_before..).collect();
                for list in undo.into_iter().rev() {
                    for m in list {
                        self.model.apply(m);
                    }
                }
                self.outcome.mutations.truncate(changes_before);
                if let Some(kicks) = kicks_before {
                    self.outcome.kicks = kicks;
                }
                // (Field by field: `message` still borrows `self.refusal`.)
                self.holders_affected.clear();
                self.holders_kicked.clear();
                refused = Some(message.clone());
                result = Err(CommandError::Fixed(""));
            }
            if result.is_ok() && refused.is_none() && self.refusal.is_none() && counts_as_change(command) {
                self.changes_counted += 1;
            }
            audit(&self.admin, command, cmd, &result, refused.as_deref());
            let r = match refused {
                Some(message) => Json::object().with("command", Json::str(command)).with("error", Json::str(&message)),
                None => reply_object(command, &result),
            };
            replies.push(with_correlation(r, correlation.as_deref()));
        }
        if self.changes_counted > 0 {
            let index = self.model.change_index.saturating_add(self.changes_counted);
            self.apply(Mutation::SetChangeIndex(index));
        }
        self.outcome.response = envelope(replies);
        self.outcome
    }

    fn password_for(&mut self, index: usize, password: &[u8]) -> Result<PasswordHash, &'static str> {
        match self.prepared.get_mut(index).and_then(Option::take) {
            Some(hash) => Ok(hash),
            None => PasswordHash::new(password, self.policy).map_err(|_| "Internal error"),
        }
    }

    fn dispatch(&mut self, command: &'static str, cmd: &Json, index: usize) -> LimitedResult {
        let result = match command {
            "setDefaultACLAccess" => self.set_default_acl_access(cmd),
            "getDefaultACLAccess" => self.get_default_acl_access(),
            "getDetails" => self.get_details(),
            "createClient" => self.create_client(cmd, index),
            "deleteClient" => self.delete_client(cmd),
            "setClientPassword" => self.set_client_password(cmd, index),
            "setClientId" => self.set_client_id(cmd),
            "modifyClient" => self.modify_client(cmd, index),
            "enableClient" => self.set_client_disabled(cmd, false),
            "disableClient" => self.set_client_disabled(cmd, true),
            "getClient" => self.get_client(cmd),
            "listClients" => self.list_clients(cmd),
            "addClientRole" => self.add_client_role(cmd),
            "removeClientRole" => self.remove_client_role(cmd),
            "createGroup" => self.create_group(cmd),
            "deleteGroup" => self.delete_group(cmd),
            "modifyGroup" => self.modify_group(cmd),
            "getGroup" => self.get_group(cmd),
            "listGroups" => self.list_groups(cmd),
            "addGroupClient" => self.add_group_client(cmd),
            "removeGroupClient" => self.remove_group_client(cmd),
            "addGroupRole" => self.add_group_role(cmd),
            "removeGroupRole" => self.remove_group_role(cmd),
            "setAnonymousGroup" => self.set_anonymous_group(cmd),
            "getAnonymousGroup" => self.get_anonymous_group(),
            "createRole" => return self.create_role(cmd),
            "deleteRole" => self.delete_role(cmd),
            "modifyRole" => return self.modify_role(cmd),
            "getRole" => self.get_role(cmd),
            "listRoles" => self.list_roles(cmd),
            "addRoleACL" => return self.add_role_acl(cmd),
            "removeRoleACL" => self.remove_role_acl(cmd),
            _ => Err("Unknown command"),
        };
        result.map_err(CommandError::Fixed)
    }

    // --- default access ----------------------------------------------------------------------

    fn set_default_acl_access(&mut self, cmd: &Json) -> CommandResult {
        let Some(entries) = cmd.get("acls").and_then(Json::as_array) else {
            return Err("Missing/invalid actions array");
        };
        let mut access = self.model.default_access;
        for entry in entries {
            let (Some(kind), Some(allow)) =
                (required_str(entry, "acltype"), entry.get("allow").and_then(Json::as_bool))
            else {
                continue;
            };
            if let Some(i) = DEFAULT_ACCESS_KEYS.iter().position(|k| k.as_bytes().eq_ignore_ascii_case(kind)) {
                access.set(i, allow);
            }
        }
        if access != self.model.default_access {
            self.apply(Mutation::SetDefaultAccess(access));
        }
        Ok(None)
    }

    fn get_default_acl_access(&mut self) -> CommandResult {
        let acls = DEFAULT_ACCESS_KEYS
            .iter()
            .enumerate()
            .map(|(i, key)| {
                Json::object()
                    .with("acltype", Json::str(key))
                    .with("allow", Json::Bool(self.model.default_access.get(i)))
            })
            .collect();
        Ok(Some(Json::object().with("acls", Json::Array(acls))))
    }

    /// mosquitto 2.1's `getDetails`: the counts and `changeIndex` (this batch's changes so far
    /// included, as 2.1 counts them at once).
    fn get_details(&mut self) -> CommandResult {
        let count = |n: usize| Json::int(n as i64);
        Ok(Some(
            Json::object()
                .with("clientCount", count(self.model.clients.len()))
                .with("groupCount", count(self.model.groups.len()))
                .with("roleCount", count(self.model.roles.len()))
                .with("changeIndex", Json::int(self.model.change_index.saturating_add(self.changes_counted))),
        ))
    }

    // --- clients -----------------------------------------------------------------------------

    fn create_client(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = new_name(cmd, "username", "Empty username")?;
        let password = optional_str(cmd, "password").map_err(|()| "Invalid/missing password")?;
        let clientid = optional_str(cmd, "clientid").map_err(|()| "Invalid/missing client id")?;
        let clientid = match clientid {
            Some(c) => Some(valid_mqtt_utf8(c).ok_or("Client ID not valid UTF-8")?),
            None => None,
        };
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        if self.model.clients.contains_key(username) {
            return Err("Client already exists");
        }
        let roles = match role_list(self.model, cmd) {
            Ok(roles) => roles.unwrap_or_default(),
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        };
        let mut groups: Vec<(String, i32)> = Vec::new();
        for entry in cmd.get("groups").and_then(Json::as_array).unwrap_or(&[]) {
            let Some(group) = entry.get("groupname").and_then(Json::as_bytes) else { continue };
            let group = text(group);
            if !self.model.groups.contains_key(&group) {
                return Err("Group not found");
            }
            if groups.iter().any(|(g, _)| *g == group) {
                return Err("Internal error");
            }
            groups.push((group, capped_above(int_or(entry, "priority", -1))));
        }
        let password = match password {
            Some(pw) => Some(self.password_for(index, pw)?),
            None => None,
        };
        self.apply(Mutation::PutClient(Client {
            username: username.to_owned(),
            clientid: clientid.filter(|c| !c.is_empty()).map(str::to_owned),
            textname: textname.map(text),
            textdescription: textdescription.map(text),
            disabled: false,
            password,
            roles,
            groups: Vec::new(),
        }));
        for (group, priority) in groups {
            self.apply(Mutation::SetMembership { group, username: username.to_owned(), priority: Some(priority) });
        }
        Ok(None)
    }

    fn delete_client(&mut self, cmd: &Json) -> CommandResult {
        // No UTF-8 check in mosquitto: bytes that are not UTF-8 simply name no client.
        let name = required_str(cmd, "username").ok_or("Invalid/missing username")?;
        let Some(username) = std::str::from_utf8(name).ok().filter(|u| self.model.clients.contains_key(*u)) else {
            return Err("Client not found");
        };
        let username = username.to_owned();
        self.apply(Mutation::DeleteClient(username.clone()));
        self.kick_user(&username);
        Ok(None)
    }

    fn existing_client(&self, username: &str) -> Result<Client, &'static str> {
        self.model.clients.get(username).cloned().ok_or("Client not found")
    }

    fn set_client_password(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = username(cmd)?;
        let password = required_str(cmd, "password").ok_or("Invalid/missing password")?;
        if password.is_empty() {
            return Err("Empty password is not allowed");
        }
        let mut client = self.existing_client(username)?;
        client.password = Some(self.password_for(index, password)?);
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    fn set_client_id(&mut self, cmd: &Json) -> CommandResult {
        let username = username(cmd)?;
        let clientid = optional_str(cmd, "clientid").map_err(|()| "Invalid/missing client ID")?;
        let clientid = match clientid {
            Some(c) => Some(valid_mqtt_utf8(c).ok_or("Client ID not valid UTF-8")?),
            None => None,
        };
        let mut client = self.existing_client(username)?;
        client.clientid = clientid.filter(|c| !c.is_empty()).map(str::to_owned);
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    fn modify_client(&mut self, cmd: &Json, index: usize) -> CommandResult {
        let username = username(cmd)?;
        let mut client = self.existing_client(username)?;
        // Optional fields apply only when present with the right type (wrong types are ignored).
        if let Some(clientid) = required_str(cmd, "clientid") {
            client.clientid = Some(text(clientid)).filter(|c| !c.is_empty());
        }
        let password = required_str(cmd, "password").filter(|p| !p.is_empty());
        if let Some(textname) = required_str(cmd, "textname") {
            client.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            client.textdescription = Some(text(textdescription));
        }
        match role_list(self.model, cmd) {
            Ok(Some(roles)) => client.roles = roles,
            Ok(None) => {}
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        }
        let mut groups: Option<Vec<(String, i32)>> = None;
        if let Some(entries) = cmd.get("groups").and_then(Json::as_array) {
            let mut list: Vec<(String, i32)> = Vec::new();
            for entry in entries.iter().filter(|e| e.is_object()) {
                let Some(group) = entry.get("groupname").and_then(Json::as_bytes) else {
                    return Err("'groups' contains an object with an invalid 'groupname'");
                };
                let group = text(group);
                if !self.model.groups.contains_key(&group) {
                    return Err("'groups' contains an object with a 'groupname' that does not exist");
                }
                if !list.iter().any(|(g, _)| *g == group) {
                    list.push((group, capped_above(int_or(entry, "priority", -1))));
                }
            }
            groups = Some(list);
        }
        if let Some(password) = password {
            client.password = Some(self.password_for(index, password)?);
        }
        if let Some(groups) = groups {
            let current: Vec<Membership> = self.model.clients[username].groups.clone();
            for old in current.iter().filter(|m| !groups.iter().any(|(g, _)| *g == m.name)) {
                self.apply(Mutation::SetMembership {
                    group: old.name.clone(),
                    username: username.to_owned(),
                    priority: None,
                });
            }
            for (group, priority) in groups {
                self.apply(Mutation::SetMembership { group, username: username.to_owned(), priority: Some(priority) });
            }
        }
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    fn set_client_disabled(&mut self, cmd: &Json, disabled: bool) -> CommandResult {
        let username = username(cmd)?;
        let mut client = self.existing_client(username)?;
        if client.disabled != disabled {
            client.disabled = disabled;
            self.apply(Mutation::PutClient(client));
        }
        if disabled {
            self.kick_user(username);
        }
        Ok(None)
    }

    fn get_client(&mut self, cmd: &Json) -> CommandResult {
        let username = username(cmd)?;
        let client = self.model.clients.get(username).ok_or("Client not found")?;
        Ok(Some(Json::object().with("client", self.client_json(client))))
    }

    fn list_clients(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let clients = paged(self.model.clients.values(), count, offset, |c| {
            if verbose { self.client_json(c) } else { Json::str(&c.username) }
        });
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.clients.len() as i64)).with("clients", clients)))
    }

    fn client_and_role<'c>(&self, cmd: &'c Json) -> Result<(&'c str, &'c str), &'static str> {
        let username = username(cmd)?;
        let role = rolename(cmd)?;
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        if !self.model.roles.contains_key(role) {
            return Err("Role not found");
        }
        Ok((username, role))
    }

    fn add_client_role(&mut self, cmd: &Json) -> CommandResult {
        let (username, role) = self.client_and_role(cmd)?;
        let mut client = self.existing_client(username)?;
        let membership = Membership { name: role.to_owned(), priority: capped_above(int_or(cmd, "priority", -1)) };
        if !insert_membership(&mut client.roles, membership) {
            return Err("Internal error");
        }
        self.apply(Mutation::PutClient(client));
        self.kick_user(username);
        Ok(None)
    }

    fn remove_client_role(&mut self, cmd: &Json) -> CommandResult {
        let (username, role) = self.client_and_role(cmd)?;
        let mut client = self.existing_client(username)?;
        if client.roles.iter().any(|m| m.name == role) {
            client.roles.retain(|m| m.name != role);
            self.apply(Mutation::PutClient(client));
        }
        self.kick_user(username);
        Ok(None)
    }

    // --- groups ------------------------------------------------------------------------------

    fn create_group(&mut self, cmd: &Json) -> CommandResult {
        let group = new_name(cmd, "groupname", "Empty groupname")?;
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        if self.model.groups.contains_key(group) {
            return Err("Group already exists");
        }
        let roles = match role_list(self.model, cmd) {
            Ok(roles) => roles.unwrap_or_default(),
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("Internal error"),
        };
        self.apply(Mutation::PutGroup(Group {
            name: group.to_owned(),
            textname: textname.map(text),
            textdescription: textdescription.map(text),
            roles,
            members: Default::default(),
        }));
        Ok(None)
    }

    fn delete_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if self.model.anonymous_group.as_deref() == Some(group) {
            return Err("Deleting the anonymous group is forbidden");
        }
        self.kick_group(group);
        self.apply(Mutation::DeleteGroup(group.to_owned()));
        Ok(None)
    }

    fn modify_group(&mut self, cmd: &Json) -> CommandResult {
        let name = groupname(cmd)?;
        let mut group = self.model.groups.get(name).cloned().ok_or("Group not found")?;
        if let Some(textname) = required_str(cmd, "textname") {
            group.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            group.textdescription = Some(text(textdescription));
        }
        match role_list(self.model, cmd) {
            Ok(Some(roles)) => group.roles = roles,
            Ok(None) => {}
            Err(RoleListError::NotFound) => return Err("Role not found"),
            Err(RoleListError::Invalid) => return Err("'roles' not an array or missing/invalid rolename"),
        }
        let mut members: Option<Vec<(String, i32)>> = None;
        if let Some(entries) = cmd.get("clients").and_then(Json::as_array) {
            let mut list: Vec<(String, i32)> = Vec::new();
            for entry in entries.iter().filter(|e| e.is_object()) {
                let Some(username) = entry.get("username").and_then(Json::as_bytes) else {
                    return Err("'clients' contains an object with an invalid 'username'");
                };
                let username = text(username);
                if !self.model.clients.contains_key(&username) {
                    return Err("'clients' contains an object with a 'username' that does not exist");
                }
                if !list.iter().any(|(u, _)| *u == username) {
                    list.push((username, clamp_priority(int_or(entry, "priority", -1))));
                }
            }
            members = Some(list);
        }
        // Old members (before) and new members (after) are both kicked.
        self.kick_group(name);
        if let Some(members) = members {
            let current: Vec<String> = self.model.groups[name].members.keys().cloned().collect();
            for username in current.into_iter().filter(|u| !members.iter().any(|(m, _)| m == u)) {
                self.apply(Mutation::SetMembership { group: name.to_owned(), username, priority: None });
            }
            for (username, priority) in members {
                self.apply(Mutation::SetMembership { group: name.to_owned(), username, priority: Some(priority) });
            }
        }
        self.apply(Mutation::PutGroup(group));
        self.kick_group(name);
        Ok(None)
    }

    fn get_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        let group = self.model.groups.get(group).ok_or("Group not found")?;
        Ok(Some(Json::object().with("group", group_info(group))))
    }

    fn list_groups(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let groups =
            paged(
                self.model.groups.values(),
                count,
                offset,
                |g| {
                    if verbose { group_info(g) } else { Json::str(&g.name) }
                },
            );
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.groups.len() as i64)).with("groups", groups)))
    }

    /// addGroupClient/removeGroupClient: username is validated before groupname, and the user is
    /// kicked whatever the outcome of the lookups (mosquitto 2.0.x).
    fn group_client_names(cmd: &Json) -> Result<(&str, &str), &'static str> {
        let username = username(cmd)?;
        let group = groupname(cmd)?;
        Ok((username, group))
    }

    fn add_group_client(&mut self, cmd: &Json) -> CommandResult {
        let (username, group) = Self::group_client_names(cmd)?;
        self.kick_user(username);
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        let Some(g) = self.model.groups.get(group) else { return Err("Group not found") };
        if g.members.contains_key(username) {
            return Err("Client is already in this group");
        }
        let priority = clamp_priority(int_or(cmd, "priority", -1));
        self.apply(Mutation::SetMembership {
            group: group.to_owned(),
            username: username.to_owned(),
            priority: Some(priority),
        });
        Ok(None)
    }

    fn remove_group_client(&mut self, cmd: &Json) -> CommandResult {
        let (username, group) = Self::group_client_names(cmd)?;
        self.kick_user(username);
        if !self.model.clients.contains_key(username) {
            return Err("Client not found");
        }
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        self.apply(Mutation::SetMembership { group: group.to_owned(), username: username.to_owned(), priority: None });
        Ok(None)
    }

    fn group_and_role<'c>(&self, cmd: &'c Json) -> Result<(&'c str, &'c str), &'static str> {
        let group = groupname(cmd)?;
        let role = rolename(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if !self.model.roles.contains_key(role) {
            return Err("Role not found");
        }
        Ok((group, role))
    }

    fn add_group_role(&mut self, cmd: &Json) -> CommandResult {
        let (name, role) = self.group_and_role(cmd)?;
        let mut group = self.model.groups[name].clone();
        if !insert_membership(
            &mut group.roles,
            Membership { name: role.to_owned(), priority: clamp_priority(int_or(cmd, "priority", -1)) },
        ) {
            return Err("Group is already in this role");
        }
        self.apply(Mutation::PutGroup(group));
        self.kick_group(name);
        Ok(None)
    }

    fn remove_group_role(&mut self, cmd: &Json) -> CommandResult {
        let (name, role) = self.group_and_role(cmd)?;
        let mut group = self.model.groups[name].clone();
        if group.roles.iter().any(|m| m.name == role) {
            group.roles.retain(|m| m.name != role);
            self.apply(Mutation::PutGroup(group));
        }
        self.kick_group(name);
        Ok(None)
    }

    fn set_anonymous_group(&mut self, cmd: &Json) -> CommandResult {
        let group = groupname(cmd)?;
        if !self.model.groups.contains_key(group) {
            return Err("Group not found");
        }
        if self.model.anonymous_group.as_deref() != Some(group) {
            self.apply(Mutation::SetAnonymousGroup(Some(group.to_owned())));
        }
        self.outcome.kicks.anonymous = true;
        Ok(None)
    }

    fn get_anonymous_group(&mut self) -> CommandResult {
        let name = self.model.anonymous_group.as_deref().unwrap_or("");
        Ok(Some(Json::object().with("group", Json::object().with("groupname", Json::str(name)))))
    }

    // --- roles -------------------------------------------------------------------------------

    fn create_role(&mut self, cmd: &Json) -> LimitedResult {
        let name = new_name(cmd, "rolename", "Empty rolename")?;
        let textname = optional_str(cmd, "textname").map_err(|()| "Invalid/missing textname")?;
        let textdescription = optional_str(cmd, "textdescription").map_err(|()| "Invalid/missing textdescription")?;
        let allow_wildcard_subs = match cmd.get("allowwildcardsubs") {
            None => true,
            Some(value) => value.as_bool().ok_or("Invalid allowwildcardsubs")?,
        };
        if self.model.roles.contains_key(name) {
            return Err("Role already exists".into());
        }
        let mut role = Role::new(name);
        role.textname = textname.map(text);
        role.textdescription = textdescription.map(text);
        role.allow_wildcard_subs = allow_wildcard_subs;
        if let Some(acls) = cmd.get("acls").and_then(Json::as_array) {
            acls_from_json(acls, &mut role);
        }
        if role.acl_count() > self.limits.max_acls_per_role {
            return Err(CommandError::Limit(too_many_acls(self.limits)));
        }
        self.apply(Mutation::PutRole(role));
        Ok(None)
    }

    fn delete_role(&mut self, cmd: &Json) -> CommandResult {
        let name = rolename(cmd)?;
        if !self.model.roles.contains_key(name) {
            return Err("Role not found");
        }
        self.kick_role(name);
        self.apply(Mutation::DeleteRole(name.to_owned()));
        Ok(None)
    }

    fn modify_role(&mut self, cmd: &Json) -> LimitedResult {
        let name = rolename(cmd)?;
        let mut role = self.model.roles.get(name).cloned().ok_or("Role does not exist")?;
        if let Some(textname) = required_str(cmd, "textname") {
            role.textname = Some(text(textname));
        }
        if let Some(textdescription) = required_str(cmd, "textdescription") {
            role.textdescription = Some(text(textdescription));
        }
        // A non-boolean value is ignored, as in 2.1.
        let mut kick = false;
        if let Some(allow) = cmd.get("allowwildcardsubs").and_then(Json::as_bool)
            && allow != role.allow_wildcard_subs
        {
            role.allow_wildcard_subs = allow;
            kick = true;
        }
        if let Some(acls) = cmd.get("acls").and_then(Json::as_array) {
            role.acls = Default::default();
            acls_from_json(acls, &mut role);
            if role.acl_count() > self.limits.max_acls_per_role {
                return Err(CommandError::Limit(too_many_acls(self.limits)));
            }
            // 2.1 kicks for any `acls` array, even one that changes nothing.
            kick = true;
        }
        if self.model.roles.get(name) != Some(&role) {
            self.apply(Mutation::PutRole(role));
        }
        // 2.1 disconnects the holders when their rights may have changed (2.0.x did not kick).
        if kick {
            self.kick_role(name);
        }
        Ok(None)
    }

    fn get_role(&mut self, cmd: &Json) -> CommandResult {
        let name = rolename(cmd)?;
        let role = self.model.roles.get(name).ok_or("Role not found")?;
        Ok(Some(Json::object().with("role", role_info(role))))
    }

    fn list_roles(&mut self, cmd: &Json) -> CommandResult {
        let (verbose, count, offset) =
            (bool_or(cmd, "verbose", false), int_or(cmd, "count", -1), int_or(cmd, "offset", 0));
        let roles =
            paged(
                self.model.roles.values(),
                count,
                offset,
                |r| {
                    if verbose { role_info(r) } else { Json::str(&r.name) }
                },
            );
        Ok(Some(Json::object().with("totalCount", Json::int(self.model.roles.len() as i64)).with("roles", roles)))
    }

    /// addRoleACL/removeRoleACL share their checks; the role is looked up before the ACL fields
    /// are validated (mosquitto's order).
    fn role_acl_fields(&self, cmd: &Json) -> Result<(String, AclType, String), &'static str> {
        let name = rolename(cmd)?;
        if !self.model.roles.contains_key(name) {
            return Err("Role not found");
        }
        let kind = required_str(cmd, "acltype").ok_or("Invalid/missing acltype")?;
        let acl_type = AclType::parse(kind).ok_or("Unknown acltype")?;
        let topic = required_str(cmd, "topic").ok_or("Invalid/missing topic")?;
        let topic = valid_mqtt_utf8(topic).ok_or("Topic not valid UTF-8")?;
        // 2.1's filter check refuses an empty topic too (2.0.11 accepted it).
        if topic.is_empty() || !valid_filter(topic) {
            return Err("Invalid ACL topic");
        }
        Ok((name.to_owned(), acl_type, topic.to_owned()))
    }

    /// Edits the role in place through [`Mutation::AddAcl`]: copying the role per edit made a
    /// message of many edits quadratic in memory, time and journal size.
    fn add_role_acl(&mut self, cmd: &Json) -> LimitedResult {
        let (name, acl_type, topic) = self.role_acl_fields(cmd)?;
        let role = self.model.roles.get(&name).ok_or("Role not found")?;
        const EXISTS: &str = "ACL with this topic already exists";
        if role.acl_count() >= self.limits.max_acls_per_role {
            // A duplicate is reported as such, as below the limit.
            if role.acls[acl_type.index()].iter().any(|a| a.topic == topic) {
                return Err(EXISTS.into());
            }
            return Err(CommandError::Limit(too_many_acls(self.limits)));
        }
        let acl =
            Acl { topic, priority: clamp_priority(int_or(cmd, "priority", 0)), allow: bool_or(cmd, "allow", false) };
        // The duplicate check is the model's own (one scan of the list, not two).
        if !self.apply(Mutation::AddAcl { role: name.clone(), acl_type, acl, at: None }) {
            return Err(EXISTS.into());
        }
        self.kick_role(&name);
        Ok(None)
    }

    fn remove_role_acl(&mut self, cmd: &Json) -> CommandResult {
        let (name, acl_type, topic) = self.role_acl_fields(cmd)?;
        if !self.apply(Mutation::RemoveAcl { role: name.clone(), acl_type, topic }) {
            return Err("ACL not found");
        }
        self.kick_role(&name);
        Ok(None)
    }
}

/// The reply to a payload whose envelope is unusable.
pub fn envelope_error(error: &str) -> Vec<u8> {
    envelope(vec![Json::object().with("command", Json::str("Unknown command")).with("error", Json::str(error))])
}

fn envelope(replies: Vec<Json>) -> Vec<u8> {
    Json::object().with("responses", Json::Array(replies)).to_compact()
}

fn with_correlation(mut reply: Json, correlation: Option<&[u8]>) -> Json {
    if let Some(c) = correlation {
        reply.push("correlationData", Json::String(c.to_vec()));
    }
    reply
}

fn reply(command: &str, result: LimitedResult, correlation: Option<&[u8]>) -> Json {
    with_correlation(reply_object(command, &result), correlation)
}

/// `{"command":…}` then `"error"` or `"data"` (or neither for a successful write).
fn reply_object(command: &str, result: &LimitedResult) -> Json {
    let o = Json::object().with("command", Json::str(command));
    match result {
        Err(error) => o.with("error", Json::str(error.text())),
        Ok(Some(data)) => o.with("data", data.clone()),
        Ok(None) => o,
    }
}

/// One line per command: who, what (arguments with passwords masked), result.
fn audit(admin: &Admin, command: &str, cmd: &Json, result: &LimitedResult, refused: Option<&str>) {
    if !tracing::enabled!(target: "dynsec::audit", tracing::Level::INFO) {
        return;
    }
    let mut args = String::new();
    if let Json::Object(members) = cmd {
        for (key, value) in members {
            if key.eq_ignore_ascii_case(b"command") || key.eq_ignore_ascii_case(b"correlationData") {
                continue;
            }
            let rendered = if key.eq_ignore_ascii_case(b"password") {
                "*****".to_owned()
            } else {
                let mut s = match value {
                    Json::String(text) => String::from_utf8_lossy(text).into_owned(),
                    other => String::from_utf8_lossy(&other.to_compact()).into_owned(),
                };
                if s.len() > 200 {
                    let cut = (0..=200).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                    s.truncate(cut);
                    s.push('…');
                }
                s
            };
            args.push_str(&format!(" | {}={rendered}", String::from_utf8_lossy(key)));
        }
    }
    let outcome = match (refused, result) {
        (Some(message), _) => format!("error: {message}"),
        (None, Ok(_)) => "ok".to_owned(),
        (None, Err(e)) => format!("error: {}", e.text()),
    };
    tracing::info!(
        target: "dynsec::audit",
        "dynsec: {}/{} | {command}{args} | {outcome}",
        admin.client_id,
        admin.username.as_deref().unwrap_or("")
    );
}
