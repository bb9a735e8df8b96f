//! From command-line words to one `$CONTROL/dynamic-security/v1` command object.
//!
//! The argument rules are mosquitto_ctrl 2.0's: exact argument counts, `atoi` priorities (-1 is
//! not sent), counts/offsets sent only when > 0, and the command name as typed for the add/remove
//! role and enable/disable commands. Beyond mosquitto_ctrl: `modifyClient`, `modifyGroup`,
//! `modifyRole` with flags, and `--verbose` for the list commands (see the README).

use dynsec::commands::Command;
use dynsec::json::Json;
use dynsec::model::{AclType, DEFAULT_ACCESS_KEYS};

use crate::prompt::{PromptError, get_password};
use crate::text::{atoi, eq_ignore_case, lossy};

/// Why no command was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// Wrong arguments; `Error: Invalid function arguments provided.` follows, exit status 3.
    InvalidArguments,
    /// Not a dynsec command: `Command '<x>' not recognised.`, exit status 13.
    Unknown(Vec<u8>),
    /// A prompt failed or was refused; messages are printed, nothing is sent, exit status 0.
    Aborted,
}

/// Where passwords come from when they are not on the command line (tests replace the terminal).
pub trait PasswordSource {
    fn ask(&mut self, prompt: &str, verify_prompt: Option<&str>, quiet: bool) -> Result<Vec<u8>, PromptError>;

    /// Whether prompts are shown to a person (createClient then explains the empty answer).
    fn interactive(&self) -> bool {
        true
    }
}

/// No prompts at all (batch mode): every question gets the empty answer, so `createClient`
/// without `-p` creates a client without a password and `setClientPassword` needs its argument.
pub struct NoPrompts;

impl PasswordSource for NoPrompts {
    fn ask(&mut self, _: &str, _: Option<&str>, _: bool) -> Result<Vec<u8>, PromptError> {
        Err(PromptError::Empty)
    }

    fn interactive(&self) -> bool {
        false
    }
}

/// Prompts on stdout and reads stdin, as mosquitto_ctrl does.
pub struct Terminal;

impl PasswordSource for Terminal {
    fn ask(&mut self, prompt: &str, verify_prompt: Option<&str>, quiet: bool) -> Result<Vec<u8>, PromptError> {
        get_password(prompt, verify_prompt, quiet)
    }
}

fn string(bytes: &[u8]) -> Json {
    Json::String(bytes.to_vec())
}

fn command(name: &str) -> Json {
    Json::object().with("command", Json::str(name))
}

/// The command `word` names (case-insensitive), from the engine's table.
pub fn known_command(word: &[u8]) -> Option<Command> {
    Command::from_name(word)
}

/// Builds the command for `words` (`words[0]` is the command name).
pub fn build(words: &[Vec<u8>], passwords: &mut dyn PasswordSource) -> Result<Json, BuildError> {
    let Some((name_word, args)) = words.split_first() else {
        return Err(BuildError::InvalidArguments);
    };
    let Some(known) = known_command(name_word) else {
        return Err(BuildError::Unknown(name_word.clone()));
    };
    let name = known.name();
    match known {
        Command::SetDefaultAclAccess => set_default_acl_access(args),
        Command::GetDefaultAclAccess | Command::GetDetails => Ok(command(name)),
        Command::CreateClient => create_client(args, passwords),
        Command::DeleteClient | Command::GetClient => one_name(name, "username", args),
        Command::EnableClient | Command::DisableClient => one_name_as_typed(name_word, "username", args),
        Command::ListClients | Command::ListGroups | Command::ListRoles => list(name, args),
        Command::SetClientId => set_client_id(args),
        Command::SetClientPassword => set_client_password(args, passwords),
        Command::AddClientRole | Command::RemoveClientRole => {
            name_pair_with_priority(name_word, ("username", "rolename"), args, PairOrder::AsNamed)
        }
        Command::CreateGroup | Command::DeleteGroup | Command::GetGroup | Command::SetAnonymousGroup => {
            one_name(name, "groupname", args)
        }
        Command::GetAnonymousGroup => Ok(command(name)),
        Command::AddGroupRole | Command::RemoveGroupRole => {
            name_pair_with_priority(name_word, ("groupname", "rolename"), args, PairOrder::AsNamed)
        }
        // The group comes first on the command line but the username first in the JSON.
        Command::AddGroupClient | Command::RemoveGroupClient => {
            name_pair_with_priority(name_word, ("groupname", "username"), args, PairOrder::SecondFirst)
        }
        Command::CreateRole | Command::DeleteRole | Command::GetRole => one_name(name, "rolename", args),
        Command::AddRoleAcl => add_role_acl(args),
        Command::RemoveRoleAcl => remove_role_acl(args),
        Command::ModifyClient => modify_client(args),
        Command::ModifyGroup => modify_group(args),
        Command::ModifyRole => modify_role(args),
    }
}

