//! Password prompts with mosquitto's `get_password` behaviour: the prompt goes to stdout, the
//! answer is read from stdin (echo off when stdin is a terminal, so piped input works in scripts),
//! trailing CR/LF are removed, and a newline is printed after each answer.

use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptError {
    /// End of input or an empty line.
    Empty,
    /// The two answers differ.
    Mismatch,
}

/// Asks for a password, and again for `verify_prompt` when given. Unless `quiet`, failures print
/// `Error: Empty password.` / `Error: Passwords do not match.` on stderr.
pub fn get_password(prompt: &str, verify_prompt: Option<&str>, quiet: bool) -> Result<Vec<u8>, PromptError> {
    let first = ask(prompt).ok_or_else(|| report(PromptError::Empty, quiet))?;
    if let Some(verify_prompt) = verify_prompt {
        let second = ask(verify_prompt).ok_or_else(|| report(PromptError::Empty, quiet))?;
        if first != second {
            return Err(report(PromptError::Mismatch, quiet));
        }
    }
    Ok(first)
}

fn report(error: PromptError, quiet: bool) -> PromptError {
    if !quiet {
        let message = match error {
            PromptError::Empty => "Error: Empty password.\n",
            PromptError::Mismatch => "Error: Passwords do not match.\n",
        };
        let _ = std::io::stderr().write_all(message.as_bytes());
    }
    error
}

/// One prompt and answer; `None` for end of input or an empty answer.
fn ask(prompt: &str) -> Option<Vec<u8>> {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(prompt.as_bytes());
    let _ = stdout.flush();
    let mut line = if std::io::stdin().is_terminal() {
        // Echo off; rpassword's own newline is discarded: the one printed below goes to stdout,
        // where mosquitto prints it.
        let config = rpassword::ConfigBuilder::new().password_feedback_hide().output_discard().build();
        rpassword::read_password_with_config(config).ok()?.into_bytes()
    } else {
        let mut line = Vec::new();
        let read = std::io::stdin().lock().read_until(b'\n', &mut line).ok()?;
        if read == 0 {
            return None;
        }
        line
    };
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    if line.is_empty() {
        return None;
    }
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
    Some(line)
}
