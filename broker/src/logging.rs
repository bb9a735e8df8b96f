//! mosquitto's `log_type` / `log_dest` mapped onto `tracing`: the most verbose `log_type` sets the
//! level, each `log_dest` gets every line (plain text, no colours). rumqttd's own log lines are
//! router internals (including benign "already gone" errors when a link's last two wake-ups race):
//! they are shown, from warnings up, only when debug logging is on. rustls's own lines (e.g. a
//! warning for every client that sends an IP address as SNI, as libmosquitto does) are shown only
//! with debug logging; handshake failures are logged by the listener. `log_dest file` is
//! reopened on SIGHUP ([`reopen_files`]), so logrotate can move it away as it does for mosquitto.
//!
//! Lines look like mosquitto's: `1796586626: New client connected from ...` (Unix time, left out
//! with `log_timestamp false`), the message, then any structured fields as `key=value`. Errors
//! and warnings start with `Error: ` / `Warning: ` as mosquitto's do. `connection_messages false`
//! silences the connect and disconnect lines ([`connection_messages`]).
//!
//! Text a client chose (client ids, usernames, topics, filters) reaches log lines only through
//! [`client_text`], which escapes control characters (so a client cannot forge log lines or
//! terminal escapes) and cuts it to [`CLIENT_TEXT_MAX`] characters (so a client cannot make the
//! broker write 64 KiB lines).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::Error;
use crate::config::{LogConfig, LogDest};

/// The `log_dest file` destinations, for [`reopen_files`].
static LOG_FILES: OnceLock<Vec<Arc<LogFile>>> = OnceLock::new();

/// One `log_dest file`: the open file, replaced when reopened.
struct LogFile {
    path: PathBuf,
    file: RwLock<Arc<File>>,
}

impl LogFile {
    fn open(path: &Path) -> Result<File, Error> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Logging(format!("cannot open log file {}: {e}", path.display())))
    }
}

/// What one log line is written through: the file that was current when the line started.
struct LogFileWriter(Arc<File>);

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

/// Reopens every `log_dest file` by its path (SIGHUP). A file that cannot be reopened keeps the
/// old one, with an error logged.
pub fn reopen_files() {
    for log_file in LOG_FILES.get().into_iter().flatten() {
        match LogFile::open(&log_file.path) {
            Ok(file) => *log_file.file.write() = Arc::new(file),
            Err(error) => tracing::error!("{error}; still logging to the old file"),
        }
    }
}

fn writer_for(dest: &LogDest, files: &mut Vec<Arc<LogFile>>) -> Result<BoxMakeWriter, Error> {
    Ok(match dest {
        LogDest::Stderr => BoxMakeWriter::new(std::io::stderr),
        LogDest::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogDest::File(path) => {
            let log_file = Arc::new(LogFile { path: path.clone(), file: RwLock::new(Arc::new(LogFile::open(path)?)) });
            files.push(Arc::clone(&log_file));
            BoxMakeWriter::new(move || LogFileWriter(Arc::clone(&log_file.file.read())))
        }
    })
}

/// `connection_messages` (mosquitto's default: true).
static CONNECTION_MESSAGES: AtomicBool = AtomicBool::new(true);

/// Whether connects and disconnects are logged (`connection_messages`).
pub fn connection_messages() -> bool {
    CONNECTION_MESSAGES.load(Ordering::Relaxed)
}

/// mosquitto's line layout (see the module documentation).
struct MosquittoFormat {
    timestamp: bool,
}

impl<S, N> FormatEvent<S, N> for MosquittoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.timestamp {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            write!(writer, "{}: ", now.as_secs())?;
        }
        let mut text = String::new();
        ctx.field_format().format_fields(Writer::new(&mut text), event)?;
        let prefix = match *event.metadata().level() {
            Level::ERROR if !text.starts_with("Error") => "Error: ",
            Level::WARN if !text.starts_with("Warning") => "Warning: ",
            _ => "",
        };
        writeln!(writer, "{prefix}{text}")
    }
}

/// Installs the global subscriber. Call once, before the broker starts. `counters` listens
/// whatever the log settings (the router's drops, `routing::router_drops`, given by the caller:
/// logging sits below routing).
pub fn init<L>(log: &LogConfig, counters: L) -> Result<(), Error>
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    CONNECTION_MESSAGES.store(log.connection_messages, Ordering::Relaxed);
    let drops = counters;
    let (Some(level), Some(first)) = (log.level, log.dests.first()) else {
        // Nothing logged: only the counters listen.
        let _ = tracing_subscriber::registry().with(drops).try_init();
        return Ok(());
    };
    let mut files = Vec::new();
    let mut writer = writer_for(first, &mut files)?;
    for dest in &log.dests[1..] {
        writer = BoxMakeWriter::new(writer.and(writer_for(dest, &mut files)?));
    }
    let _ = LOG_FILES.set(files);
    let router_level = if level >= tracing::Level::DEBUG { LevelFilter::WARN } else { LevelFilter::OFF };
    // Libraries log in their own words (Debug-formatted frames, for tungstenite); our lines say
    // what matters.
    let filter = Targets::new()
        .with_default(level)
        .with_target("rumqttd", router_level)
        .with_target("rustls", router_level)
        .with_target("tungstenite", router_level)
        .with_target("tokio_tungstenite", router_level)
        .with_target("async_nats", router_level);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(MosquittoFormat { timestamp: log.timestamp })
        .with_writer(writer)
        .with_filter(filter);
    tracing_subscriber::registry().with(drops).with(layer).try_init().map_err(|e| Error::Logging(e.to_string()))
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