fn one_name(name: &str, key: &str, args: &[Vec<u8>]) -> Result<Json, BuildError> {
    match args {
        [value] => Ok(command(name).with(key, string(value))),
        _ => Err(BuildError::InvalidArguments),
    }
}

fn one_name_as_typed(typed: &[u8], key: &str, args: &[Vec<u8>]) -> Result<Json, BuildError> {
    match args {
        [value] => Ok(Json::object().with("command", string(typed)).with(key, string(value))),
        _ => Err(BuildError::InvalidArguments),
    }
}

enum PairOrder {
    AsNamed,
    SecondFirst,
}

fn name_pair_with_priority(
    typed: &[u8],
    keys: (&str, &str),
    args: &[Vec<u8>],
    order: PairOrder,
) -> Result<Json, BuildError> {
    let (first, second, priority) = match args {
        [a, b] => (a, b, -1),
        [a, b, p] => (a, b, atoi(p)),
        _ => return Err(BuildError::InvalidArguments),
    };
    let mut json = Json::object().with("command", string(typed));
    match order {
        PairOrder::AsNamed => {
            json.push(keys.0, string(first));
            json.push(keys.1, string(second));
        }
        PairOrder::SecondFirst => {
            json.push(keys.1, string(second));
            json.push(keys.0, string(first));
        }
    }
    if priority != -1 {
        json.push("priority", Json::int(priority.into()));
    }
    Ok(json)
}

fn set_default_acl_access(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let [acltype, access] = args else {
        return Err(BuildError::InvalidArguments);
    };
    if !DEFAULT_ACCESS_KEYS.iter().any(|t| eq_ignore_case(acltype, t)) {
        return Err(BuildError::InvalidArguments);
    }
    let allow = parse_access(access).ok_or_else(|| {
        eprint("Error: access must be \"allow\" or \"deny\".\n");
        BuildError::InvalidArguments
    })?;
    // mosquitto_ctrl 2.0.11 sent "access": "allow", which the plugin ignores; 2.0.12+ and we send
    // the boolean the plugin reads.
    let acl = Json::object().with("acltype", string(acltype)).with("allow", Json::Bool(allow));
    Ok(command("setDefaultACLAccess").with("acls", Json::Array(vec![acl])))
}

fn parse_access(word: &[u8]) -> Option<bool> {
    if eq_ignore_case(word, "allow") {
        Some(true)
    } else if eq_ignore_case(word, "deny") {
        Some(false)
    } else {
        None
    }
}

fn eprint(message: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(message.as_bytes());
}

