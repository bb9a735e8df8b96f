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

/// Runs `command` on `file`; returns the exit status.
pub fn run(file: &Path, command: dynsec::json::Json, style: Style) -> i32 {
    match edit(file, command) {
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
fn edit(file: &Path, command: dynsec::json::Json) -> Result<Vec<u8>, String> {
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
    let policy = HashPolicy::default();
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
        let reply = edit(&file, create).unwrap();
        assert_eq!(reply, br#"{"responses":[{"command":"createClient"}]}"#);
        let get = dynsec::json::parse(br#"{"command":"getClient","username":"u"}"#).unwrap();
        assert!(String::from_utf8(edit(&file, get).unwrap()).unwrap().contains(r#""username":"u""#));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640);

        let mut journal = b"dynsec-journal v1\n".to_vec();
        journal.extend_from_slice(b"pending");
        std::fs::write(Store::journal_path_for(&file), journal).unwrap();
        let delete = dynsec::json::parse(br#"{"command":"deleteClient","username":"u"}"#).unwrap();
        assert!(edit(&file, delete).unwrap_err().contains("dynsec-broker is running"));
    }
}
