//! mosquitto's `log_type` / `log_dest` mapped onto `tracing`: the most verbose `log_type` sets the
//! level, each `log_dest` gets every line (plain text, no colours).

use std::fs::OpenOptions;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

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
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer)
        .try_init()
        .map_err(|e| Error::Logging(e.to_string()))
}

/// Keeps the `MakeWriter` bound visible to the compiler for boxed writers.
fn _assert_make_writer<W: for<'a> MakeWriter<'a>>(_: &W) {}
