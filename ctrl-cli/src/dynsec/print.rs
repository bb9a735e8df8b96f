//! Printing a reply the way mosquitto_ctrl 2.0.11 does, byte for byte: the first response of the
//! payload, `<command>: Error: <error>` on stderr for an error, the formatted data of get/list
//! commands on stdout, and nothing for a successful write command.
//!
//! Output is collected in an [`Output`] so that it can be tested and written in one go; strings
//! from the broker are printed as raw bytes, as C's `printf("%s")` does.

use dynsec::json::Json;

use crate::text::eq_ignore_case;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    fn out(&mut self, bytes: &[u8]) {
        self.stdout.extend_from_slice(bytes);
    }

    fn err(&mut self, text: &str) {
        self.stderr.extend_from_slice(text.as_bytes());
    }

    fn invalid_response(&mut self) {
        self.err("Error: Invalid response from server.\n");
    }
}

/// `%-20s`: left-justified, padded with spaces to 20 bytes (C counts bytes, not characters).
fn pad(out: &mut Vec<u8>, bytes: &[u8], width: usize) {
    out.extend_from_slice(bytes);
    out.extend(std::iter::repeat_n(b' ', width.saturating_sub(bytes.len())));
}

fn string_member<'a>(object: &'a Json, key: &str) -> Option<&'a [u8]> {
    object.get(key).and_then(Json::as_bytes)
}

/// cJSON_IsNumber + `(int)valuedouble`.
fn number_member(object: &Json, key: &str) -> Option<i32> {
    object.get(key).and_then(Json::as_int)
}

/// What a formatted reply looks like for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// `--json`: print the response object as compact JSON instead.
    pub raw_json: bool,
    /// `list* --verbose`: print every element in full.
    pub verbose_list: bool,
}

/// Formats the payload of a reply (`{"responses":[...]}`); only the first response is shown.
pub fn print_reply(payload: &[u8], style: Style) -> Output {
    let mut output = Output::default();
    let Ok(tree) = dynsec::json::parse(payload) else {
        output.err("Error: Payload not JSON.\n");
        return output;
    };
    let Some(response) = tree.get("responses").and_then(Json::as_array).and_then(|r| r.first()) else {
        output.err("Error: Payload missing data.\n");
        return output;
    };
    let Some(command) = response.get("command") else {
        output.err("Error: Payload missing data.\n");
        return output;
    };
    if style.raw_json {
        output.out(&response.to_compact());
        output.out(b"\n");
        return output;
    }
    if let Some(error) = response.get("error") {
        print_error_line(&mut output, command, error);
        return output;
    }
    let Some(name) = command.as_bytes() else {
        return output;
    };
    if eq_ignore_case(name, "listClients") {
        print_list(&mut output, response, "clients", "username", style.verbose_list.then_some(print_client_object));
    } else if eq_ignore_case(name, "listGroups") {
        print_list(&mut output, response, "groups", "groupname", style.verbose_list.then_some(print_group_object));
    } else if eq_ignore_case(name, "listRoles") {
        print_list(&mut output, response, "roles", "rolename", style.verbose_list.then_some(print_role_object));
    } else if eq_ignore_case(name, "getClient") {
        print_data_object(&mut output, response, "client", print_client_object);
    } else if eq_ignore_case(name, "getGroup") {
        print_data_object(&mut output, response, "group", print_group_object);
    } else if eq_ignore_case(name, "getRole") {
        print_data_object(&mut output, response, "role", print_role_object);
    } else if eq_ignore_case(name, "getDefaultACLAccess") {
        print_default_acl_access(&mut output, response);
    } else if eq_ignore_case(name, "getAnonymousGroup") {
        print_data_object(&mut output, response, "group", print_anonymous_group);
    } else if eq_ignore_case(name, "getDetails") {
        print_details(&mut output, response);
    }
    output
}

/// getDetails (mosquitto 2.1), laid out as mosquitto_ctrl 2.1's shell shows it.
fn print_details(output: &mut Output, response: &Json) {
    let Some(data) = response.get("data").filter(|d| d.is_object()) else {
        output.invalid_response();
        return;
    };
    for (label, key) in [
        ("Client count:", "clientCount"),
        ("Group count:", "groupCount"),
        ("Role count:", "roleCount"),
        ("Change index:", "changeIndex"),
    ] {
        let value = match data.get(key) {
            Some(Json::Number(n)) => *n as i64,
            _ => 0,
        };
        let mut line = Vec::new();
        pad(&mut line, label.as_bytes(), 16);
        line.extend_from_slice(format!("{value}\n").as_bytes());
        output.out(&line);
    }
}

