//! The changes written to the write-ahead log and not yet folded into redb (durable mode,
//! `persistence/writer.rs`). A message queued for a persistent session and removed again before
//! the next fold (its client acknowledged it within the fold interval, the common case for a
//! connected subscriber) never reaches redb: the two changes cancel here, and redb's B-trees are
//! touched only by what outlives a fold interval (docs/persistence.md, "Write-ahead log").

use super::number_hash::NumberMap;
use super::store::Op;

#[derive(Default)]
pub struct Pending {
    ops: Vec<Option<Op>>,
    /// Store sequence → the places in `ops` of the `Queue` changes with that sequence (one
    /// publish queued for several sessions shares its sequence).
    queued: NumberMap<u64, Places>,
    live: usize,
}

/// The places of one sequence's copies: almost always one (no allocation for it).
enum Places {
    One(usize),
    Many(Vec<usize>),
}

impl Places {
    fn add(&mut self, at: usize) {
        match self {
            Places::One(first) => *self = Places::Many(vec![*first, at]),
            Places::Many(places) => places.push(at),
        }
    }

    /// Takes the first place `is_it` picks.
    fn take(&mut self, is_it: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Places::One(at) if is_it(*at) => {
                let at = *at;
                *self = Places::Many(Vec::new());
                Some(at)
            }
            Places::One(_) => None,
            Places::Many(places) => places.iter().position(|&i| is_it(i)).map(|p| places.swap_remove(p)),
        }
    }
}

impl Pending {
    /// Changes waiting (after cancelling).
    pub fn count(&self) -> usize {
        self.live
    }

    pub fn push(&mut self, op: Op) {
        match &op {
            Op::Dequeue { client_id, sequence } => {
                let ops = &self.ops;
                if let Some(places) = self.queued.get_mut(sequence)
                    && let Some(i) = places.take(
                        |i| matches!(&ops[i], Some(Op::Queue { client_id: queued_for, .. }) if queued_for == client_id),
                    )
                {
                    // The key did not exist before its `Queue` (sequences are new), so
                    // insert-then-remove is no change at all, whatever came between.
                    self.ops[i] = None;
                    self.live -= 1;
                    return;
                }
            }
            Op::Queue { sequence, .. } => {
                let at = self.ops.len();
                self.queued.entry(*sequence).and_modify(|places| places.add(at)).or_insert(Places::One(at));
            }
            _ => {}
        }
        self.ops.push(Some(op));
        self.live += 1;
    }

    /// Pushes the changes of several records, in order.
    pub fn extend(&mut self, batches: impl IntoIterator<Item = Vec<Op>>) {
        for batch in batches {
            for op in batch {
                self.push(op);
            }
        }
    }

    /// The changes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().flatten()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
        self.queued.clear();
        self.live = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(client: &str, sequence: u64) -> Op {
        Op::Queue { client_id: client.into(), sequence, message: vec![1].into() }
    }

    fn dequeue(client: &str, sequence: u64) -> Op {
        Op::Dequeue { client_id: client.into(), sequence }
    }

    fn shape(pending: &Pending) -> Vec<String> {
        pending
            .iter()
            .map(|op| match op {
                Op::Queue { client_id, sequence, .. } => format!("+{client_id}/{sequence}"),
                Op::Dequeue { client_id, sequence } => format!("-{client_id}/{sequence}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_queued_copy_removed_before_the_fold_cancels_out() {
        let mut pending = Pending::default();
        pending.push(queue("a", 1));
        pending.push(queue("b", 1));
        pending.push(queue("a", 2));
        pending.push(dequeue("a", 1));
        // A removal of something queued before this fold must reach redb.
        pending.push(dequeue("c", 0));
        assert_eq!(shape(&pending), ["+b/1", "+a/2", "-c/0"]);
        assert_eq!(pending.count(), 3);
        pending.push(dequeue("b", 1));
        pending.push(dequeue("a", 2));
        assert_eq!(shape(&pending), ["-c/0"]);
        pending.clear();
        assert!(pending.count() == 0 && pending.iter().next().is_none());
    }
}
