//! `dynsec migrate`: a mosquitto deployment secured by `password_file` and `acl_file` turned into
//! a `dynamic-security.json` that decides the same (the job of mosquitto 2.1's
//! migrate_to_dynsec.py, done here so that the decisions stay the same, not just the words).
//!
//! How acl_file decides (mosquitto 2.0, `dynsec::static_files`): for publish and delivery only,
//! the client's own rules (its `user` section, or the `topic` lines before any `user` line for a
//! client without a username), denies first, then the `pattern` rules, denies first; the first
//! matching rule that denies or grants decides; nothing matching denies. Subscriptions are never
//! refused. The conversion keeps that order with roles:
//! - every password_file user becomes a client with the same hash, holding the role
//!   `acl-user-<name>` (its own rules; priority 2) and `acl-patterns` (priority 1);
//! - the `topic` lines for clients without a username become `acl-anonymous`, held with
//!   `acl-patterns` by the group `anonymous-clients`, which is made the anonymous group;
//! - a rule becomes `publishClientSend` (write) and/or `publishClientReceive` (read) ACLs; `deny`
//!   becomes both, denying, at priority 1 so they come before the grants (priority 0);
//! - default access: publishing and delivery denied, subscribing and unsubscribing allowed. With
//!   no acl_file everything is allowed, as in mosquitto with no ACL source.
//!
//! Not converted, and reported: acl_file sections of users without a password entry (they could
//! not log in), password entries mosquitto could not use, `pattern` lines using `%c`/`%u` inside a
//! topic level (dynsec substitutes whole levels only), `topic` lines with a level that is exactly
//! `%c` or `%u` (literal text in acl_file, a placeholder in dynsec). At run time dynsec refuses
//! what a client id or username containing `/`, `+` or `#` would make of a placeholder; acl_file
//! substitutes `/` (docs/known-differences.md).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dynsec::model::{Acl, AclType, Client, DefaultAccess, Group, Membership, Model, Role};
use dynsec::static_files::{AclFile, FileAccess, PasswordFile, Rule};

use crate::exit_code;
use crate::text::lossy;

const USAGE: &str = "\
Usage: dynsec-ctrl dynsec migrate [--conf mosquitto.conf [--write-conf new.conf [--dynsec-lib plugin.so]]]
                                  [--password-file file] [--acl-file file] <new-dynamic-security.json>
  Reads password_file and acl_file from mosquitto.conf unless given; writes a new file (never replaces one).
  --write-conf: also writes mosquitto.conf changed as mosquitto 2.1's migrate_to_dynsec.py changes it
  (acl_file lines dropped, each password_file line replaced by the plugin lines), as a new file.
";

/// The plugin path written by `--write-conf` unless `--dynsec-lib` names one (Debian's and
/// Ubuntu's on x86-64; the broker recognises the plugin by its file name).
const DEFAULT_DYNSEC_LIB: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";

const USER_ROLE_PRIORITY: i32 = 2;
const PATTERN_ROLE_PRIORITY: i32 = 1;
const DENY_PRIORITY: i32 = 1;
const PATTERNS_ROLE: &str = "acl-patterns";
const ANONYMOUS_ROLE: &str = "acl-anonymous";
const ANONYMOUS_GROUP: &str = "anonymous-clients";

/// What a migration produced: the model to write, and what it could not carry over.
#[derive(Debug, Default)]
pub struct Migration {
    pub model: Model,
    pub not_converted: Vec<String>,
}

