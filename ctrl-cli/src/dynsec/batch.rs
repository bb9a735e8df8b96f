//! `dynsec batch [--batch-size N] <file|->`: provisioning many commands over one connection.
//!
//! Each line is either a command in command-line words (`createClient alice -p secret`; a leading
//! `dynsec` is allowed; `"..."` and `'...'` quote words) or a JSON command object
//! (`{"command":"createClient","username":"alice"}`). Blank lines and `#` comments are skipped.
//! Every line is checked before anything is sent; then up to N commands (default
//! [`DEFAULT_BATCH_SIZE`]) travel in each `$CONTROL` message, each reply is awaited and matched
//! to its lines through `correlationData`. get/list output is printed as usual; errors are listed
//! at the end with their line numbers, and the exit status is 1 if any command failed.

use std::io::{Read, Write};

use dynsec::json::Json;

use super::commands::{self, BuildError, NoPrompts};
use super::print::{self, Style};
use crate::control::{self, ControlClient, ControlError};
use crate::dynsec::{eprint, prepare_connection, runtime};
use crate::exit_code;
use crate::options::ConnectionOptions;
use crate::progress::Progress;
use crate::text::{atoi, eq_ignore_case, lossy};

pub const DEFAULT_BATCH_SIZE: usize = 100;
pub const MAX_BATCH_SIZE: usize = 10_000;

/// One command of the input, ready to send.
#[derive(Debug, Clone)]
pub struct Planned {
    pub line: usize,
    pub command: Json,
}

impl Planned {
    fn name(&self) -> String {
        self.command.get("command").and_then(Json::as_bytes).map(lossy).unwrap_or_default()
    }
}

pub fn run(args: &[Vec<u8>], options: &ConnectionOptions) -> i32 {
    let (batch_size, source) = match parse_arguments(args) {
        Some(parsed) => parsed,
        None => {
            eprint("Error: Invalid function arguments provided.\n");
            return exit_code::INVALID_ARGUMENTS;
        }
    };
    let input = match read_input(&source) {
        Ok(input) => input,
        Err(message) => {
            eprint(&format!("{message}\n"));
            return exit_code::USAGE;
        }
    };
    let plan = match plan(&input) {
        Ok(plan) => plan,
        Err(problems) => {
            for problem in &problems {
                eprint(&format!("batch: {problem}\n"));
            }
            eprint(&format!("batch: {} invalid line(s); nothing was sent.\n", problems.len()));
            return exit_code::USAGE;
        }
    };
    if plan.is_empty() {
        eprint("batch: no commands.\n");
        return exit_code::OK;
    }
    let (credentials, tls) = match prepare_connection(options) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return exit_code::USAGE;
    };
    let report = runtime.block_on(async {
        let mut client = match ControlClient::open(options, &credentials, tls).await {
            Ok(client) => client,
            Err(error) => return Report::not_connected(error, plan.len()),
        };
        let report = send_all(&mut client, &plan, batch_size, options.json_output).await;
        client.close().await;
        report
    });
    report.print()
}

/// `[--batch-size N] <file|->`.
fn parse_arguments(args: &[Vec<u8>]) -> Option<(usize, Vec<u8>)> {
    let mut batch_size = DEFAULT_BATCH_SIZE;
    let mut source = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == b"--batch-size" || args[i] == b"-n" {
            let size = atoi(args.get(i + 1)?);
            batch_size = usize::try_from(size).ok().filter(|s| (1..=MAX_BATCH_SIZE).contains(s))?;
            i += 2;
        } else if source.is_none() {
            source = Some(args[i].clone());
            i += 1;
        } else {
            return None;
        }
    }
    Some((batch_size, source?))
}

fn read_input(source: &[u8]) -> Result<Vec<u8>, String> {
    if source == b"-" {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).map_err(|e| format!("Error: Unable to read standard input: {e}."))?;
        return Ok(input);
    }
    let path = lossy(source);
    std::fs::read(&path).map_err(|e| {
        format!("Error: Unable to read batch file '{path}': {}.", crate::mqtt::transport::os_error_text(&e))
    })
}

