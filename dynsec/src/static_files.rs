//! mosquitto's static security files: `password_file` (mosquitto_passwd format) and `acl_file`,
//! parsed and evaluated as mosquitto 2.0 does (docs/compatibility.md §5.1, §5.4), for deployments with or
//! without dynsec.
//!
//! password_file: `user:hash` lines; `#` lines and lines without `:` are ignored; user and hash are
//! whitespace-trimmed; entries whose hash is not usable are dropped with a warning (mosquitto does
//! the same in TLS-enabled builds). Besides mosquitto 2.0's `$6$`/`$7$` we accept `$argon2id$` and
//! any salt length (mosquitto 2.1's forms). Evaluation: no username → defer; unknown username or
//! wrong/missing password → deny. That last rule is why, with a password file, a client that sends
//! a username must send a valid one even when anonymous access is allowed (§5.3).
//!
//! acl_file: `topic [read|write|readwrite|deny] <filter>`, `user <name>`, `pattern [access]
//! <filter>` with `%c`/`%u`, `#` comment lines; tokens separated by spaces (not tabs). `topic` lines
//! before the first `user` line belong to clients without a username. Evaluation (publish and
//! delivery only — subscriptions are always allowed by acl_file): the client's own list, deny
//! entries first, then the patterns, deny entries first; the first matching entry that denies or
//! grants the access decides; nothing → deny. An entry that does not start with `$` never matches
//! a `$` topic — for patterns judged before `%c`/`%u` are substituted, so a client id or username
//! starting with `$` cannot turn `%c/#` into `$CONTROL/#` (mosquitto 2.1; 2.0.11 allowed it).

use std::collections::HashMap;
use std::path::Path;

use crate::AuthResult;
use crate::acl::Decision;
use crate::password::PasswordHash;
use crate::topic::{topic_matches_filter, valid_filter};

/// A line of a file that was skipped, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWarning {
    pub line: usize,
    pub message: String,
}

/// A mosquitto password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    entries: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    pub fn load(path: &Path) -> std::io::Result<(PasswordFile, Vec<LineWarning>)> {
        Ok(Self::parse(&std::fs::read(path)?))
    }

    /// Never fails: like mosquitto, unusable lines are dropped and reported.
    pub fn parse(text: &[u8]) -> (PasswordFile, Vec<LineWarning>) {
        let mut file = PasswordFile::default();
        let mut warnings = Vec::new();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(raw);
            if line.starts_with('#') || !line.contains(':') {
                continue;
            }
            let warn = |message: String| LineWarning { line: i + 1, message };
            // strtok semantics: empty fields between ':' separators are skipped.
            let mut fields = line.split(':').filter(|f| !f.is_empty());
            let Some(username) = fields.next().map(str::trim) else { continue };
            if username.len() > 65535 {
                warnings.push(warn("username too long".into()));
                continue;
            }
            let Some(hash) = fields.next().map(str::trim).filter(|h| !h.is_empty()) else {
                warnings.push(warn(format!("missing password hash for user {username}, entry removed")));
                continue;
            };
            match PasswordHash::parse(hash) {
                Ok(hash) => {
                    file.entries.insert(username.to_owned(), hash);
                }
                Err(e) => {
                    warnings.push(warn(format!("invalid password hash for user {username} ({e}), entry removed")))
                }
            }
        }
        (file, warnings)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The stored hash of `username`, for verifying off the caller's thread.
    pub fn hash_of(&self, username: &str) -> Option<&PasswordHash> {
        self.entries.get(username)
    }

    /// mosquitto's password-file auth hook. Blocking: it computes a hash.
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthResult {
        let Some(username) = username else { return AuthResult::Defer };
        match (self.entries.get(username), password.filter(|p| !p.is_empty())) {
            (Some(hash), Some(password)) if hash.verify(password) => AuthResult::Allow,
            _ => AuthResult::Deny,
        }
    }
}

/// What an acl_file line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl FileAccess {
    fn grants(self, write: bool) -> bool {
        match self {
            FileAccess::ReadWrite => true,
            FileAccess::Read => !write,
            FileAccess::Write => write,
            FileAccess::Deny => false,
        }
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub filter: String,
    pub access: FileAccess,
}

