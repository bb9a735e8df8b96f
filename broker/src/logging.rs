//! mosquitto's `log_type` / `log_dest` mapped onto `tracing`: the most verbose `log_type` sets the
//! level, each `log_dest` gets every line (plain text, no colours). rumqttd's own log lines are
//! router internals (including benign "already gone" errors when a link's last two wake-ups race):
//! they are shown, from warnings up, only when debug logging is on. rustls's own lines (e.g. a
//! warning for every client that sends an IP address as SNI, as libmosquitto does) are shown only
//! with debug logging; handshake failures are logged by the listener.

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
