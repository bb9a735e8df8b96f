//! A one-line progress bar on stderr: steps done of the planned total, what runs now, elapsed
//! time. Redrawn in place; stdout stays clean for the table.

use std::io::Write;
use std::time::Instant;

pub struct ProgressBar {
    total: usize,
    done: usize,
    started: Instant,
    label: String,
    width: usize,
}

impl ProgressBar {
    pub fn new(total: usize) -> ProgressBar {
        ProgressBar { total: total.max(1), done: 0, started: Instant::now(), label: String::new(), width: 0 }
    }

    /// Names the step that starts now.
    pub fn start(&mut self, label: impl Into<String>) {
        self.label = label.into();
        self.draw("");
    }

    /// A detail of the running step (e.g. "batch 12/100").
    pub fn detail(&mut self, detail: &str) {
        self.draw(detail);
    }

    pub fn finish_step(&mut self) {
        self.done = (self.done + 1).min(self.total);
        self.draw("");
    }

    /// Prints a line above the bar (warnings, skipped brokers).
    pub fn note(&mut self, line: &str) {
        eprint!("\r{:width$}\r", "", width = self.width);
        eprintln!("{line}");
        self.draw("");
    }

    fn draw(&mut self, detail: &str) {
        const BAR: usize = 24;
        let filled = BAR * self.done / self.total;
        let secs = self.started.elapsed().as_secs();
        let line = format!(
            "[{}{}] {:>3}% {}/{} {:02}:{:02} {} {}",
            "#".repeat(filled),
            "-".repeat(BAR - filled),
            100 * self.done / self.total,
            self.done,
            self.total,
            secs / 60,
            secs % 60,
            self.label,
            detail
        );
        let pad = self.width.saturating_sub(line.chars().count());
        eprint!("\r{line}{:pad$}", "");
        self.width = line.chars().count();
        let _ = std::io::stderr().flush();
    }

    pub fn clear(&mut self) {
        eprint!("\r{:width$}\r", "", width = self.width);
        let _ = std::io::stderr().flush();
    }
}