/// Checks and converts every line; all problems are reported together.
pub fn plan(input: &[u8]) -> Result<Vec<Planned>, Vec<String>> {
    let mut planned = Vec::new();
    let mut problems = Vec::new();
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = text.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        match command_of_line(trimmed) {
            Ok(command) => planned.push(Planned { line, command }),
            Err(problem) => problems.push(format!("line {line}: {problem}")),
        }
    }
    if problems.is_empty() { Ok(planned) } else { Err(problems) }
}

fn command_of_line(text: &[u8]) -> Result<Json, String> {
    if text.starts_with(b"{") {
        let command = dynsec::json::parse(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let name =
            command.get("command").and_then(Json::as_bytes).ok_or("a JSON command needs a string \"command\"")?;
        if commands::known_command(name).is_none() {
            return Err(format!("Command '{}' not recognised.", lossy(name)));
        }
        return Ok(command);
    }
    let mut words = split_words(text)?;
    if words.first().is_some_and(|w| eq_ignore_case(w, "dynsec")) {
        words.remove(0);
    }
    if words
        .first()
        .is_some_and(|w| eq_ignore_case(w, "init") || eq_ignore_case(w, "batch") || eq_ignore_case(w, "help"))
    {
        return Err(format!("'{}' cannot be used in a batch.", lossy(&words[0])));
    }
    match commands::build(&words, &mut NoPrompts) {
        Ok(command) => Ok(command),
        Err(BuildError::Unknown(word)) => Err(format!("Command '{}' not recognised.", lossy(&word))),
        Err(BuildError::InvalidArguments) => Err("Error: Invalid function arguments provided.".into()),
        Err(BuildError::Aborted) => Err("a password is required on the line in batch mode.".into()),
    }
}

/// Splits on spaces and tabs; `"..."` (with `\"`, `\\`, `\n`, `\t`) and `'...'` quote.
pub fn split_words(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while i < text.len() && matches!(text[i], b' ' | b'\t') {
            i += 1;
        }
        if i == text.len() {
            break;
        }
        let mut word = Vec::new();
        while i < text.len() && !matches!(text[i], b' ' | b'\t') {
            match text[i] {
                b'"' => {
                    i += 1;
                    loop {
                        match text.get(i) {
                            None => return Err("unterminated double quote".into()),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                i += 1;
                                match text.get(i) {
                                    Some(b'n') => word.push(b'\n'),
                                    Some(b't') => word.push(b'\t'),
                                    Some(&c) => word.push(c),
                                    None => return Err("unterminated double quote".into()),
                                }
                            }
                            Some(&c) => word.push(c),
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'\'' => {
                    let close = text[i + 1..].iter().position(|&b| b == b'\'').ok_or("unterminated single quote")?;
                    word.extend_from_slice(&text[i + 1..i + 1 + close]);
                    i += close + 2;
                }
                c => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// What happened to the commands.
struct Report {
    total: usize,
    succeeded: usize,
    failures: Vec<String>,
    /// Set when the connection failed; commands from then on were not confirmed.
    connection_error: Option<ControlError>,
    unconfirmed: usize,
}

impl Report {
    fn not_connected(error: ControlError, total: usize) -> Report {
        Report { total, succeeded: 0, failures: Vec::new(), connection_error: Some(error), unconfirmed: total }
    }

    fn print(self) -> i32 {
        for failure in &self.failures {
            eprint(&format!("{failure}\n"));
        }
        if let Some(error) = &self.connection_error {
            eprint(&format!("{}\n", error.message()));
        }
        let mut summary =
            format!("batch: {} commands, {} succeeded, {} failed", self.total, self.succeeded, self.failures.len());
        if self.unconfirmed > 0 {
            summary.push_str(&format!(", {} not confirmed", self.unconfirmed));
        }
        eprint(&format!("{summary}.\n"));
        match &self.connection_error {
            Some(error) if error.exit_code() != exit_code::OK => error.exit_code(),
            Some(_) => exit_code::USAGE,
            None if self.failures.is_empty() => exit_code::OK,
            None => exit_code::USAGE,
        }
    }
}

async fn send_all(client: &mut ControlClient, plan: &[Planned], batch_size: usize, raw_json: bool) -> Report {
    let mut report =
        Report { total: plan.len(), succeeded: 0, failures: Vec::new(), connection_error: None, unconfirmed: 0 };
    let mut progress = Progress::new(plan.len());
    let mut done = 0;
    for chunk in plan.chunks(batch_size) {
        let reply = match client.send(chunk.iter().map(|p| p.command.clone()).collect()).await {
            Ok(reply) => reply,
            Err(error) => {
                report.unconfirmed = plan.len() - done;
                report.connection_error = Some(error);
                break;
            }
        };
        let mut answered = vec![false; chunk.len()];
        let responses = reply.tree.get("responses").and_then(Json::as_array).unwrap_or(&[]);
        for response in responses {
            let Some(index) = control::response_index(response).filter(|i| *i < chunk.len()) else {
                continue;
            };
            answered[index] = true;
            let planned = &chunk[index];
            if let Some(error) = response.get("error") {
                let mut line = print::Output::default();
                print::print_error_line(&mut line, response.get("command").unwrap_or(&Json::Null), error);
                report.failures.push(format!(
                    "line {}: {}",
                    planned.line,
                    String::from_utf8_lossy(&line.stderr).trim_end()
                ));
                continue;
            }
            report.succeeded += 1;
            let payload = Json::object().with("responses", Json::Array(vec![response.clone()])).to_compact();
            let verbose_list = planned.command.get("verbose").and_then(Json::as_bool).unwrap_or(false);
            let output = print::print_reply(&payload, Style { raw_json, verbose_list });
            let _ = std::io::stdout().write_all(&output.stdout);
            let _ = std::io::stderr().write_all(&output.stderr);
        }
        for (planned, _) in chunk.iter().zip(&answered).filter(|(_, answered)| !**answered) {
            report.failures.push(format!("line {}: {}: no response from the broker", planned.line, planned.name()));
        }
        done += chunk.len();
        progress.update(done, report.failures.len());
    }
    progress.finish();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quotes() {
        let words = split_words(br#"createClient "a b" 'c d' e\f "x\"y""#).unwrap();
        assert_eq!(
            words,
            vec![b"createClient".to_vec(), b"a b".to_vec(), b"c d".to_vec(), b"e\\f".to_vec(), b"x\"y".to_vec()]
        );
        assert!(split_words(b"\"open").is_err());
    }

    #[test]
    fn planning_reports_every_bad_line() {
        let input = b"# provisioning\ncreateClient a -p x\n\ndynsec addRoleACL r publishClientSend t allow\n{\"command\":\"getClient\",\"username\":\"a\"}\nfrobnicate\ngetClient\n{\"x\":1}\nsetClientPassword a\n";
        let problems = plan(input).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "line 6: Command 'frobnicate' not recognised.",
                "line 7: Error: Invalid function arguments provided.",
                "line 8: a JSON command needs a string \"command\"",
                "line 9: a password is required on the line in batch mode.",
            ]
        );
        let good = plan(b"createClient a\r\n  getClient a  \n").unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].line, 1);
        assert_eq!(good[0].command.to_compact(), br#"{"command":"createClient","username":"a"}"#.to_vec());
    }

    #[test]
    fn arguments() {
        let args = |s: &str| s.split_whitespace().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(parse_arguments(&args("-")), Some((DEFAULT_BATCH_SIZE, b"-".to_vec())));
        assert_eq!(parse_arguments(&args("--batch-size 500 f")), Some((500, b"f".to_vec())));
        assert_eq!(parse_arguments(&args("--batch-size 0 f")), None);
        assert_eq!(parse_arguments(&args("a b")), None);
        assert_eq!(parse_arguments(&args("")), None);
    }
}
