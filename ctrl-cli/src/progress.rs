//! A one-line progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes get
//! no control characters).

use std::io::{IsTerminal, Write};

const WIDTH: usize = 30;

pub struct Progress {
    total: usize,
    enabled: bool,
    drawn: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress { total, enabled: std::io::stderr().is_terminal(), drawn: false }
    }

    /// Redraws the bar for `done` commands of which `failed` failed.
    pub fn update(&mut self, done: usize, failed: usize) {
        if !self.enabled {
            return;
        }
        let line = render(done, self.total, failed);
        let _ = write!(std::io::stderr(), "\r{line}");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    /// Ends the bar's line so that later output starts on a fresh one.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

/// `[#########.....................] 300/1000 commands, 2 failed`
pub fn render(done: usize, total: usize, failed: usize) -> String {
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH);
    format!("[{}{}] {done}/{total} commands, {failed} failed", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_is_proportional() {
        assert_eq!(super::render(0, 10, 0), format!("[{}] 0/10 commands, 0 failed", ".".repeat(30)));
        assert_eq!(super::render(5, 10, 1), format!("[{}{}] 5/10 commands, 1 failed", "#".repeat(15), ".".repeat(15)));
        assert_eq!(super::render(0, 0, 0), format!("[{}] 0/0 commands, 0 failed", "#".repeat(30)));
    }
}