/// Appends keeping mosquitto's order: deny rules go to the front.
fn push_rule(list: &mut Vec<Rule>, rule: Rule) {
    if rule.access == FileAccess::Deny {
        list.insert(0, rule);
    } else {
        list.push(rule);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct AclFileError {
    pub line: usize,
    pub message: String,
}

/// A parsed acl_file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    /// Rules of clients without a username (`topic` lines before any `user` line).
    anonymous: Option<Vec<Rule>>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
    /// Patterns without `%c`/`%u` (mosquitto warns about them at load).
    pub warnings: Vec<LineWarning>,
}

impl AclFile {
    pub fn load(path: &Path) -> Result<AclFile, AclFileError> {
        let bytes = std::fs::read(path).map_err(|e| AclFileError { line: 0, message: format!("cannot read: {e}") })?;
        Self::parse(&bytes)
    }

    /// Strict, like mosquitto (which refuses to start on any bad line).
    pub fn parse(text: &[u8]) -> Result<AclFile, AclFileError> {
        let mut file = AclFile::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let err = |message: String| AclFileError { line: line_no, message };
            let line = String::from_utf8(raw.to_vec()).map_err(|_| err("not valid UTF-8".into()))?;
            let line = line.trim_end();
            if line.starts_with('#') {
                continue;
            }
            // strtok(" "): runs of spaces separate tokens, tabs do not.
            let rest = line.trim_start_matches(' ');
            if rest.is_empty() {
                continue;
            }
            let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let rest = rest.trim_start_matches(' ');
            match keyword {
                "topic" | "pattern" => {
                    if rest.is_empty() {
                        return Err(err(format!("empty topic in '{keyword}' line")));
                    }
                    let (first, remainder) = rest.split_once(' ').unwrap_or((rest, ""));
                    let remainder = remainder.trim_matches([' ', '\t']);
                    let (access, filter) = if remainder.is_empty() {
                        // A single token is the topic ("topic read" means the topic "read").
                        (FileAccess::ReadWrite, first)
                    } else {
                        let access = match first {
                            "read" => FileAccess::Read,
                            "write" => FileAccess::Write,
                            "readwrite" => FileAccess::ReadWrite,
                            "deny" => FileAccess::Deny,
                            other => return Err(err(format!("invalid topic access type \"{other}\""))),
                        };
                        (access, remainder)
                    };
                    if !valid_filter(filter) {
                        return Err(err(format!("invalid ACL topic \"{filter}\"")));
                    }
                    let rule = Rule { filter: filter.to_owned(), access };
                    if keyword == "pattern" {
                        if !filter.contains("%c") && !filter.contains("%u") {
                            file.warnings.push(LineWarning {
                                line: line_no,
                                message: format!("ACL pattern '{filter}' does not contain '%c' or '%u'"),
                            });
                        }
                        push_rule(&mut file.patterns, rule);
                    } else {
                        let list = match &user {
                            Some(u) => file.users.entry(u.clone()).or_default(),
                            None => file.anonymous.get_or_insert_default(),
                        };
                        push_rule(list, rule);
                    }
                }
                "user" => {
                    let name = rest.trim_matches([' ', '\t']);
                    if name.is_empty() {
                        return Err(err("missing username".into()));
                    }
                    user = Some(name.to_owned());
                }
                _ => return Err(err(format!("invalid line: {line}"))),
            }
        }
        Ok(file)
    }

    /// The `topic` rules of clients without a username, in evaluation order (denies first).
    pub fn anonymous_rules(&self) -> &[Rule] {
        self.anonymous.as_deref().unwrap_or_default()
    }

    /// Each `user` section's `topic` rules, in evaluation order (denies first).
    pub fn user_rules(&self) -> impl Iterator<Item = (&str, &[Rule])> {
        self.users.iter().map(|(user, rules)| (user.as_str(), rules.as_slice()))
    }

    /// The `pattern` rules, in evaluation order (denies first).
    pub fn pattern_rules(&self) -> &[Rule] {
        &self.patterns
    }

    /// Publish (`write`) or delivery (`!write`) check. Subscribe and unsubscribe are always
    /// allowed by acl_file and never reach here.
    pub fn check(&self, username: Option<&str>, client_id: &str, topic: &str, write: bool) -> Decision {
        let own = match username {
            Some(u) => self.users.get(u),
            None => self.anonymous.as_ref(),
        };
        if own.is_none() && self.patterns.is_empty() {
            return Decision::Deny;
        }
        for rule in own.into_iter().flatten() {
            if topic.starts_with('$') && !rule.filter.starts_with('$') {
                continue;
            }
            if topic_matches_filter(&rule.filter, topic) {
                if rule.access == FileAccess::Deny {
                    return Decision::Deny;
                }
                if rule.access.grants(write) {
                    return Decision::Allow;
                }
            }
        }
        if !self.patterns.is_empty()
            && (username.is_some_and(|u| u.contains(['+', '#'])) || client_id.contains(['+', '#']))
        {
            // A crafted username or client id must not widen a pattern.
            return Decision::Deny;
        }
        for rule in &self.patterns {
            if rule.filter.contains("%u") && username.is_none() {
                continue;
            }
            // Judged on the pattern as written, before substitution (as mosquitto 2.1 does; 2.0.11
            // substitutes first, so `%c/#` reached `$CONTROL/…` for a client id `$CONTROL`).
            if topic.starts_with('$') && !rule.filter.starts_with('$') {
                continue;
            }
            let mut filter = rule.filter.replace("%c", client_id);
            if let Some(u) = username {
                filter = filter.replace("%u", u);
            }
            if topic_matches_filter(&filter, topic) {
                if rule.access == FileAccess::Deny {
                    return Decision::Deny;
                }
                if rule.access.grants(write) {
                    return Decision::Allow;
                }
            }
        }
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::HashPolicy;

    #[test]
    fn password_file_lines() {
        let hash = PasswordHash::new(b"pw", HashPolicy::default()).unwrap().encode();
        let text =
            format!("# comment\n  alice : {hash}  \nnocolon\nbob:\ncarol:plaintext\n:{hash}\n\ndave:{hash}:extra\n");
        let (file, warnings) = PasswordFile::parse(text.as_bytes());
        // ":hash" makes the hash a username without password (strtok skips the empty field).
        assert_eq!(file.len(), 2);
        assert_eq!(file.authenticate(Some("alice"), Some(b"pw")), AuthResult::Allow);
        assert_eq!(file.authenticate(Some("alice"), Some(b"no")), AuthResult::Deny);
        assert_eq!(file.authenticate(Some("alice"), None), AuthResult::Deny);
        assert_eq!(file.authenticate(Some("stranger"), Some(b"pw")), AuthResult::Deny);
        assert_eq!(file.authenticate(None, None), AuthResult::Defer);
        assert_eq!(file.authenticate(Some("dave"), Some(b"pw")), AuthResult::Allow);
        assert_eq!(warnings.iter().map(|w| w.line).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert!(file.hash_of("bob").is_none() && file.hash_of("carol").is_none());
    }

    /// An entry whose hash parameters are beyond the limits is dropped like any other unusable
    /// entry, with a warning naming its line, the user and the limit; the rest of the file loads.
    #[test]
    fn password_file_entries_beyond_the_cost_limits_are_dropped_with_their_line() {
        let good = PasswordHash::new(b"pw", HashPolicy::default()).unwrap().encode();
        let text = format!(
            "alice:{good}\nslow:$7$4294967295$AAAAAAAAAAAAAAAA$AAAA\n\
             greedy:$argon2id$v=19$m=4194304,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\nbob:{good}\n"
        );
        let (file, warnings) = PasswordFile::parse(text.as_bytes());
        let mut users: Vec<&str> = file.usernames().collect();
        users.sort_unstable();
        assert_eq!(users, ["alice", "bob"]);
        assert_eq!(
            warnings,
            [
                LineWarning {
                    line: 2,
                    message: "invalid password hash for user slow (PBKDF2 iterations 4294967295 above the limit of 2000000), entry removed".into()
                },
                LineWarning {
                    line: 3,
                    message: "invalid password hash for user greedy (argon2id memory m=4194304 KiB above the limit of 262144), entry removed".into()
                },
            ]
        );
        // A dropped user is refused, as an unknown one, and costs no hashing.
        assert_eq!(file.authenticate(Some("slow"), Some(b"pw")), AuthResult::Deny);
        assert_eq!(file.authenticate(Some("bob"), Some(b"pw")), AuthResult::Allow);
    }

    fn acl(text: &str) -> AclFile {
        AclFile::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn acl_file_evaluation() {
        let f = acl(
            "# anonymous\ntopic read public/#\ntopic deny public/secret\n\nuser alice\ntopic readwrite alice/#\ntopic write   logs/x y \ntopic deny alice/private\nuser bob\ntopic bob/only\npattern read devices/%c/cmd\npattern write users/%u/out\npattern deny devices/+/cmd/blocked\n",
        );
        let rows: &[(Option<&str>, &str, &str, bool, Decision)] = &[
            (None, "c", "public/a", false, Decision::Allow),
            (None, "c", "public/a", true, Decision::Deny),
            (None, "c", "public/secret", false, Decision::Deny),
            (Some("alice"), "c", "alice/x", true, Decision::Allow),
            (Some("alice"), "c", "alice/private", false, Decision::Deny),
            (Some("alice"), "c", "logs/x y", true, Decision::Allow),
            (Some("alice"), "c", "public/a", false, Decision::Deny),
            (Some("bob"), "c", "bob/only", true, Decision::Allow),
            (Some("alice"), "d1", "devices/d1/cmd", false, Decision::Allow),
            (Some("alice"), "d1", "devices/d2/cmd", false, Decision::Deny),
            (None, "d1", "devices/d1/cmd", false, Decision::Allow),
            (None, "d1", "users//out", true, Decision::Deny),
            (Some("bob"), "c", "users/bob/out", true, Decision::Allow),
            (Some("bob"), "d1", "devices/d1/cmd/blocked", false, Decision::Deny),
            (Some("carol"), "c", "users/carol/out", true, Decision::Allow),
            // dangerous names never get pattern access
            (Some("a+b"), "c", "users/a+b/out", true, Decision::Deny),
            (Some("carol"), "d#", "devices/d#/cmd", false, Decision::Deny),
            // '$' topics need '$' rules
            (Some("alice"), "c", "$SYS/x", false, Decision::Deny),
        ];
        for (user, client, topic, write, expected) in rows {
            assert_eq!(f.check(*user, client, topic, *write), *expected, "{user:?} {client} {topic} write={write}");
        }
    }

    /// A client id or username starting with `$` does not turn a pattern into a `$` filter.
    #[test]
    fn patterns_never_reach_dollar_topics_through_substitution() {
        let f = acl("pattern readwrite %c/#\npattern readwrite %u/#\npattern write $SYS/broker/connection/%c/state\n");
        for (user, client, topic, write, expected) in [
            (None, "$CONTROL", "$CONTROL/dynamic-security/v1", true, Decision::Deny),
            (None, "$CONTROL", "$CONTROL/dynamic-security/v1/response", false, Decision::Deny),
            (Some("$CONTROL"), "c", "$CONTROL/dynamic-security/v1", true, Decision::Deny),
            (Some("$SYS"), "c", "$SYS/broker/uptime", false, Decision::Deny),
            (None, "dev", "dev/x", true, Decision::Allow),
            (Some("u"), "dev", "u/x", false, Decision::Allow),
            (None, "dev", "$SYS/broker/connection/dev/state", true, Decision::Allow),
        ] {
            assert_eq!(f.check(user, client, topic, write), expected, "{user:?} {client} {topic} write={write}");
        }
    }

    #[test]
    fn acl_file_with_only_comments_denies_everything() {
        let f = acl("# nothing here\n");
        assert_eq!(f.check(None, "c", "a", false), Decision::Deny);
        assert_eq!(f.check(Some("u"), "c", "a", true), Decision::Deny);
    }

    #[test]
    fn acl_file_syntax_errors_name_the_line() {
        for (text, line) in [
            ("topic read a\nbogus line\n", 2),
            ("topic sometimes a/b\n", 1),
            ("\n\ntopic read a/#/b\n", 3),
            ("user\n", 1),
            ("topic\n", 1),
            ("\ttopic a\n", 1),
            ("  # indented comment is not a comment\n", 1),
        ] {
            assert_eq!(AclFile::parse(text.as_bytes()).unwrap_err().line, line, "{text:?}");
        }
        // A single token after topic is the topic itself, with readwrite access.
        let f = acl("topic read\n");
        assert_eq!(f.check(None, "c", "read", true), Decision::Allow);
        assert_eq!(acl("pattern read static/topic\n").warnings.len(), 1);
    }
}
