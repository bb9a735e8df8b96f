//! `dynsec init <file> <admin-user> [admin-password]`: writes, offline, the same starting
//! configuration as mosquitto_ctrl: one administrator holding the role `admin` (the dynsec
//! control topics, `$SYS/#`, and reading/subscribing/unsubscribing `#`) and the default access
//! deny/allow/deny/allow.
//!
//! Differences, on purpose: the password is hashed with [`INIT_ITERATIONS`] PBKDF2 iterations
//! (mosquitto_ctrl 2.0 writes 101; mosquitto 2.0 reads any count), the file is created with mode
//! 0600 without ever replacing an existing file (even one created concurrently), and a write
//! failure exits with status 1.

use std::io::Write;
use std::path::Path;

use dynsec::json::Json;
use dynsec::password::{DEFAULT_PBKDF2_ITERATIONS, HashPolicy, PasswordHash};

use crate::dynsec::eprint;
use crate::exit_code;
use crate::prompt::get_password;
use crate::text::lossy;

/// PBKDF2-SHA512 iterations for the administrator's password.
pub const INIT_ITERATIONS: u32 = DEFAULT_PBKDF2_ITERATIONS;

const ADMIN_ROLE: &str = "admin";

/// The ACLs of the `admin` role, in mosquitto_ctrl's order.
const ADMIN_ACLS: [(&str, &str); 8] = [
    ("publishClientSend", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$CONTROL/dynamic-security/#"),
    ("subscribePattern", "$CONTROL/dynamic-security/#"),
    ("publishClientReceive", "$SYS/#"),
    ("subscribePattern", "$SYS/#"),
    ("publishClientReceive", "#"),
    ("subscribePattern", "#"),
    ("unsubscribePattern", "#"),
];

pub fn run(args: &[Vec<u8>]) -> i32 {
    if args.len() < 2 {
        eprint("dynsec init: Not enough arguments - filename, or admin-user missing.\n");
        eprint("Error: Invalid function arguments provided.\n");
        return exit_code::INVALID_ARGUMENTS;
    }
    if args.len() > 3 {
        eprint("dynsec init: Too many arguments.\n");
        eprint("Error: Invalid function arguments provided.\n");
        return exit_code::INVALID_ARGUMENTS;
    }
    let file = lossy(&args[0]);
    let admin = &args[1];
    let password = match args.get(2) {
        Some(password) => password.clone(),
        None => {
            let name = lossy(admin);
            let prompt = format!("New password for {name}: ");
            let verify = format!("Reenter password for {name}: ");
            match get_password(&prompt, Some(&verify), false) {
                Ok(password) => password,
                Err(_) => return exit_code::OK,
            }
        }
    };
    let already_exists = || {
        eprint(&format!("dynsec init: '{file}' already exists. Remove the file or use a different location..\n"));
        exit_code::OK
    };
    if Path::new(&file).exists() {
        return already_exists();
    }
    let document = match initial_config(admin, &password, INIT_ITERATIONS) {
        Ok(document) => document,
        Err(message) => {
            eprint(&format!("dynsec init: {message}\n"));
            return exit_code::USAGE;
        }
    };
    match dynsec::atomic_file::create_new(Path::new(&file), &document.to_pretty()) {
        Ok(()) => {}
        Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => return already_exists(),
        Err(e) => {
            eprint(&format!(
                "dynsec init: Unable to open '{file}' for writing ({}).\n",
                crate::mqtt::transport::os_error_text(&e.source)
            ));
            return exit_code::USAGE;
        }
    }
    let name = lossy(admin);
    let text = format!(
        "The client '{name}' has been created in the file '{file}'.\n\
         It may administer the dynamic security plugin (and read $SYS/#), but it cannot publish to\n\
         application topics. Create clients and roles for your applications, for example:\n\
         \x20  dynsec-ctrl <connect options> dynsec createClient <username>\n\
         \x20  dynsec-ctrl <connect options> dynsec createRole <rolename>\n\
         \x20  dynsec-ctrl <connect options> dynsec addRoleACL <rolename> publishClientSend my/topic allow\n\
         \x20  dynsec-ctrl <connect options> dynsec addClientRole <username> <rolename>\n\
         See `dynsec-ctrl dynsec help` for every command.\n"
    );
    let _ = std::io::stdout().write_all(text.as_bytes());
    exit_code::OK
}

/// The configuration document, keys in mosquitto_ctrl's order: `clients`, `roles`,
/// `defaultACLAccess`.
pub fn initial_config(admin: &[u8], password: &[u8], iterations: u32) -> Result<Json, String> {
    let hash = PasswordHash::new(password, HashPolicy::Pbkdf2Sha512 { iterations })
        .map_err(|e| format!("Unable to hash the password: {e}."))?;
    let (hash_b64, salt_b64, iterations) =
        hash.dynsec_fields().ok_or_else(|| "Internal error while encoding password.".to_string())?;
    let client = Json::object()
        .with("username", Json::String(admin.to_vec()))
        .with("textName", Json::str("Dynsec admin user"))
        .with("password", Json::str(&hash_b64))
        .with("salt", Json::str(&salt_b64))
        .with("iterations", Json::int(iterations.into()))
        .with("roles", Json::Array(vec![Json::object().with("rolename", Json::str(ADMIN_ROLE))]));
    let acls = ADMIN_ACLS
        .iter()
        .map(|(acltype, topic)| {
            Json::object()
                .with("acltype", Json::str(acltype))
                .with("topic", Json::str(topic))
                .with("allow", Json::Bool(true))
        })
        .collect();
    let role = Json::object().with("rolename", Json::str(ADMIN_ROLE)).with("acls", Json::Array(acls));
    let default_access = Json::object()
        .with("publishClientSend", Json::Bool(false))
        .with("publishClientReceive", Json::Bool(true))
        .with("subscribe", Json::Bool(false))
        .with("unsubscribe", Json::Bool(true));
    Ok(Json::object()
        .with("clients", Json::Array(vec![client]))
        .with("roles", Json::Array(vec![role]))
        .with("defaultACLAccess", default_access))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_fields_verify_and_load_in_mosquitto_2_0() {
        let document = initial_config(b"admin", b"secret", 101).unwrap();
        let client = &document.get("clients").unwrap().as_array().unwrap()[0];
        let field = |k: &str| String::from_utf8(client.get(k).unwrap().as_bytes().unwrap().to_vec()).unwrap();
        let hash = PasswordHash::from_dynsec_fields(&field("password"), &field("salt"), 101).unwrap();
        assert!(hash.loadable_by_mosquitto_2_0());
        assert!(hash.verify(b"secret"));
        assert!(!hash.verify(b"other"));
        assert_eq!(field("salt").len(), 16, "12-byte salt");
    }
}