/// `<command>: Error: <error>`; a non-string shows as `(null)`, as glibc's printf does.
pub fn print_error_line(output: &mut Output, command: &Json, error: &Json) {
    let mut line = Vec::new();
    line.extend_from_slice(command.as_bytes().unwrap_or(b"(null)"));
    line.extend_from_slice(b": Error: ");
    line.extend_from_slice(error.as_bytes().unwrap_or(b"(null)"));
    line.push(b'\n');
    output.stderr.extend_from_slice(&line);
}

type ObjectPrinter = fn(&mut Output, &Json) -> Result<(), ()>;

fn print_list(output: &mut Output, response: &Json, array_name: &str, key: &str, verbose: Option<ObjectPrinter>) {
    let Some(items) = response.get("data").and_then(|d| d.get(array_name)).and_then(Json::as_array) else {
        output.invalid_response();
        return;
    };
    for (index, item) in items.iter().enumerate() {
        if let (Some(printer), true) = (verbose, item.is_object()) {
            if index > 0 {
                output.out(b"\n");
            }
            if printer(output, item).is_err() {
                output.invalid_response();
            }
            continue;
        }
        let name = if item.is_object() { string_member(item, key) } else { item.as_bytes() };
        if let Some(name) = name {
            output.out(name);
            output.out(b"\n");
        }
    }
}

fn print_data_object(output: &mut Output, response: &Json, key: &str, printer: ObjectPrinter) {
    let object = response.get("data").filter(|d| d.is_object()).and_then(|d| d.get(key)).filter(|o| o.is_object());
    match object {
        Some(object) => {
            if printer(output, object).is_err() {
                output.invalid_response();
            }
        }
        None => output.invalid_response(),
    }
}

/// Roles of a client (label width 9) or a group (label width 10).
fn print_roles(output: &mut Output, roles: Option<&Json>, label_width: usize) {
    let Some(roles) = roles.and_then(Json::as_array) else {
        output.out(b"Roles:\n");
        return;
    };
    let mut first = true;
    for role in roles {
        let Some(name) = string_member(role, "rolename") else {
            continue;
        };
        let mut line = Vec::new();
        pad(&mut line, if first { b"Roles:" } else { b"" }, label_width);
        first = false;
        line.push(b' ');
        line.extend_from_slice(name);
        push_priority(&mut line, role);
        output.out(&line);
    }
}

fn push_priority(line: &mut Vec<u8>, object: &Json) {
    let priority = number_member(object, "priority").unwrap_or(-1);
    line.extend_from_slice(format!(" (priority: {priority})\n").as_bytes());
}

fn print_client_object(output: &mut Output, client: &Json) -> Result<(), ()> {
    let username = string_member(client, "username").ok_or(())?;
    output.out(b"Username: ");
    output.out(username);
    output.out(b"\n");
    match string_member(client, "clientid") {
        Some(id) => {
            output.out(b"Clientid: ");
            output.out(id);
            output.out(b"\n");
        }
        None => output.out(b"Clientid:\n"),
    }
    if let Some(disabled) = client.get("disabled").and_then(Json::as_bool) {
        output.out(if disabled { b"Disabled: true\n" } else { b"Disabled: false\n" });
    }
    print_roles(output, client.get("roles"), "Username:".len());
    let Some(groups) = client.get("groups").and_then(Json::as_array) else {
        output.out(b"Groups:\n");
        return Ok(());
    };
    let mut first = true;
    for group in groups {
        let Some(name) = string_member(group, "groupname") else {
            continue;
        };
        let mut line = Vec::new();
        line.extend_from_slice(if first { b"Groups:   " } else { b"          " });
        first = false;
        line.extend_from_slice(name);
        push_priority(&mut line, group);
        output.out(&line);
    }
    Ok(())
}

fn print_group_object(output: &mut Output, group: &Json) -> Result<(), ()> {
    let name = string_member(group, "groupname").ok_or(())?;
    output.out(b"Groupname: ");
    output.out(name);
    output.out(b"\n");
    print_roles(output, group.get("roles"), "Groupname:".len());
    if let Some(clients) = group.get("clients").and_then(Json::as_array) {
        let mut first = true;
        for client in clients {
            let Some(username) = string_member(client, "username") else {
                continue;
            };
            output.out(if first { b"Clients:   " } else { b"           " });
            first = false;
            output.out(username);
            output.out(b"\n");
        }
    }
    Ok(())
}

fn print_role_object(output: &mut Output, role: &Json) -> Result<(), ()> {
    let name = string_member(role, "rolename").ok_or(())?;
    output.out(b"Rolename: ");
    output.out(name);
    output.out(b"\n");
    if let Some(acls) = role.get("acls").and_then(Json::as_array) {
        let mut first = true;
        for acl in acls {
            let Some(acltype) = string_member(acl, "acltype") else {
                continue;
            };
            let mut line = Vec::new();
            line.extend_from_slice(if first { b"ACLs:     " } else { b"          " });
            first = false;
            pad(&mut line, acltype, 20);
            if let Some(allow) = acl.get("allow").and_then(Json::as_bool) {
                line.extend_from_slice(if allow { b" : allow" } else { b" : deny " });
            }
            if let Some(topic) = string_member(acl, "topic") {
                line.extend_from_slice(b" : ");
                line.extend_from_slice(topic);
            }
            push_priority(&mut line, acl);
            output.out(&line);
        }
    }
    Ok(())
}

