//! Golden control scripts (`dynsec/tests/golden/*.txt`): request → expected reply (and kicks),
//! read by the engine test (`dynsec/tests/golden.rs`), the schema test and the replay against
//! mosquitto 2.0.11. The format is described in `scripts/golden-oracle.py`. Test support only
//! (feature `testing`): it panics on a malformed script.

use std::path::{Path, PathBuf};

use crate::commands::Kicks;

#[derive(Debug)]
pub struct Step {
    pub line: usize,
    /// Preceded by `#lenient`: succeeds only thanks to mosquitto's lenient parsing.
    pub lenient: bool,
    /// Preceded by `#oracle-skip`: not sent to mosquitto 2.0.11 (it would crash it).
    pub oracle_skip: bool,
    /// What mosquitto 2.0.11 answers where we deliberately differ (`<2.0.11` line).
    pub oracle_expected: Option<String>,
    pub request: String,
    pub expected: String,
    pub kicks: Kicks,
}

pub fn parse_script(path: &Path) -> Vec<Step> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut steps: Vec<Step> = Vec::new();
    let (mut lenient, mut oracle_skip) = (false, false);
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#lenient") {
            lenient = true;
        } else if line.starts_with("#oracle-skip") {
            oracle_skip = true;
        } else if let Some(reply) = line.strip_prefix("<2.0.11 ") {
            steps.last_mut().expect("reply before request").oracle_expected = Some(reply.to_owned());
        } else if let Some(request) = line.strip_prefix("> ") {
            steps.push(Step {
                line: i + 1,
                lenient: std::mem::take(&mut lenient),
                oracle_skip: std::mem::take(&mut oracle_skip),
                oracle_expected: None,
                request: request.to_owned(),
                expected: String::new(),
                kicks: Kicks::default(),
            });
        } else if let Some(expected) = line.strip_prefix("< ") {
            steps.last_mut().expect("reply before request").expected = expected.to_owned();
        } else if let Some(kicks) = line.strip_prefix("! kick ") {
            let step = steps.last_mut().expect("kick before request");
            for who in kicks.split_whitespace() {
                if who == "anonymous" {
                    step.kicks.anonymous = true;
                } else {
                    step.kicks.users.insert(if who == "\"\"" { String::new() } else { who.to_owned() });
                }
            }
        }
    }
    steps
}

pub fn scripts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "txt"));
    paths.sort();
    paths
}
