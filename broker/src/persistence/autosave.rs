//! When autosave mode syncs the write-ahead log: every `autosave_interval` seconds (with
//! `autosave_on_changes true`: every `autosave_interval` changes; 0: only at shutdown), the
//! meanings of mosquitto's options (docs/persistence.md, "Modes"). The writer asks this after
//! each group and sleeps at most [`Autosave::wait`] between groups.

use std::time::{Duration, Instant};

/// See the module documentation.
pub struct Autosave {
    interval: u64,
    on_changes: bool,
    /// Changes written since the last sync.
    changes: u64,
    last: Instant,
}

impl Autosave {
    pub fn new(interval: u64, on_changes: bool) -> Autosave {
        Autosave { interval, on_changes, changes: 0, last: Instant::now() }
    }

    /// Counts `n` changes written and not synced.
    pub fn written(&mut self, n: usize) {
        self.changes += n as u64;
    }

    /// Whether a sync is due now.
    pub fn due(&self) -> bool {
        match (self.interval, self.on_changes) {
            (0, _) => false,
            (n, true) => self.changes >= n,
            (n, false) => self.changes > 0 && self.last.elapsed() >= Duration::from_secs(n),
        }
    }

    /// When a sync falls due with nothing more written (`None`: not by time).
    pub fn due_at(&self) -> Option<Instant> {
        if self.interval == 0 || self.on_changes || self.changes == 0 {
            return None;
        }
        Some(self.last + Duration::from_secs(self.interval))
    }

    /// Everything written so far is durable.
    pub fn synced(&mut self) {
        self.changes = 0;
        self.last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_changes_counts_changes_and_zero_never_falls_due() {
        let mut every_three = Autosave::new(3, true);
        every_three.written(2);
        assert!(!every_three.due() && every_three.due_at().is_none());
        every_three.written(1);
        assert!(every_three.due());
        every_three.synced();
        assert!(!every_three.due());
        let mut never = Autosave::new(0, false);
        never.written(1_000_000);
        assert!(!never.due() && never.due_at().is_none());
        let mut timed = Autosave::new(60, false);
        assert!(timed.due_at().is_none(), "nothing written, nothing to sync");
        timed.written(1);
        assert!(!timed.due() && timed.due_at().is_some());
    }
}