fn print_anonymous_group(output: &mut Output, group: &Json) -> Result<(), ()> {
    let name = string_member(group, "groupname").ok_or(())?;
    output.out(name);
    output.out(b"\n");
    Ok(())
}

fn print_default_acl_access(output: &mut Output, response: &Json) {
    let acls = response.get("data").filter(|d| d.is_object()).and_then(|d| d.get("acls")).and_then(Json::as_array);
    let Some(acls) = acls else {
        output.invalid_response();
        return;
    };
    for acl in acls {
        let (Some(acltype), Some(allow)) = (string_member(acl, "acltype"), acl.get("allow").and_then(Json::as_bool))
        else {
            output.invalid_response();
            return;
        };
        let mut line = Vec::new();
        pad(&mut line, acltype, 20);
        line.extend_from_slice(if allow { b" : allow\n" } else { b" : deny\n" });
        output.out(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdout_of(payload: &str) -> String {
        let output = print_reply(payload.as_bytes(), Style::default());
        assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn get_client_layout() {
        let payload = r#"{"responses":[{"command":"getClient","data":{"client":{"username":"carol","clientid":"cid","disabled":true,"roles":[{"rolename":"rAllow","priority":1},{"rolename":"rInner"}],"groups":[{"groupname":"gAllow","priority":50},{"groupname":"g1"}]}}}]}"#;
        assert_eq!(
            stdout_of(payload),
            "Username: carol\nClientid: cid\nDisabled: true\nRoles:    rAllow (priority: 1)\n          rInner (priority: -1)\nGroups:   gAllow (priority: 50)\n          g1 (priority: -1)\n"
        );
        let bare =
            r#"{"responses":[{"command":"getClient","data":{"client":{"username":"u","roles":[],"groups":[]}}}]}"#;
        assert_eq!(stdout_of(bare), "Username: u\nClientid:\n");
    }

    #[test]
    fn get_group_and_role_layout() {
        let group = r#"{"responses":[{"command":"getGroup","data":{"group":{"groupname":"g1","clients":[{"username":"a"},{"username":"b"}],"roles":[{"rolename":"r","priority":4}]}}}]}"#;
        assert_eq!(stdout_of(group), "Groupname: g1\nRoles:     r (priority: 4)\nClients:   a\n           b\n");
        let role = r#"{"responses":[{"command":"getRole","data":{"role":{"rolename":"r","acls":[{"acltype":"publishClientSend","topic":"w/a","priority":2,"allow":true},{"acltype":"subscribeLiteral","topic":"x","priority":0,"allow":false}]}}}]}"#;
        assert_eq!(
            stdout_of(role),
            "Rolename: r\nACLs:     publishClientSend    : allow : w/a (priority: 2)\n          subscribeLiteral     : deny  : x (priority: 0)\n"
        );
    }

    #[test]
    fn default_access_and_lists() {
        let access = r#"{"responses":[{"command":"getDefaultACLAccess","data":{"acls":[{"acltype":"publishClientSend","allow":false},{"acltype":"subscribe","allow":true}]}}]}"#;
        assert_eq!(stdout_of(access), "publishClientSend    : deny\nsubscribe            : allow\n");
        let list = r#"{"responses":[{"command":"listClients","data":{"totalCount":2,"clients":["a","b"]}}]}"#;
        assert_eq!(stdout_of(list), "a\nb\n");
    }

    #[test]
    fn errors_and_malformed_replies() {
        let error = print_reply(
            br#"{"responses":[{"command":"createClient","error":"Client already exists"}]}"#,
            Style::default(),
        );
        assert_eq!(error.stderr, b"createClient: Error: Client already exists\n");
        assert_eq!(print_reply(b"nope", Style::default()).stderr, b"Error: Payload not JSON.\n");
        assert_eq!(print_reply(br#"{"responses":[]}"#, Style::default()).stderr, b"Error: Payload missing data.\n");
        assert_eq!(
            print_reply(br#"{"responses":[{"command":"getClient","data":{}}]}"#, Style::default()).stderr,
            b"Error: Invalid response from server.\n"
        );
        let odd = print_reply(br#"{"responses":[{"command":1,"error":false}]}"#, Style::default());
        assert_eq!(odd.stderr, b"(null): Error: (null)\n");
    }
}
