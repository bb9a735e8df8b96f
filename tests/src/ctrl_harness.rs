//! Replays a script of admin-CLI invocations (a data file such as `tests/data/ctrl_sequence.txt`)
//! with one program against one broker, and compares two such runs line by line.
//!
//! The broker is a parameter ([`Endpoint`]): the reference run is `mosquitto_ctrl` against a real
//! mosquitto, the candidate run is `dynsec-ctrl` against a real mosquitto or against our broker.
//!
//! Script syntax, one invocation per line:
//! - `# ...` comment lines and blank lines are skipped;
//! - words are separated by spaces; `"..."` quotes a word (escapes `\"`, `\\`, `\n`);
//! - `{conn}` expands to `-h <host> -p <port> -u <admin> -P <password>`; `{host}`, `{port}`,
//!   `{admin}`, `{password}`, `{closed_port}` (nothing listens there) and `{workdir}` (a scratch
//!   directory of this run) expand inside words;
//! - a trailing `<<< "text"` is fed on stdin (otherwise stdin is empty);
//! - `own(<why>): ...` compares only the exit status (our own wording of usage/help text);
//! - `fix(<why>): ...` is a documented fix of a mosquitto bug: stderr and exit status are
//!   compared, and the candidate's stdout must equal the `| ...` lines that follow.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a single invocation may run (mosquitto_ctrl itself gives up after 10 s).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom the admin tool connects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub admin_password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    Everything,
    /// Exit status only.
    ExitStatus,
    /// Stderr and exit status against the reference, stdout against `expected_stdout`.
    DocumentedFix {
        expected_stdout: String,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub line: usize,
    pub text: String,
    pub words: Vec<String>,
    pub stdin: Option<String>,
    pub compare: Compare,
}

/// What one invocation produced. `status` is `None` when killed by a signal or the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: Option<i32>,
}

/// Parses a script; panics with the line number on a syntax error.
pub fn parse_script(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(expected) = raw.strip_prefix('|') {
            let expected = expected.strip_prefix(' ').unwrap_or(expected);
            match steps.last_mut().map(|s| &mut s.compare) {
                Some(Compare::DocumentedFix { expected_stdout }) => {
                    expected_stdout.push_str(expected);
                    expected_stdout.push('\n');
                }
                _ => panic!("line {line}: `|` lines must follow a fix(...) line"),
            }
            continue;
        }
        let (compare, rest) = if let Some(rest) = marker(trimmed, "own") {
            (Compare::ExitStatus, rest)
        } else if let Some(rest) = marker(trimmed, "fix") {
            (Compare::DocumentedFix { expected_stdout: String::new() }, rest)
        } else {
            (Compare::Everything, trimmed)
        };
        let (command, stdin) = match rest.split_once(" <<< ") {
            Some((command, input)) => {
                let words = split_words(input).unwrap_or_else(|e| panic!("line {line}: {e}"));
                (command, Some(words.concat()))
            }
            None => (rest, None),
        };
        let words = split_words(command).unwrap_or_else(|e| panic!("line {line}: {e}"));
        steps.push(Step { line, text: rest.to_string(), words, stdin, compare });
    }
    steps
}

/// `own(...): rest` → `rest`.
fn marker<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix('(')?;
    let close = rest.find("):")?;
    Some(rest[close + 2..].trim_start())
}

fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quote".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some(c) => word.push(c),
                        None => return Err("dangling backslash".into()),
                    },
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
}

/// Everything a run needs besides the script: the program, the broker, a scratch directory.
pub struct Run<'a> {
    pub program: &'a Path,
    pub endpoint: &'a Endpoint,
    pub workdir: &'a Path,
    /// A port on which nothing listens.
    pub closed_port: u16,
}

