//! `dynsec-ctrl passwd`: mosquitto_passwd's command line, messages, prompts and exit statuses.
//!
//! ```text
//! passwd [-H sha512|sha512-pbkdf2|argon2id] [-I iterations] [-c | -D] <file> <username>
//! passwd [-H ...] [-I iterations] [-c] -b <file> <username> <password>
//! passwd -U <file>
//! ```
//! Files are rewritten atomically by the store's writer (temporary file, fsync, rename; owner,
//! group and mode kept; new files mode 0600); see
//! [`file`] for the mosquitto_passwd quirks that are fixed rather than copied.

pub mod file;

use std::io::Write;
use std::path::{Path, PathBuf};

use dynsec::password::{DEFAULT_PBKDF2_ITERATIONS, HashPolicy, MAX_PBKDF2_ITERATIONS, PasswordHash};

use crate::mqtt::transport::os_error_text;
use crate::prompt::{PromptError, get_password};
use crate::text::{atoi, lossy};
use file::PasswordFile;

const USAGE: &str = "\
dynsec-ctrl passwd manages mosquitto password files (mosquitto_passwd compatible).

Usage: dynsec-ctrl passwd [-H sha512-pbkdf2|sha512|argon2id] [-I iterations] [-c | -D] <file> <username>
       dynsec-ctrl passwd [-H ...] [-I iterations] [-c] -b <file> <username> <password>
       dynsec-ctrl passwd -U <file>
 -b : take the password from the command line instead of prompting.
 -c : create the file, replacing any existing one, with this single user.
 -D : delete the user.
 -H : hash type: sha512-pbkdf2 (default; mosquitto 2.0 reads it), sha512 (legacy),
      argon2id (mosquitto 2.1 and dynsec-broker only).
 -I : PBKDF2 iterations for sha512-pbkdf2 (default 1000).
 -U : hash every plain-text password of the file (lines already hashed are kept).

";

const MAX_LENGTH: usize = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashType {
    Sha512,
    Sha512Pbkdf2,
    Argon2id,
}

/// What the command line asks for.
#[derive(Debug)]
enum Action {
    Create { file: Vec<u8>, username: Vec<u8>, password: Option<Vec<u8>> },
    Delete { file: Vec<u8>, username: Vec<u8> },
    UpdateFile { file: Vec<u8> },
    Set { file: Vec<u8>, username: Vec<u8>, password: Option<Vec<u8>> },
}

fn fail(message: &str) -> i32 {
    let _ = std::io::stderr().write_all(message.as_bytes());
    1
}

fn usage() -> i32 {
    let _ = std::io::stdout().write_all(USAGE.as_bytes());
    1
}

/// Runs `passwd <args...>`; returns the exit status.
pub fn run(args: &[Vec<u8>]) -> i32 {
    if args.is_empty() {
        return usage();
    }
    let mut hash_type = HashType::Sha512Pbkdf2;
    let mut iterations = DEFAULT_PBKDF2_ITERATIONS;
    let (mut batch, mut create, mut delete, mut update_file) = (false, false, false, false);
    let mut idx = 0;
    while idx < args.len() {
        match args[idx].as_slice() {
            b"-H" => {
                let Some(value) = args.get(idx + 1) else {
                    return fail("Error: -H argument given but not enough other arguments.\n");
                };
                hash_type = match value.as_slice() {
                    b"sha512" => HashType::Sha512,
                    b"sha512-pbkdf2" => HashType::Sha512Pbkdf2,
                    b"argon2id" => HashType::Argon2id,
                    other => return fail(&format!("Error: Unknown hash type '{}'\n", lossy(other))),
                };
                idx += 1;
            }
            b"-b" => batch = true,
            b"-c" => create = true,
            b"-D" => delete = true,
            b"-I" => {
                let Some(value) = args.get(idx + 1) else {
                    return fail("Error: -I argument given but not enough other arguments.\n");
                };
                let value = atoi(value);
                if value < 1 {
                    return fail("Error: Number of iterations must be > 0.\n");
                }
                if value as u32 > MAX_PBKDF2_ITERATIONS {
                    // dynsec-broker refuses such hashes (docs/store.md, "Limits"); mosquitto_passwd
                    // writes them.
                    return fail(&format!(
                        "Error: Number of iterations must be at most {MAX_PBKDF2_ITERATIONS} (the most dynsec-broker loads).\n"
                    ));
                }
                iterations = value as u32;
                idx += 1;
            }
            b"-U" => update_file = true,
            _ => break,
        }
        idx += 1;
    }
    if create && delete {
        return fail("Error: -c and -D cannot be used together.\n");
    }
    if create && update_file {
        return fail("Error: -c and -U cannot be used together.\n");
    }
    if delete && update_file {
        return fail("Error: -D and -U cannot be used together.\n");
    }
    if delete && batch {
        return fail("Error: -b and -D cannot be used together.\n");
    }
    let rest = &args[idx..];
    let action = if create {
        if batch {
            let [file, username, password, ..] = rest else {
                return fail("Error: -c argument given but password file, username, or password missing.\n");
            };
            Action::Create { file: file.clone(), username: username.clone(), password: Some(password.clone()) }
        } else {
            let [file, username, ..] = rest else {
                return fail("Error: -c argument given but password file or username missing.\n");
            };
            Action::Create { file: file.clone(), username: username.clone(), password: None }
        }
    } else if delete {
        let [file, username, ..] = rest else {
            return fail("Error: -D argument given but password file or username missing.\n");
        };
        Action::Delete { file: file.clone(), username: username.clone() }
    } else if update_file {
        let [file] = rest else {
            return fail("Error: -U argument given but password file missing.\n");
        };
        Action::UpdateFile { file: file.clone() }
    } else {
        match (batch, rest) {
            (true, [file, username, password]) => {
                Action::Set { file: file.clone(), username: username.clone(), password: Some(password.clone()) }
            }
            (false, [file, username]) => Action::Set { file: file.clone(), username: username.clone(), password: None },
            _ => return usage(),
        }
    };
    let policy = match hash_type {
        HashType::Sha512 => HashPolicy::Sha512,
        HashType::Sha512Pbkdf2 => HashPolicy::Pbkdf2Sha512 { iterations },
        HashType::Argon2id => HashPolicy::ARGON2ID_DEFAULT,
    };
    execute(action, policy)
}