fn create_client(args: &[Vec<u8>], passwords: &mut dyn PasswordSource) -> Result<Json, BuildError> {
    let Some((username, rest)) = args.split_first() else {
        return Err(BuildError::InvalidArguments);
    };
    let mut client_id = None;
    let mut password = None;
    let mut i = 0;
    // Unknown words are skipped, as mosquitto_ctrl does.
    while i < rest.len() {
        match rest[i].as_slice() {
            // `-i` is mosquitto_ctrl 2.1's spelling, `-c` 2.0's; both take the client id.
            flag @ (b"-c" | b"-i") => {
                let Some(value) = rest.get(i + 1) else {
                    let flag = if flag == b"-c" { "-c" } else { "-i" };
                    eprint(&format!("Error: {flag} argument given, but no clientid provided.\n"));
                    return Err(BuildError::InvalidArguments);
                };
                client_id = Some(value.clone());
                i += 1;
            }
            b"-p" => {
                let Some(value) = rest.get(i + 1) else {
                    eprint("Error: -p argument given, but no password provided.\n");
                    return Err(BuildError::InvalidArguments);
                };
                password = Some(value.clone());
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    if password.is_none() && passwords.interactive() {
        let name = lossy(username);
        print_stdout(&format!(
            "Enter new password for {name}. Press return for no password (user will be unable to login).\n"
        ));
        let prompt = format!("New password for {name}: ");
        let verify = format!("Reenter password for {name}: ");
        match passwords.ask(&prompt, Some(&verify), true) {
            Ok(answer) => password = Some(answer),
            Err(PromptError::Mismatch) => {
                eprint("Error: Passwords do not match.\n");
                return Err(BuildError::Aborted);
            }
            Err(PromptError::Empty) => print_stdout("\n"),
        }
    }
    let mut json = command("createClient").with("username", string(username));
    if let Some(client_id) = client_id {
        json.push("clientid", Json::String(client_id));
    }
    if let Some(password) = password {
        json.push("password", Json::String(password));
    }
    Ok(json)
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn set_client_id(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    match args {
        [username] => Ok(command("setClientId").with("username", string(username))),
        [username, client_id] => {
            Ok(command("setClientId").with("username", string(username)).with("clientid", string(client_id)))
        }
        _ => Err(BuildError::InvalidArguments),
    }
}

fn set_client_password(args: &[Vec<u8>], passwords: &mut dyn PasswordSource) -> Result<Json, BuildError> {
    let (username, password) = match args {
        [username, password] => (username, password.clone()),
        [username] => {
            let name = lossy(username);
            let prompt = format!("New password for {name}: ");
            let verify = format!("Reenter password for {name}: ");
            let answer = passwords.ask(&prompt, Some(&verify), false).map_err(|_| BuildError::Aborted)?;
            (username, answer)
        }
        _ => return Err(BuildError::InvalidArguments),
    };
    Ok(command("setClientPassword").with("username", string(username)).with("password", Json::String(password)))
}

fn list(name: &str, args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let verbose = args.iter().any(|a| a == b"--verbose" || a == b"-v");
    let numbers: Vec<&Vec<u8>> = args.iter().filter(|a| *a != b"--verbose" && *a != b"-v").collect();
    let (count, offset) = match numbers.as_slice() {
        [] => (-1, -1),
        [count] => (atoi(count), -1),
        [count, offset] => (atoi(count), atoi(offset)),
        _ => return Err(BuildError::InvalidArguments),
    };
    let mut json = command(name);
    if verbose {
        json.push("verbose", Json::Bool(true));
    }
    if count > 0 {
        json.push("count", Json::int(count.into()));
    }
    if offset > 0 {
        json.push("offset", Json::int(offset.into()));
    }
    Ok(json)
}

fn is_role_acl_type(word: &[u8]) -> bool {
    AclType::ALL.iter().any(|acl_type| eq_ignore_case(word, acl_type.name()))
}

fn add_role_acl(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let (rolename, acltype, topic, action, priority) = match args {
        [r, t, topic, a] => (r, t, topic, a, -1),
        [r, t, topic, a, p] => (r, t, topic, a, atoi(p)),
        _ => return Err(BuildError::InvalidArguments),
    };
    if !is_role_acl_type(acltype) {
        return Err(BuildError::InvalidArguments);
    }
    let allow = parse_access(action).ok_or(BuildError::InvalidArguments)?;
    let mut json = command("addRoleACL")
        .with("rolename", string(rolename))
        .with("acltype", string(acltype))
        .with("topic", string(topic))
        .with("allow", Json::Bool(allow));
    if priority != -1 {
        json.push("priority", Json::int(priority.into()));
    }
    Ok(json)
}

fn remove_role_acl(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let [rolename, acltype, topic] = args else {
        return Err(BuildError::InvalidArguments);
    };
    if !is_role_acl_type(acltype) {
        return Err(BuildError::InvalidArguments);
    }
    Ok(command("removeRoleACL")
        .with("rolename", string(rolename))
        .with("acltype", string(acltype))
        .with("topic", string(topic)))
}

/// `NAME[:PRIORITY]`: the suffix after the last `:` is a priority only if it is an integer.
fn name_and_priority(word: &[u8]) -> (Vec<u8>, Option<i64>) {
    if let Some(colon) = word.iter().rposition(|&b| b == b':')
        && let Ok(priority) = std::str::from_utf8(&word[colon + 1..]).unwrap_or("x").parse::<i32>()
    {
        return (word[..colon].to_vec(), Some(priority.into()));
    }
    (word.to_vec(), None)
}

fn member(key: &str, word: &[u8]) -> Json {
    let (name, priority) = name_and_priority(word);
    let mut entry = Json::object().with(key, Json::String(name));
    if let Some(priority) = priority {
        entry.push("priority", Json::int(priority));
    }
    entry
}

/// Flag parsing for the modify commands: `--flag value` pairs, repeatable list flags, and
/// `--no-<list>` to send an empty list.
struct ModifyFlags<'a> {
    args: &'a [Vec<u8>],
    position: usize,
}

impl<'a> ModifyFlags<'a> {
    fn next_flag(&mut self) -> Option<&'a [u8]> {
        let flag = self.args.get(self.position)?;
        self.position += 1;
        Some(flag)
    }

    fn value(&mut self) -> Result<&'a [u8], BuildError> {
        let value = self.args.get(self.position).ok_or(BuildError::InvalidArguments)?;
        self.position += 1;
        Ok(value)
    }
}

fn modify_client(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let Some((username, rest)) = args.split_first() else {
        return Err(BuildError::InvalidArguments);
    };
    let mut json = command("modifyClient").with("username", string(username));
    let mut roles: Option<Vec<Json>> = None;
    let mut groups: Option<Vec<Json>> = None;
    let mut flags = ModifyFlags { args: rest, position: 0 };
    while let Some(flag) = flags.next_flag() {
        match flag {
            b"-c" | b"--clientid" => json.push("clientid", string(flags.value()?)),
            b"-p" | b"--password" => json.push("password", string(flags.value()?)),
            b"-t" | b"--textname" => json.push("textname", string(flags.value()?)),
            b"-d" | b"--textdescription" => json.push("textdescription", string(flags.value()?)),
            label if eq_ignore_case(label, "textName") => json.push("textname", string(flags.value()?)),
            label if eq_ignore_case(label, "textDescription") => {
                json.push("textdescription", string(flags.value()?));
            }
            b"--role" => roles.get_or_insert_with(Vec::new).push(member("rolename", flags.value()?)),
            b"--no-roles" => drop(roles.get_or_insert_with(Vec::new)),
            b"--group" => groups.get_or_insert_with(Vec::new).push(member("groupname", flags.value()?)),
            b"--no-groups" => drop(groups.get_or_insert_with(Vec::new)),
            _ => return Err(BuildError::InvalidArguments),
        }
    }
    if let Some(roles) = roles {
        json.push("roles", Json::Array(roles));
    }
    if let Some(groups) = groups {
        json.push("groups", Json::Array(groups));
    }
    Ok(json)
}

fn modify_group(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let Some((groupname, rest)) = args.split_first() else {
        return Err(BuildError::InvalidArguments);
    };
    let mut json = command("modifyGroup").with("groupname", string(groupname));
    let mut roles: Option<Vec<Json>> = None;
    let mut clients: Option<Vec<Json>> = None;
    let mut flags = ModifyFlags { args: rest, position: 0 };
    while let Some(flag) = flags.next_flag() {
        match flag {
            b"-t" | b"--textname" => json.push("textname", string(flags.value()?)),
            b"-d" | b"--textdescription" => json.push("textdescription", string(flags.value()?)),
            label if eq_ignore_case(label, "textName") => json.push("textname", string(flags.value()?)),
            label if eq_ignore_case(label, "textDescription") => {
                json.push("textdescription", string(flags.value()?));
            }
            b"--role" => roles.get_or_insert_with(Vec::new).push(member("rolename", flags.value()?)),
            b"--no-roles" => drop(roles.get_or_insert_with(Vec::new)),
            b"--client" => clients.get_or_insert_with(Vec::new).push(member("username", flags.value()?)),
            b"--no-clients" => drop(clients.get_or_insert_with(Vec::new)),
            _ => return Err(BuildError::InvalidArguments),
        }
    }
    if let Some(roles) = roles {
        json.push("roles", Json::Array(roles));
    }
    if let Some(clients) = clients {
        json.push("clients", Json::Array(clients));
    }
    Ok(json)
}

fn modify_role(args: &[Vec<u8>]) -> Result<Json, BuildError> {
    let Some((rolename, rest)) = args.split_first() else {
        return Err(BuildError::InvalidArguments);
    };
    let mut json = command("modifyRole").with("rolename", string(rolename));
    let mut acls: Option<Vec<Json>> = None;
    let mut flags = ModifyFlags { args: rest, position: 0 };
    while let Some(flag) = flags.next_flag() {
        match flag {
            b"-t" | b"--textname" => json.push("textname", string(flags.value()?)),
            b"-d" | b"--textdescription" => json.push("textdescription", string(flags.value()?)),
            label if eq_ignore_case(label, "textName") => json.push("textname", string(flags.value()?)),
            label if eq_ignore_case(label, "textDescription") => {
                json.push("textdescription", string(flags.value()?));
            }
            // --acl <acltype> <topic> allow|deny [priority]
            b"--acl" => {
                let acltype = flags.value()?;
                let topic = flags.value()?;
                let allow = parse_access(flags.value()?).ok_or(BuildError::InvalidArguments)?;
                if !is_role_acl_type(acltype) {
                    return Err(BuildError::InvalidArguments);
                }
                let mut acl = Json::object()
                    .with("acltype", string(acltype))
                    .with("topic", string(topic))
                    .with("allow", Json::Bool(allow));
                let priority = rest.get(flags.position).and_then(|w| std::str::from_utf8(w).ok()?.parse::<i32>().ok());
                if let Some(priority) = priority {
                    flags.position += 1;
                    acl.push("priority", Json::int(priority.into()));
                }
                acls.get_or_insert_with(Vec::new).push(acl);
            }
            b"--no-acls" => drop(acls.get_or_insert_with(Vec::new)),
            // mosquitto_ctrl 2.1's shell form `allowWildcardSubs true|false`.
            label if label == b"--allow-wildcard-subs" || eq_ignore_case(label, "allowWildcardSubs") => {
                let value = flags.value()?;
                if !eq_ignore_case(value, "true") && !eq_ignore_case(value, "false") {
                    return Err(BuildError::InvalidArguments);
                }
                json.push("allowwildcardsubs", Json::Bool(eq_ignore_case(value, "true")));
            }
            _ => return Err(BuildError::InvalidArguments),
        }
    }
    if let Some(acls) = acls {
        json.push("acls", Json::Array(acls));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Vec<u8>, PromptError>);

    impl PasswordSource for Fixed {
        fn ask(&mut self, _: &str, _: Option<&str>, _: bool) -> Result<Vec<u8>, PromptError> {
            self.0.clone()
        }
    }

    fn json_of(line: &str) -> Result<String, BuildError> {
        let words: Vec<Vec<u8>> = line.split_whitespace().map(|w| w.as_bytes().to_vec()).collect();
        build(&words, &mut Fixed(Ok(b"prompted".to_vec()))).map(|j| String::from_utf8(j.to_compact()).unwrap())
    }

    #[test]
    fn mosquitto_ctrl_json_shapes() {
        let cases = [
            ("getDefaultACLAccess", r#"{"command":"getDefaultACLAccess"}"#),
            (
                "setDefaultACLAccess SUBSCRIBE allow",
                r#"{"command":"setDefaultACLAccess","acls":[{"acltype":"SUBSCRIBE","allow":true}]}"#,
            ),
            (
                "createClient u -c id -p pw",
                r#"{"command":"createClient","username":"u","clientid":"id","password":"pw"}"#,
            ),
            ("createClient u", r#"{"command":"createClient","username":"u","password":"prompted"}"#),
            ("addClientRole u r 5", r#"{"command":"addClientRole","username":"u","rolename":"r","priority":5}"#),
            ("ADDCLIENTROLE u r -1", r#"{"command":"ADDCLIENTROLE","username":"u","rolename":"r"}"#),
            ("addGroupClient g u 3", r#"{"command":"addGroupClient","username":"u","groupname":"g","priority":3}"#),
            ("listClients 0 5", r#"{"command":"listClients","offset":5}"#),
            ("listRoles --verbose 2", r#"{"command":"listRoles","verbose":true,"count":2}"#),
            ("setClientId u", r#"{"command":"setClientId","username":"u"}"#),
            (
                "addRoleACL r subscribePattern a/# deny 4",
                r#"{"command":"addRoleACL","rolename":"r","acltype":"subscribePattern","topic":"a/#","allow":false,"priority":4}"#,
            ),
            (
                "modifyClient u -t T --role r1:2 --role r2 --no-groups",
                r#"{"command":"modifyClient","username":"u","textname":"T","roles":[{"rolename":"r1","priority":2},{"rolename":"r2"}],"groups":[]}"#,
            ),
            (
                "modifyRole r --acl publishClientSend a/b allow 3 --acl subscribeLiteral x deny",
                r#"{"command":"modifyRole","rolename":"r","acls":[{"acltype":"publishClientSend","topic":"a/b","allow":true,"priority":3},{"acltype":"subscribeLiteral","topic":"x","allow":false}]}"#,
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(json_of(line).unwrap(), expected, "{line}");
        }
    }

    #[test]
    fn argument_errors() {
        for line in [
            "getClient",
            "getClient a b",
            "addRoleACL r bogus t allow",
            "addRoleACL r subscribeLiteral t maybe",
            "removeRoleACL r subscribe t",
            "setDefaultACLAccess subscribeLiteral allow",
            "listClients 1 2 3",
            "modifyRole r --bogus",
        ] {
            assert_eq!(json_of(line), Err(BuildError::InvalidArguments), "{line}");
        }
        assert_eq!(json_of("frob x"), Err(BuildError::Unknown(b"frob".to_vec())));
    }

    #[test]
    fn create_client_with_empty_prompt_sends_no_password() {
        let words = vec![b"createClient".to_vec(), b"u".to_vec()];
        let json = build(&words, &mut Fixed(Err(PromptError::Empty))).unwrap();
        assert_eq!(json.to_compact(), br#"{"command":"createClient","username":"u"}"#.to_vec());
        assert_eq!(build(&words, &mut Fixed(Err(PromptError::Mismatch))), Err(BuildError::Aborted));
    }
}