impl Run<'_> {
    fn expand(&self, words: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for word in words {
            if word == "{conn}" {
                out.extend([
                    "-h".to_string(),
                    self.endpoint.host.clone(),
                    "-p".to_string(),
                    self.endpoint.port.to_string(),
                    "-u".to_string(),
                    self.endpoint.admin_user.clone(),
                    "-P".to_string(),
                    self.endpoint.admin_password.clone(),
                ]);
                continue;
            }
            out.push(
                word.replace("{host}", &self.endpoint.host)
                    .replace("{port}", &self.endpoint.port.to_string())
                    .replace("{admin}", &self.endpoint.admin_user)
                    .replace("{password}", &self.endpoint.admin_password)
                    .replace("{closed_port}", &self.closed_port.to_string())
                    .replace("{workdir}", &self.workdir.display().to_string()),
            );
        }
        out
    }

    /// Runs every step in order.
    pub fn run(&self, steps: &[Step]) -> Vec<Outcome> {
        let config_home = self.workdir.join("config");
        std::fs::create_dir_all(&config_home).expect("create scratch config dir");
        steps.iter().map(|step| self.run_step(step, &config_home)).collect()
    }

    fn run_step(&self, step: &Step, config_home: &Path) -> Outcome {
        let args = self.expand(&step.words);
        let stdin = step.stdin.as_ref().map(|s| {
            s.replace("{password}", &self.endpoint.admin_password).replace("{admin}", &self.endpoint.admin_user)
        });
        let mut outcome = run_program(self.program, &args, stdin.as_deref(), config_home);
        // Runs use different scratch directories; show the path as the script wrote it.
        let workdir = self.workdir.display().to_string();
        outcome.stdout = replace_bytes(&outcome.stdout, workdir.as_bytes(), b"{workdir}");
        outcome.stderr = replace_bytes(&outcome.stderr, workdir.as_bytes(), b"{workdir}");
        outcome
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(replacement);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Runs one program with an empty options-file location, bounded by [`STEP_TIMEOUT`].
pub fn run_program(program: &Path, args: &[String], stdin: Option<&str>, config_home: &Path) -> Outcome {
    let mut child = Command::new(program)
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let mut child_stdin = child.stdin.take();
    if let (Some(input), Some(pipe)) = (stdin, child_stdin.as_mut()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    drop(child_stdin);
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let stdout_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buffer);
        }
        buffer
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buffer);
        }
        buffer
    });
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Outcome {
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
        status,
    }
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// Every difference between the runs that the script does not allow, one message each.
pub fn differences(steps: &[Step], reference: &[Outcome], candidate: &[Outcome]) -> Vec<String> {
    let mut problems = Vec::new();
    for ((step, want), got) in steps.iter().zip(reference).zip(candidate) {
        let mut check = |what: &str, expected: String, actual: String| {
            if expected != actual {
                problems.push(format!(
                    "line {} `{}`: {what} differs\n  reference: {expected}\n  candidate: {actual}",
                    step.line, step.text
                ));
            }
        };
        check("exit status", format!("{:?}", want.status), format!("{:?}", got.status));
        match &step.compare {
            Compare::Everything => {
                check("stdout", show(&want.stdout), show(&got.stdout));
                check("stderr", show(&want.stderr), show(&got.stderr));
            }
            Compare::ExitStatus => {}
            Compare::DocumentedFix { expected_stdout } => {
                check("stdout (documented fix)", show(expected_stdout.as_bytes()), show(&got.stdout));
                check("stderr", show(&want.stderr), show(&got.stderr));
            }
        }
    }
    if reference.len() != candidate.len() {
        problems.push(format!("{} reference outcomes, {} candidate outcomes", reference.len(), candidate.len()));
    }
    problems
}

/// The administrator every compared run starts with (made by `mosquitto_ctrl dynsec init`).
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// Runs `steps` with `program` against a new real mosquitto whose configuration
/// `mosquitto_ctrl dynsec init` made (administrator [`ADMIN`] / [`ADMIN_PASSWORD`]). This is the
/// reference run; a run against another broker must start from that same configuration file.
pub fn run_with_fresh_mosquitto(program: &Path, steps: &[Step]) -> Vec<Outcome> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dynamic-security.json");
    crate::mosquitto::mosquitto_ctrl_init(&config, ADMIN, ADMIN_PASSWORD);
    let broker = crate::mosquitto::Mosquitto::with_dynsec(dir.path(), &config);
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        admin_user: ADMIN.into(),
        admin_password: ADMIN_PASSWORD.into(),
    };
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).expect("work dir");
    Run { program, endpoint: &endpoint, workdir: &workdir, closed_port: crate::mosquitto::unused_port() }.run(steps)
}

/// Runs `steps` with `program` against `broker` (started on a `dynsec init` configuration with
/// [`ADMIN`] / [`ADMIN_PASSWORD`]); the scratch directory is made inside the broker's directory.
pub fn run_against(program: &Path, broker: &crate::dynsec_target::DynsecBroker, steps: &[Step]) -> Vec<Outcome> {
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        admin_user: ADMIN.into(),
        admin_password: ADMIN_PASSWORD.into(),
    };
    let workdir = broker.dir().join("work");
    std::fs::create_dir_all(&workdir).expect("work dir");
    Run { program, endpoint: &endpoint, workdir: &workdir, closed_port: crate::mosquitto::unused_port() }.run(steps)
}

/// The same steps compared byte for byte (for one program against two brokers, where the
/// script's `own`/`fix` markers about the program do not apply).
pub fn compare_everything(steps: &[Step]) -> Vec<Step> {
    steps.iter().cloned().map(|step| Step { compare: Compare::Everything, ..step }).collect()
}

/// The scripts shipped with the tests.
pub fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_syntax() {
        let steps = parse_script(
            "# comment\n{conn} dynsec createClient \"a b\" <<< \"pw\\npw\\n\"\nown(text): x\nfix(bug): y\n| out 1\n|\n",
        );
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].words, vec!["{conn}", "dynsec", "createClient", "a b"]);
        assert_eq!(steps[0].stdin.as_deref(), Some("pw\npw\n"));
        assert_eq!(steps[1].compare, Compare::ExitStatus);
        assert_eq!(steps[2].compare, Compare::DocumentedFix { expected_stdout: "out 1\n\n".into() });
    }

    #[test]
    fn differences_respect_the_comparison_mode() {
        let steps = parse_script("a\nown(text): b\nfix(bug): c\n| y\n");
        let x = Outcome { stdout: b"x\n".to_vec(), stderr: Vec::new(), status: Some(0) };
        let y = Outcome { stdout: b"y\n".to_vec(), ..x.clone() };
        // Line 1 compares everything (differs), line 2 only the status, line 3 wants "y".
        let found = differences(&steps, &[x.clone(), x.clone(), x.clone()], &[y.clone(), y.clone(), y.clone()]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("line 1 `a`: stdout differs"));
        let failed = Outcome { status: Some(3), ..y };
        assert_eq!(differences(&steps, &[x.clone(), x.clone(), x], &[failed.clone(), failed.clone(), failed]).len(), 4);
    }
}
