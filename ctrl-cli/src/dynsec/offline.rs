//! `-f FILE dynsec <command>` (mosquitto_ctrl 2.1's `-f`, which only does setClientPassword):
//! every dynsec command run on a `dynamic-security.json` without a broker, by the same engine
//! code a broker runs, and printed as the broker's reply would be. A change is written whole,
//! atomically and durably (temporary file, fsync, rename, fsync of the directory), keeping the
//! file's owner, group and mode; a command that changes nothing leaves the file untouched.
//!
//! A broker running on the file: the edit is refused while the journal of a `dynsec-broker`
//! holds changes not yet in the file. Otherwise a running `dynsec-broker` picks the edit up like
//! any external edit (its file watcher reloads the file and disconnects clients whose rights
//! changed). mosquitto does not re-read its file: it writes its own state over the edit at its
//! next change, so edit a file mosquitto uses only while mosquitto is stopped.

use std::io::Write;
use std::path::Path;

use dynsec::commands::{Admin, Processor, prepare_passwords};
use dynsec::password::HashPolicy;
use dynsec::store::Store;

use super::print::{self, Style};
use crate::exit_code;

/// Splits mosquitto_ctrl 2.1's `setClientPassword <username> <password> [-i <iterations>]` into
/// the command and the PBKDF2-SHA512 policy it asks for (the default policy otherwise), taking
/// the words after the password as 2.1.2 does. `Err` carries the exit status of a bad word, its
/// error printed as 2.1.2 prints it.
pub fn hash_policy(args: &[Vec<u8>]) -> Result<(&[Vec<u8>], HashPolicy), i32> {
    let is_set_password = args.first().is_some_and(|word| crate::text::eq_ignore_case(word, "setClientPassword"));
    if !is_set_password || args.len() <= 3 {
        return Ok((args, HashPolicy::default()));
    }
    let refuse = |message: String| {
        let _ = write!(std::io::stderr(), "Error: {message}\nError: Invalid input.\n");
        Err(exit_code::INVALID_ARGUMENTS)
    };
    let mut policy = HashPolicy::default();
    let mut rest = args[3..].iter();
    while let Some(word) = rest.next() {
        if word != b"-i" {
            return refuse(format!("Unknown argument: {}", crate::text::lossy(word)));
        }
        let Some(value) = rest.next() else {
            return refuse("-i argument given, but no iterations provided.".into());
        };
        // (mosquitto_ctrl takes `atoi` of anything; a number the hash can use is asked for here.)
        policy = match std::str::from_utf8(value).ok().and_then(|text| text.parse::<u32>().ok()) {
            Some(iterations) if iterations > 0 && HashPolicy::Pbkdf2Sha512 { iterations }.check().is_ok() => {
                HashPolicy::Pbkdf2Sha512 { iterations }
            }
            _ => {
                return refuse(format!(
                    "-i needs a number of iterations from 1 to {}, not {}.",
                    dynsec::password::MAX_PBKDF2_ITERATIONS,
                    crate::text::lossy(value)
                ));
            }
        };
    }
    Ok((&args[..3], policy))
}

/// Runs `command` on `file`, hashing a new password with `policy`; returns the exit status.
pub fn run(file: &Path, command: dynsec::json::Json, style: Style, policy: HashPolicy) -> i32 {
    match edit(file, command, policy) {
        Ok(reply) => {
            let output = print::print_reply(&reply, style);
            let _ = std::io::stdout().write_all(&output.stdout);
            let _ = std::io::stderr().write_all(&output.stderr);
            exit_code::OK
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "Error: {}: {message}", file.display());
            exit_code::USAGE
        }
    }
}

/// Applies `command`, saves the file if anything changed, and returns the reply payload.
fn edit(file: &Path, command: dynsec::json::Json, policy: HashPolicy) -> Result<Vec<u8>, String> {
    let running = Store::journal_has_records(file).map_err(|e| e.to_string())?;
    if running {
        return Err(format!(
            "{} holds changes not yet written into the file: a dynsec-broker is running on it (send the command \
             to the broker instead) or stopped before saving (start and stop it once)",
            Store::journal_path_for(file).display()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    let (mut model, _warnings) = dynsec::file::load(&bytes).map_err(|e| e.to_string())?;
    let commands = [command];
    let prepared = prepare_passwords(&commands, policy);
    let admin = Admin { client_id: "dynsec-ctrl -f".into(), username: None };
    let outcome = Processor::new(&mut model, policy, prepared, admin).run(&commands);
    if !outcome.mutations.is_empty() {
        dynsec::atomic_file::replace(file, &dynsec::file::save(&model)).map_err(|e| e.to_string())?;
    }
    Ok(outcome.response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn edits_in_place_keeping_the_mode_and_refuses_a_pending_journal() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dynamic-security.json");
        let hash = dynsec::password::PasswordHash::new(b"pw", HashPolicy::default()).unwrap();
        let model = dynsec::init::init_model("admin", hash);
        std::fs::write(&file, dynsec::file::save(&model)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let create = dynsec::json::parse(br#"{"command":"createClient","username":"u","password":"p"}"#).unwrap();
        let reply = edit(&file, create, HashPolicy::default()).unwrap();
        assert_eq!(reply, br#"{"responses":[{"command":"createClient"}]}"#);
        let get = dynsec::json::parse(br#"{"command":"getClient","username":"u"}"#).unwrap();
        assert!(
            String::from_utf8(edit(&file, get, HashPolicy::default()).unwrap()).unwrap().contains(r#""username":"u""#)
        );
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);

        let mut journal = b"dynsec-journal v1\n".to_vec();
        journal.extend_from_slice(b"pending");
        std::fs::write(Store::journal_path_for(&file), journal).unwrap();
        let delete = dynsec::json::parse(br#"{"command":"deleteClient","username":"u"}"#).unwrap();
        assert!(edit(&file, delete, HashPolicy::default()).unwrap_err().contains("dynsec-broker is running"));
    }
}
