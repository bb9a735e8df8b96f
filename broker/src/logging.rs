//! mosquitto's `log_type` / `log_dest` mapped onto `tracing`: the most verbose `log_type` sets the
//! level, each `log_dest` gets every line (plain text, no colours). rumqttd's own log lines are
//! router internals (including benign "already gone" errors when a link's last two wake-ups race):
//! they are shown, from warnings up, only when debug logging is on. rustls's own lines (e.g. a
//! warning for every client that sends an IP address as SNI, as libmosquitto does) are shown only
//! with debug logging; handshake failures are logged by the listener.
//!
//! Text a client chose (client ids, usernames, topics, filters) reaches log lines only through
//! [`client_text`], which escapes control characters (so a client cannot forge log lines or
//! terminal escapes) and cuts it to [`CLIENT_TEXT_MAX`] characters (so a client cannot make the
//! broker write 64 KiB lines).

use std::fmt;
use std::fs::OpenOptions;
use std::sync::Arc;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::Error;
use crate::config::{LogConfig, LogDest};

fn writer_for(dest: &LogDest) -> Result<BoxMakeWriter, Error> {
    Ok(match dest {
        LogDest::Stderr => BoxMakeWriter::new(std::io::stderr),
        LogDest::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogDest::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::Logging(format!("cannot open log file {}: {e}", path.display())))?;
            BoxMakeWriter::new(Arc::new(file))
        }
    })
}

/// Installs the global subscriber. Call once, before the broker starts.
pub fn init(log: &LogConfig) -> Result<(), Error> {
    let Some(level) = log.level else { return Ok(()) };
    let mut writers = log.dests.iter();
    let Some(first) = writers.next() else { return Ok(()) };
    let mut writer = writer_for(first)?;
    for dest in writers {
        writer = BoxMakeWriter::new(writer.and(writer_for(dest)?));
    }
    let router_level = if level >= tracing::Level::DEBUG { LevelFilter::WARN } else { LevelFilter::OFF };
    let filter =
        Targets::new().with_default(level).with_target("rumqttd", router_level).with_target("rustls", router_level);
    let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_target(false).with_writer(writer);
    tracing_subscriber::registry().with(layer).with(filter).try_init().map_err(|e| Error::Logging(e.to_string()))
}

/// The most characters of client-chosen text a log line shows.
pub const CLIENT_TEXT_MAX: usize = 100;

/// Client-chosen text, made safe for a log line: control characters, bidirectional-text controls
/// and backslashes are escaped (`\n`, `\u{1b}`, `\\`) and anything after [`CLIENT_TEXT_MAX`]
/// characters is replaced by a marker with the full length. Formatting does the work, so a line
/// that is filtered out costs nothing.
pub fn client_text(text: &str) -> ClientText<'_> {
    ClientText(text)
}

/// See [`client_text`].
#[derive(Clone, Copy)]
pub struct ClientText<'a>(&'a str);

/// Characters that reorder how a terminal or viewer shows the rest of the line.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (count, c) in self.0.chars().enumerate() {
            if count == CLIENT_TEXT_MAX {
                return write!(f, "…[cut: {} bytes in all]", self.0.len());
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || is_bidi_control(c) => write!(f, "{}", c.escape_default())?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_escapes_control_characters() {
        assert_eq!(client_text("dev-1").to_string(), "dev-1");
        assert_eq!(client_text("a\nINFO forged line").to_string(), "a\\nINFO forged line");
        assert_eq!(client_text("\u{1b}[31mred\r\t").to_string(), "\\u{1b}[31mred\\r\\t");
        assert_eq!(client_text("back\\slash").to_string(), "back\\\\slash");
        assert_eq!(client_text("\u{202E}txt.exe").to_string(), "\\u{202e}txt.exe");
        assert_eq!(client_text("été/日本").to_string(), "été/日本", "printable non-ASCII stays");
    }

    #[test]
    fn client_text_is_cut_to_a_hundred_characters() {
        let long = "é".repeat(30_000);
        let shown = client_text(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(CLIENT_TEXT_MAX)));
        assert!(shown.ends_with("…[cut: 60000 bytes in all]"), "{shown}");
        assert_eq!(shown.chars().count(), CLIENT_TEXT_MAX + "…[cut: 60000 bytes in all]".chars().count());
        let exact = "x".repeat(CLIENT_TEXT_MAX);
        assert_eq!(client_text(&exact).to_string(), exact, "no marker when nothing is cut");
    }
}
