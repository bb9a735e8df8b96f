//! mosquitto's `log_type` / `log_dest` mapped onto `tracing`: the most verbose `log_type` sets the
//! level, each `log_dest` gets every line (plain text, no colours). rumqttd's own log lines are
//! router internals (including benign "already gone" errors when a link's last two wake-ups race):
//! they are shown, from warnings up, only when debug logging is on. rustls's own lines (e.g. a
//! warning for every client that sends an IP address as SNI, as libmosquitto does) are shown only
//! with debug logging; handshake failures are logged by the listener. `log_dest file` is
//! reopened on SIGHUP ([`reopen_files`]), so logrotate can move it away as it does for mosquitto.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
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

/// Installs the global subscriber. Call once, before the broker starts.
pub fn init(log: &LogConfig) -> Result<(), Error> {
    let Some(level) = log.level else { return Ok(()) };
    let mut writers = log.dests.iter();
    let Some(first) = writers.next() else { return Ok(()) };
    let mut files = Vec::new();
    let mut writer = writer_for(first, &mut files)?;
    for dest in writers {
        writer = BoxMakeWriter::new(writer.and(writer_for(dest, &mut files)?));
    }
    let _ = LOG_FILES.set(files);
    let router_level = if level >= tracing::Level::DEBUG { LevelFilter::WARN } else { LevelFilter::OFF };
    let filter =
        Targets::new().with_default(level).with_target("rumqttd", router_level).with_target("rustls", router_level);
    let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_target(false).with_writer(writer);
    tracing_subscriber::registry().with(layer).with(filter).try_init().map_err(|e| Error::Logging(e.to_string()))
}
