//! The lexer of mosquitto.conf: files (and the directories `include_dir` names) become a flat list
//! of located `key value…` directives, in the order mosquitto applies them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// How deep `include_dir` may nest before we call it a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Location {
    pub(super) fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::At { file: self.file.clone(), line: self.line, message: message.into() }
    }
}

/// One `key value…` line of a configuration file.
#[derive(Debug, Clone)]
pub struct Directive {
    pub at: Location,
    pub key: String,
    /// Everything after the key, leading blanks removed (mosquitto reads paths and plugin option
    /// values as "the rest of the line").
    pub rest: String,
}

impl Directive {
    pub(super) fn words(&self) -> Vec<&str> {
        self.rest.split_whitespace().collect()
    }

    /// The single argument of a one-word directive.
    pub(super) fn one_word(&self) -> Result<&str, ConfigError> {
        match self.words().as_slice() {
            [word] => Ok(word),
            [] => Err(self.at.error(format!("missing value for {}", self.key))),
            _ => Err(self.at.error(format!("too many values for {}", self.key))),
        }
    }

    /// A string argument that may contain spaces (paths, plugin option values).
    pub(super) fn text(&self) -> Result<&str, ConfigError> {
        let value = self.rest.trim_end();
        if value.is_empty() { Err(self.at.error(format!("missing value for {}", self.key))) } else { Ok(value) }
    }

    pub(super) fn boolean(&self) -> Result<bool, ConfigError> {
        match self.one_word()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.at.error(format!("invalid {} value ({other}): expected true or false", self.key))),
        }
    }

    pub(super) fn number<T: std::str::FromStr>(&self) -> Result<T, ConfigError> {
        let word = self.one_word()?;
        word.parse().map_err(|_| self.at.error(format!("invalid {} value ({word})", self.key)))
    }
}

/// Reads `path` and every `include_dir` it names into a flat list of directives, in the order
/// mosquitto applies them.
pub fn read_directives(path: &Path) -> Result<Vec<Directive>, ConfigError> {
    let mut out = Vec::new();
    read_file_into(path, 0, &mut out)?;
    Ok(out)
}

fn read_file_into(path: &Path, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let file = path.display().to_string();
    let text = String::from_utf8_lossy(&bytes);
    parse_text_into(&file, &text, depth, out)
}

/// Parses configuration text (as if read from `file`) into directives; `include_dir` is followed.
pub fn parse_text(file: &str, text: &str) -> Result<Vec<Directive>, ConfigError> {
    let mut out = Vec::new();
    parse_text_into(file, text, 0, &mut out)?;
    Ok(out)
}

fn parse_text_into(file: &str, text: &str, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = Location { file: file.to_owned(), line: index + 1 };
        let (key, rest) = match line.split_once(char::is_whitespace) {
            Some((key, rest)) => (key, rest.trim_start()),
            None => (line, ""),
        };
        let directive = Directive { at, key: key.to_owned(), rest: rest.trim_end().to_owned() };
        if directive.key == "include_dir" {
            include_dir(&directive, depth, out)?;
        } else {
            out.push(directive);
        }
    }
    Ok(())
}

/// mosquitto's `include_dir`: every `*.conf` file of the directory, in byte order of the names.
fn include_dir(directive: &Directive, depth: usize, out: &mut Vec<Directive>) -> Result<(), ConfigError> {
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(directive.at.error("include_dir nested too deeply (a loop?)"));
    }
    let dir = PathBuf::from(directive.text()?);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| directive.at.error(format!("include_dir {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "conf") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        read_file_into(&file, depth + 1, out)?;
    }
    Ok(())
}
