//! The `$CONTROL/dynamic-security/v1` command protocol (docs/compatibility.md §1): envelope parsing, the 32
//! commands with mosquitto's check order and exact error strings, and the response objects.
//! This file runs a message; the commands live by family beside it (`clients`, `groups`,
//! `roles`, `default_access`, `details`), their names in `names`.
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

mod clients;
mod default_access;
mod details;
mod groups;
mod names;
mod roles;

pub use names::{Command, Family};

/// Connected clients to disconnect once the reply is out (docs/compatibility.md §3.7).
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

/// A priority as 2.1.2 caps it where it only checks the upper bound (addClientRole, the `roles`
/// of create/modify commands, the `groups` of createClient/modifyClient).
fn capped_above(priority: i32) -> i32 {
    priority.min(PRIORITY_MAX)
}

/// The password a command will need hashed, if any (same extraction rules as the commands).
fn password_to_hash(command: &Json) -> Option<&[u8]> {
    let name = Command::from_name(command.get("command")?.as_bytes()?)?;
    let password = command.get("password")?.as_bytes()?;
    match name {
        Command::CreateClient => Some(password),
        Command::SetClientPassword | Command::ModifyClient if !password.is_empty() => Some(password),
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
// Field access with mosquitto's type rules (docs/compatibility.md §1.3).

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

    /// Processes the command array (docs/compatibility.md §1.2). An array longer than the limit is refused
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
            let Some(command) = Command::from_name(sent_name) else {
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
            if result.is_ok() && refused.is_none() && self.refusal.is_none() && command.changes() {
                self.changes_counted += 1;
            }
            audit(&self.admin, command.name(), cmd, &result, refused.as_deref());
            let r = match refused {
                Some(message) => {
                    Json::object().with("command", Json::str(command.name())).with("error", Json::str(&message))
                }
                None => reply_object(command.name(), &result),
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

    fn dispatch(&mut self, command: Command, cmd: &Json, index: usize) -> LimitedResult {
        let result = match command {
            Command::SetDefaultAclAccess => self.set_default_acl_access(cmd),
            Command::GetDefaultAclAccess => self.get_default_acl_access(),
            Command::GetDetails => self.get_details(),
            Command::CreateClient => self.create_client(cmd, index),
            Command::DeleteClient => self.delete_client(cmd),
            Command::SetClientPassword => self.set_client_password(cmd, index),
            Command::SetClientId => self.set_client_id(cmd),
            Command::ModifyClient => self.modify_client(cmd, index),
            Command::EnableClient => self.set_client_disabled(cmd, false),
            Command::DisableClient => self.set_client_disabled(cmd, true),
            Command::GetClient => self.get_client(cmd),
            Command::ListClients => self.list_clients(cmd),
            Command::AddClientRole => self.add_client_role(cmd),
            Command::RemoveClientRole => self.remove_client_role(cmd),
            Command::CreateGroup => self.create_group(cmd),
            Command::DeleteGroup => self.delete_group(cmd),
            Command::ModifyGroup => self.modify_group(cmd),
            Command::GetGroup => self.get_group(cmd),
            Command::ListGroups => self.list_groups(cmd),
            Command::AddGroupClient => self.add_group_client(cmd),
            Command::RemoveGroupClient => self.remove_group_client(cmd),
            Command::AddGroupRole => self.add_group_role(cmd),
            Command::RemoveGroupRole => self.remove_group_role(cmd),
            Command::SetAnonymousGroup => self.set_anonymous_group(cmd),
            Command::GetAnonymousGroup => self.get_anonymous_group(),
            Command::CreateRole => return self.create_role(cmd),
            Command::DeleteRole => self.delete_role(cmd),
            Command::ModifyRole => return self.modify_role(cmd),
            Command::GetRole => self.get_role(cmd),
            Command::ListRoles => self.list_roles(cmd),
            Command::AddRoleAcl => return self.add_role_acl(cmd),
            Command::RemoveRoleAcl => self.remove_role_acl(cmd),
        };
        result.map_err(CommandError::Fixed)
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