/// Runs `migrate <args...>`; returns the exit status.
pub fn run(args: &[Vec<u8>]) -> i32 {
    let mut conf = None;
    let mut password_file = None;
    let mut acl_file = None;
    let mut write_conf = None;
    let mut dynsec_lib = None;
    let mut output = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let slot = match word.as_slice() {
            b"--conf" | b"-c" => &mut conf,
            b"--password-file" => &mut password_file,
            b"--acl-file" => &mut acl_file,
            b"--write-conf" => &mut write_conf,
            b"--dynsec-lib" => &mut dynsec_lib,
            _ if output.is_none() && !word.starts_with(b"-") => {
                output = Some(PathBuf::from(lossy(word)));
                continue;
            }
            _ => return usage(),
        };
        match words.next() {
            Some(value) => *slot = Some(PathBuf::from(lossy(value))),
            None => return usage(),
        }
    }
    let Some(output) = output else { return usage() };
    if (write_conf.is_some() && conf.is_none()) || (dynsec_lib.is_some() && write_conf.is_none()) {
        return fail("--write-conf needs --conf, and --dynsec-lib needs --write-conf");
    }
    if let Some(conf) = &conf {
        match security_files(conf) {
            Ok((from_conf_password, from_conf_acl)) => {
                password_file = password_file.or(from_conf_password);
                acl_file = acl_file.or(from_conf_acl);
            }
            Err(message) => return fail(&message),
        }
    }
    let Some(password_file) = password_file else {
        return fail("no password_file: give --password-file or a mosquitto.conf that names one");
    };
    let passwords = match std::fs::read(&password_file) {
        Ok(bytes) => bytes,
        Err(e) => return fail(&format!("{}: {e}", password_file.display())),
    };
    let acls = match &acl_file {
        None => None,
        Some(path) => match AclFile::load(path) {
            Ok(file) => Some(file),
            Err(e) => return fail(&format!("{}: {e}", path.display())),
        },
    };
    let migration = migrate(&passwords, acls.as_ref());
    for new_file in [Some(&output), write_conf.as_ref()].into_iter().flatten() {
        if new_file.exists() {
            return fail(&format!("{} exists; migrate writes new files only", new_file.display()));
        }
    }
    let new_conf = match (&conf, &write_conf) {
        (Some(conf), Some(_)) => {
            let lib = dynsec_lib.unwrap_or_else(|| PathBuf::from(DEFAULT_DYNSEC_LIB));
            // The plugin reads the file from wherever the broker runs: an absolute path.
            let config_file = std::path::absolute(&output).unwrap_or_else(|_| output.clone());
            match std::fs::read_to_string(conf) {
                Ok(text) => Some(migrated_conf(&text, &lib, &config_file)),
                Err(e) => return fail(&format!("{}: {e}", conf.display())),
            }
        }
        _ => None,
    };
    if let Err(e) = dynsec::atomic_file::replace(&output, &dynsec::file::save(&migration.model)) {
        return fail(&e.to_string());
    }
    if let (Some(path), Some(text)) = (&write_conf, &new_conf)
        && let Err(e) = dynsec::atomic_file::replace(path, text.as_bytes())
    {
        return fail(&format!("{}: {e}", path.display()));
    }
    let model = &migration.model;
    let mut report = format!(
        "Wrote {}: {} clients, {} roles{}.\n",
        output.display(),
        model.clients.len(),
        model.roles.len(),
        if model.anonymous_group.is_some() { ", anonymous group anonymous-clients" } else { "" }
    );
    if migration.not_converted.is_empty() {
        report.push_str("Everything was converted.\n");
    } else {
        report.push_str(&format!("Not converted ({}):\n", migration.not_converted.len()));
        for item in &migration.not_converted {
            report.push_str(&format!("  {item}\n"));
        }
    }
    if let Some(path) = &write_conf {
        report.push_str(&format!(
            "Wrote {}: acl_file removed, password_file replaced by the dynamic-security plugin.\n",
            path.display()
        ));
    }
    report.push_str(
        "No client may administer it yet: add one offline, e.g. dynsec-ctrl -f FILE dynsec createRole admin …\n",
    );
    let _ = std::io::stdout().write_all(report.as_bytes());
    exit_code::OK
}

fn usage() -> i32 {
    let _ = std::io::stderr().write_all(USAGE.as_bytes());
    exit_code::USAGE
}

fn fail(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "Error: {message}");
    exit_code::USAGE
}