fn check_username(username: &[u8]) -> Result<(), i32> {
    if username.len() > MAX_LENGTH {
        return Err(fail("Error: Username must be less than 65536 characters long.\n"));
    }
    if username.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(fail("Error: Username must not contain control characters.\n"));
    }
    if username.contains(&b':') {
        return Err(fail("Error: Username must not contain the ':' character.\n"));
    }
    Ok(())
}

/// realpath() when the file exists, the name as given when it does not.
fn resolve(file: &[u8]) -> Result<PathBuf, i32> {
    let given = PathBuf::from(lossy(file));
    match std::fs::canonicalize(&given) {
        Ok(path) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(given),
        Err(e) => Err(fail(&format!("Error reading password file: {}\n", os_error_text(&e)))),
    }
}

/// Prompts `Password:` / `Reenter password:`; the exit status on failure is mosquitto_passwd's.
fn prompt_password() -> Result<Vec<u8>, i32> {
    get_password("Password: ", Some("Reenter password: "), false).map_err(|e| match e {
        PromptError::Empty => 1,
        PromptError::Mismatch => 2,
    })
}

fn encode(password: &[u8], policy: HashPolicy) -> Result<String, i32> {
    PasswordHash::new(password, policy).map(|h| h.encode()).map_err(|_| fail("Error: Unable to hash password.\n"))
}

fn execute(action: Action, policy: HashPolicy) -> i32 {
    let username = match &action {
        Action::Create { username, .. } | Action::Delete { username, .. } | Action::Set { username, .. } => {
            Some(username.clone())
        }
        Action::UpdateFile { .. } => None,
    };
    if let Some(username) = &username
        && let Err(code) = check_username(username)
    {
        return code;
    }
    let command_line_password = match &action {
        Action::Create { password, .. } | Action::Set { password, .. } => password.clone(),
        _ => None,
    };
    if command_line_password.as_ref().is_some_and(|p| p.len() > MAX_LENGTH) {
        return fail("Error: Password must be less than 65536 characters long.\n");
    }
    let result = match action {
        Action::Create { file, username, password } => create(&file, &username, password, policy),
        Action::Delete { file, username } => edit(&file, |pwfile| {
            if pwfile.remove(&username) {
                Ok(())
            } else {
                Err(fail(&format!("Warning: User {} not found in password file.\n", lossy(&username))))
            }
        }),
        Action::UpdateFile { file } => edit(&file, |pwfile| pwfile.hash_plain_passwords(|p| encode(p, policy))),
        Action::Set { file, username, password } => {
            let mut password = password;
            edit(&file, |pwfile| {
                let password = match password.take() {
                    Some(password) => password,
                    None => prompt_password()?,
                };
                pwfile.set(&username, &encode(&password, policy)?);
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn create(file: &[u8], username: &[u8], password: Option<Vec<u8>>, policy: HashPolicy) -> Result<(), i32> {
    let path = resolve(file)?;
    let password = match password {
        Some(password) => password,
        None => prompt_password()?,
    };
    let mut pwfile = PasswordFile::empty();
    pwfile.set(username, &encode(&password, policy)?);
    save(&path, &pwfile).map_err(|e| {
        fail(&format!("Error: Unable to open file {} for writing. {}.\n", path.display(), os_error_text(&e)))
    })
}

/// Reads the file, applies `change`, and writes the result atomically. Nothing is written if the
/// file cannot be parsed or `change` fails.
fn edit(file: &[u8], change: impl FnOnce(&mut PasswordFile) -> Result<(), i32>) -> Result<(), i32> {
    let path = resolve(file)?;
    let content = std::fs::read(&path).map_err(|e| open_error(&path, &e))?;
    let mut pwfile = PasswordFile::parse(&content)
        .map_err(|line| fail(&format!("Error: Corrupt password file at line {}.\n", line.0)))?;
    change(&mut pwfile)?;
    save(&path, &pwfile).map_err(|e| open_error(&path, &e))
}

/// Rewrites the password file atomically, keeping the owner, group and mode of the file it
/// replaces (a broker may read it under another account; a new file is 0600).
fn save(path: &Path, pwfile: &PasswordFile) -> std::io::Result<()> {
    dynsec::atomic_file::replace(path, &pwfile.to_bytes()).map_err(|e| e.source)
}

fn open_error(path: &Path, error: &std::io::Error) -> i32 {
    fail(&format!("Error: Unable to open password file {}. {}.\n", path.display(), os_error_text(error)))
}
