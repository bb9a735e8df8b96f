//! The mosquitto password file: `username:hash` lines, edited the way mosquitto_passwd edits them
//! (an updated user keeps its position, a new user is appended, `-U` hashes plain-text passwords)
//! but without its data-losing quirks:
//!
//! - comment (`#`) and blank lines, which the broker ignores, are kept instead of stopping the
//!   tool with "Corrupt password file";
//! - any other unreadable line is an error *and the file is left untouched* (mosquitto_passwd
//!   2.0.11 still appends a new user and silently drops every line after the bad one);
//! - a new user is put on its own line even when the file does not end with a newline;
//! - `-U` leaves lines that already hold a valid hash alone (mosquitto_passwd hashes the hash).

/// One line of the file, kept byte for byte unless it is the one being changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A `username:password` line; `text` is the line as read, without its newline.
    Entry { username: Vec<u8>, password: Vec<u8>, text: Vec<u8> },
    /// A comment or blank line.
    Other(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    lines: Vec<Line>,
    /// Whether the last line ended with a newline (an empty file counts as ending with one).
    ends_with_newline: bool,
}

/// A line that is neither an entry nor a comment/blank line (1-based, as mosquitto reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptLine(pub usize);

/// isspace() trimming, as mosquitto's `misc__trimblanks`.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace() && *b != 0x0b).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace() && *b != 0x0b).map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

impl PasswordFile {
    pub fn empty() -> PasswordFile {
        PasswordFile { lines: Vec::new(), ends_with_newline: true }
    }

    pub fn parse(content: &[u8]) -> Result<PasswordFile, CorruptLine> {
        let ends_with_newline = content.is_empty() || content.ends_with(b"\n");
        let body = content.strip_suffix(b"\n").unwrap_or(content);
        let mut lines = Vec::new();
        if !content.is_empty() {
            for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
                let text = raw.to_vec();
                if trim(raw).is_empty() || raw.first() == Some(&b'#') {
                    lines.push(Line::Other(text));
                    continue;
                }
                // strtok(line, ":") twice: leading colons are skipped, the password ends at the
                // next colon.
                let mut fields = raw.split(|&b| b == b':').filter(|f| !f.is_empty());
                let (Some(username), Some(password)) = (fields.next(), fields.next()) else {
                    return Err(CorruptLine(index + 1));
                };
                let (username, password) = (trim(username), trim(password));
                if username.is_empty() || password.is_empty() {
                    return Err(CorruptLine(index + 1));
                }
                lines.push(Line::Entry { username: username.to_vec(), password: password.to_vec(), text });
            }
        }
        Ok(PasswordFile { lines, ends_with_newline })
    }

    pub fn contains(&self, username: &[u8]) -> bool {
        self.lines.iter().any(|l| matches!(l, Line::Entry { username: u, .. } if u == username))
    }

    /// Replaces every entry of `username` with `username:encoded`, or appends one.
    pub fn set(&mut self, username: &[u8], encoded: &str) {
        let new_text = [username, b":", encoded.as_bytes()].concat();
        let mut found = false;
        for line in &mut self.lines {
            if let Line::Entry { username: u, password, text } = line
                && u == username
            {
                *password = encoded.as_bytes().to_vec();
                *text = new_text.clone();
                found = true;
            }
        }
        if !found {
            self.lines.push(Line::Entry {
                username: username.to_vec(),
                password: encoded.as_bytes().to_vec(),
                text: new_text,
            });
            self.ends_with_newline = true;
        }
    }

    /// Removes every entry of `username`; false if there was none.
    pub fn remove(&mut self, username: &[u8]) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| !matches!(l, Line::Entry { username: u, .. } if u == username));
        self.lines.len() != before
    }

    /// `-U`: replaces each entry's password by `hash(password)`, except entries that already
    /// hold a hash this tool recognises. `hash` errors abort the whole update.
    pub fn hash_plain_passwords<E>(&mut self, mut hash: impl FnMut(&[u8]) -> Result<String, E>) -> Result<(), E> {
        for line in &mut self.lines {
            if let Line::Entry { username, password, text } = line {
                // A hash beyond the broker's cost limits is still a hash, not a password to hash.
                let already_hashed = std::str::from_utf8(password).is_ok_and(|p| {
                    matches!(
                        dynsec::password::PasswordHash::parse(p),
                        Ok(_) | Err(dynsec::password::PasswordError::OverLimit(_))
                    )
                });
                if already_hashed {
                    continue;
                }
                let encoded = hash(password)?;
                *text = [username.as_slice(), b":", encoded.as_bytes()].concat();
                *password = encoded.into_bytes();
            }
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, line) in self.lines.iter().enumerate() {
            let text = match line {
                Line::Entry { text, .. } | Line::Other(text) => text,
            };
            out.extend_from_slice(text);
            if index + 1 < self.lines.len() || self.ends_with_newline {
                out.push(b'\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_comments_blank_lines_and_positions() {
        let mut file = PasswordFile::parse(b"# users\na:hash-a\n\nb : hash-b\n").unwrap();
        assert!(file.contains(b"b"));
        file.set(b"a", "new-a");
        file.set(b"c", "hash-c");
        assert_eq!(file.to_bytes(), b"# users\na:new-a\n\nb : hash-b\nc:hash-c\n");
        assert!(file.remove(b"b"));
        assert!(!file.remove(b"zz"));
        assert_eq!(file.to_bytes(), b"# users\na:new-a\n\nc:hash-c\n");
    }

    #[test]
    fn appends_on_a_new_line_when_the_file_lacks_a_final_newline() {
        let mut file = PasswordFile::parse(b"a:x").unwrap();
        assert_eq!(file.to_bytes(), b"a:x");
        file.set(b"b", "y");
        assert_eq!(file.to_bytes(), b"a:x\nb:y\n");
    }

    #[test]
    fn corrupt_lines_are_reported_with_their_number() {
        assert_eq!(PasswordFile::parse(b"a:x\nnocolon\n"), Err(CorruptLine(2)));
        assert_eq!(PasswordFile::parse(b"a:x\n:\n"), Err(CorruptLine(2)));
        assert_eq!(PasswordFile::parse(b"user:   \n"), Err(CorruptLine(1)));
    }

    #[test]
    fn plain_passwords_are_hashed_once() {
        use dynsec::password::{HashPolicy, PasswordHash};
        let hashed = PasswordHash::new(b"x", HashPolicy::Sha512).unwrap().encode();
        let mut file = PasswordFile::parse(format!("a:plain\nb:{hashed}\nc:$6$short$x\n").as_bytes()).unwrap();
        let mut seen = Vec::new();
        file.hash_plain_passwords(|p| {
            seen.push(p.to_vec());
            Ok::<_, ()>("H".to_string())
        })
        .unwrap();
        assert_eq!(seen, [b"plain".to_vec(), b"$6$short$x".to_vec()]);
        assert_eq!(file.to_bytes(), format!("a:H\nb:{hashed}\nc:H\n").into_bytes());
    }
}