/// `conf` as mosquitto 2.1's migrate_to_dynsec.py rewrites it: `acl_file` lines dropped, each
/// `password_file` line replaced by the plugin and its configuration file; the rest kept as is.
fn migrated_conf(conf: &str, dynsec_lib: &Path, config_file: &Path) -> String {
    let mut out = String::with_capacity(conf.len() + 128);
    for line in conf.lines() {
        let key = line.trim_start().split([' ', '\t']).next().unwrap_or("");
        match key {
            "acl_file" => {}
            "password_file" => {
                out.push_str(&format!("plugin {}\n", dynsec_lib.display()));
                out.push_str(&format!("plugin_opt_config_file {}\n", config_file.display()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The `password_file` and `acl_file` a mosquitto.conf names (its own lines; `include_dir` is
/// not followed). Different files per listener cannot become one dynsec configuration.
fn security_files(conf: &Path) -> Result<(Option<PathBuf>, Option<PathBuf>), String> {
    let text = std::fs::read_to_string(conf).map_err(|e| format!("{}: {e}", conf.display()))?;
    let (mut passwords, mut acls) = (None::<PathBuf>, None::<PathBuf>);
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let value = value.trim();
        let slot = match key {
            "password_file" => &mut passwords,
            "acl_file" => &mut acls,
            _ => continue,
        };
        let path = PathBuf::from(value);
        if slot.as_ref().is_some_and(|known| *known != path) {
            return Err(format!(
                "{}: more than one {key} ({} and {}); migrate each with --password-file and --acl-file",
                conf.display(),
                slot.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                path.display()
            ));
        }
        *slot = Some(path);
    }
    Ok((passwords, acls))
}

/// Converts a password file's bytes and an acl_file.
pub fn migrate(password_file: &[u8], acl_file: Option<&AclFile>) -> Migration {
    let mut migration = Migration::default();
    let (passwords, warnings) = PasswordFile::parse(password_file);
    for warning in warnings {
        migration.not_converted.push(format!("password_file line {}: {}", warning.line, warning.message));
    }
    let model = &mut migration.model;
    let Some(acl_file) = acl_file else {
        // No ACL source: mosquitto allows everything.
        model.default_access = DefaultAccess {
            publish_client_send: true,
            publish_client_receive: true,
            subscribe: true,
            unsubscribe: true,
        };
        for username in passwords.usernames() {
            model.clients.insert(username.to_owned(), client(username, &passwords, Vec::new()));
        }
        return migration;
    };
    model.default_access =
        DefaultAccess { publish_client_send: false, publish_client_receive: false, subscribe: true, unsubscribe: true };
    let mut skipped = Vec::new();
    let patterns = role(PATTERNS_ROLE, "acl_file pattern lines", acl_file.pattern_rules(), true, &mut skipped);
    let has_patterns = !acl_file.pattern_rules().is_empty();
    if has_patterns {
        model.roles.insert(PATTERNS_ROLE.to_owned(), patterns);
    }
    let own_rules: BTreeMap<&str, &[Rule]> = acl_file.user_rules().collect();
    for (user, rules) in &own_rules {
        if passwords.hash_of(user).is_none() {
            migration.not_converted.push(format!("acl_file user {user}: no usable password_file entry"));
            continue;
        }
        let name = format!("acl-user-{user}");
        model.roles.insert(name.clone(), role(&name, &format!("acl_file rules of {user}"), rules, false, &mut skipped));
    }
    for username in passwords.usernames() {
        let mut roles = Vec::new();
        if own_rules.contains_key(username) {
            roles.push(Membership { name: format!("acl-user-{username}"), priority: USER_ROLE_PRIORITY });
        }
        if has_patterns {
            roles.push(Membership { name: PATTERNS_ROLE.to_owned(), priority: PATTERN_ROLE_PRIORITY });
        }
        model.clients.insert(username.to_owned(), client(username, &passwords, roles));
    }
    let mut group = Group {
        name: ANONYMOUS_GROUP.to_owned(),
        textname: Some("Clients without a username".to_owned()),
        textdescription: None,
        roles: Vec::new(),
        members: BTreeMap::new(),
    };
    if !acl_file.anonymous_rules().is_empty() {
        let rules = acl_file.anonymous_rules();
        model.roles.insert(
            ANONYMOUS_ROLE.to_owned(),
            role(ANONYMOUS_ROLE, "acl_file topic lines for clients without a username", rules, false, &mut skipped),
        );
        group.roles.push(Membership { name: ANONYMOUS_ROLE.to_owned(), priority: USER_ROLE_PRIORITY });
    }
    if has_patterns {
        group.roles.push(Membership { name: PATTERNS_ROLE.to_owned(), priority: PATTERN_ROLE_PRIORITY });
    }
    model.groups.insert(ANONYMOUS_GROUP.to_owned(), group);
    model.anonymous_group = Some(ANONYMOUS_GROUP.to_owned());
    migration.not_converted.extend(skipped);
    migration
}

fn client(username: &str, passwords: &PasswordFile, roles: Vec<Membership>) -> Client {
    Client {
        username: username.to_owned(),
        clientid: None,
        textname: None,
        textdescription: None,
        disabled: false,
        password: passwords.hash_of(username).cloned(),
        roles,
        groups: Vec::new(),
    }
}

/// Whether `filter` uses `%c`/`%u` as dynsec understands them (whole levels only), and whether
/// it contains them at all.
fn placeholders(filter: &str) -> (bool, bool) {
    let whole = filter.split('/').any(|level| level == "%c" || level == "%u");
    let inside =
        filter.split('/').any(|level| level != "%c" && level != "%u" && (level.contains("%c") || level.contains("%u")));
    (whole, inside)
}

/// One role holding `rules` (already in acl_file's evaluation order, denies first).
fn role(name: &str, text: &str, rules: &[Rule], patterns: bool, skipped: &mut Vec<String>) -> Role {
    let mut role = Role { name: name.to_owned(), textname: Some(text.to_owned()), ..Role::default() };
    for rule in rules {
        let (whole, inside) = placeholders(&rule.filter);
        let keyword = if patterns { "pattern" } else { "topic" };
        if patterns && inside {
            skipped.push(format!("acl_file {keyword} {}: %c/%u inside a topic level", rule.filter));
            continue;
        }
        if !patterns && whole {
            skipped.push(format!("acl_file {keyword} {}: a level %c or %u would become a placeholder", rule.filter));
            continue;
        }
        let (send, receive, allow) = match rule.access {
            FileAccess::Read => (false, true, true),
            FileAccess::Write => (true, false, true),
            FileAccess::ReadWrite => (true, true, true),
            FileAccess::Deny => (true, true, false),
        };
        let priority = if allow { 0 } else { DENY_PRIORITY };
        for (wanted, acl_type) in [(send, AclType::PublishClientSend), (receive, AclType::PublishClientReceive)] {
            let list = &mut role.acls[acl_type.index()];
            // The first rule for a topic decides in acl_file too (denies come first).
            if wanted && !list.iter().any(|acl| acl.topic == rule.filter) {
                let at = list.partition_point(|acl| acl.priority >= priority);
                list.insert(at, Acl { topic: rule.filter.clone(), priority, allow });
            }
        }
    }
    role
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynsec::password::{HashPolicy, PasswordHash};

    #[test]
    fn the_conf_loses_acl_file_and_gets_the_plugin_for_password_file() {
        let conf = "listener 1883\n# acl_file kept in a comment\npassword_file /etc/mosquitto/pw\n  acl_file /etc/mosquitto/acl\nallow_anonymous false\n";
        let migrated = migrated_conf(conf, Path::new("/lib/dynsec.so"), Path::new("/etc/mosquitto/dynsec.json"));
        assert_eq!(
            migrated,
            "listener 1883\n# acl_file kept in a comment\nplugin /lib/dynsec.so\nplugin_opt_config_file /etc/mosquitto/dynsec.json\nallow_anonymous false\n"
        );
    }

    #[test]
    fn rules_become_ordered_roles_and_the_rest_is_reported() {
        let hash = PasswordHash::new(b"pw", HashPolicy::default()).unwrap().encode();
        let passwords = format!("alice:{hash}\nbob:{hash}\nbroken:$9$x\n");
        let acl = AclFile::parse(
            b"topic read public/#\nuser alice\ntopic readwrite a/#\ntopic deny a/secret\ntopic read lit/%c\n\
              user ghost\ntopic g\npattern write dev/%c/up\npattern read x/pre-%u\n",
        )
        .unwrap();
        let migration = migrate(passwords.as_bytes(), Some(&acl));
        let model = &migration.model;
        assert_eq!(model.clients.len(), 2);
        assert!(model.clients["alice"].password.is_some());
        let alice = &model.roles["acl-user-alice"];
        let receive: Vec<(&str, bool)> =
            alice.acls[AclType::PublishClientReceive.index()].iter().map(|a| (a.topic.as_str(), a.allow)).collect();
        assert_eq!(receive, [("a/secret", false), ("a/#", true)]);
        assert_eq!(model.clients["bob"].roles.len(), 1, "bob holds only the patterns");
        assert_eq!(model.anonymous_group.as_deref(), Some(ANONYMOUS_GROUP));
        let report = migration.not_converted.join("\n");
        for expected in ["line 3", "user ghost", "x/pre-%u", "lit/%c"] {
            assert!(report.contains(expected), "{expected} missing from {report}");
        }
    }
}
