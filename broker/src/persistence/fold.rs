//! The changes written to the write-ahead log and not yet folded into redb
//! (`persistence/writer.rs`). A message queued for a persistent session and removed again before
//! the fold that would take it (its client acknowledged it meanwhile, the common case for a
//! connected subscriber) never reaches redb: the two changes cancel here, and redb's B-trees are
//! touched only by what outlives the fold. The periodic fold takes only the records taken over
//! some time ago and leaves the young ones here, so that copies queued just before it still
//! cancel (docs/persistence.md, "Folding the settled records").

use std::collections::VecDeque;
use std::time::Instant;

use super::number_hash::NumberMap;
use super::store::Op;

#[derive(Default)]
pub struct Pending {
    /// The changes in order; `None` where one was cancelled. `ops[0]` is the change at position
    /// `base` (positions count up from the first change ever pushed: they stay valid while the
    /// front is folded away).
    ops: VecDeque<Option<Op>>,
    base: usize,
    /// Store sequence → the positions of the `Queue` changes with that sequence (one publish
    /// queued for several sessions shares its sequence, in one record).
    queued: NumberMap<u64, Places>,
    live: usize,
    /// Where each record's changes end, its log sequence and when the writer took it over,
    /// oldest first: a fold that leaves the young records pending stops at one of these.
    records: VecDeque<Mark>,
}

/// The end of one record's changes in [`Pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The position after the record's last change.
    pub end: usize,
    /// The record's log sequence.
    pub sequence: u64,
    pub taken_at: Instant,
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

    fn is_empty(&self) -> bool {
        matches!(self, Places::Many(places) if places.is_empty())
    }

    /// Forgets the places before `end` (folded); whether none is left.
    fn forget_before(&mut self, end: usize) -> bool {
        match self {
            Places::One(at) => *at < end,
            Places::Many(places) => {
                places.retain(|&at| at >= end);
                places.is_empty()
            }
        }
    }
}

impl Pending {
    /// Changes waiting (after cancelling).
    pub fn count(&self) -> usize {
        self.live
    }

    fn push(&mut self, op: Op) {
        match &op {
            Op::Dequeue { client_id, sequence } => {
                let (ops, base) = (&self.ops, self.base);
                if let Some(places) = self.queued.get_mut(sequence)
                    && let Some(at) = places.take(|at| {
                        matches!(&ops[at - base], Some(Op::Queue { client_id: queued_for, .. }) if queued_for == client_id)
                    })
                {
                    if places.is_empty() {
                        self.queued.remove(sequence);
                    }
                    // The key did not exist before its `Queue` (sequences are new), so
                    // insert-then-remove is no change at all, whatever came between.
                    self.ops[at - self.base] = None;
                    self.live -= 1;
                    return;
                }
            }
            Op::Queue { sequence, .. } => {
                let at = self.base + self.ops.len();
                self.queued.entry(*sequence).and_modify(|places| places.add(at)).or_insert(Places::One(at));
            }
            _ => {}
        }
        self.ops.push_back(Some(op));
        self.live += 1;
    }

    /// Pushes the changes of several records (with their log sequences), in order, taken over
    /// from the log at `taken_at`.
    pub fn extend(&mut self, records: impl IntoIterator<Item = (u64, Vec<Op>)>, taken_at: Instant) {
        for (sequence, ops) in records {
            for op in ops {
                self.push(op);
            }
            self.records.push_back(Mark { end: self.base + self.ops.len(), sequence, taken_at });
        }
    }

    /// The changes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().flatten()
    }

    /// When the oldest record still pending was taken over.
    pub fn oldest(&self) -> Option<Instant> {
        self.records.front().map(|mark| mark.taken_at)
    }

    /// The end of the newest record taken over.
    pub fn newest(&self) -> Option<Mark> {
        self.records.back().copied()
    }

    /// The end of the newest record taken over at or before `before` (`None`: every record is
    /// younger).
    pub fn settled(&self, before: Instant) -> Option<Mark> {
        self.records.iter().take_while(|mark| mark.taken_at <= before).last().copied()
    }

    /// The changes before `mark` (those of its record and older ones), in order.
    pub fn iter_until(&self, mark: Mark) -> impl Iterator<Item = &Op> {
        self.ops.iter().take(mark.end.saturating_sub(self.base)).flatten()
    }

    /// Forgets the changes before `mark` (folded into redb): a removal that comes later for one
    /// of their copies is a change of its own. Returns how many there were (after cancelling).
    pub fn fold_until(&mut self, mark: Mark) -> usize {
        let n = mark.end.saturating_sub(self.base).min(self.ops.len());
        let mut folded = 0;
        for op in self.ops.drain(..n).flatten() {
            folded += 1;
            if let Op::Queue { sequence, .. } = op
                && let Some(places) = self.queued.get_mut(&sequence)
                && places.forget_before(mark.end)
            {
                self.queued.remove(&sequence);
            }
        }
        self.base += n;
        self.live -= folded;
        while self.records.front().is_some_and(|m| m.end <= self.base) {
            self.records.pop_front();
        }
        folded
    }

    pub fn clear(&mut self) {
        self.base += self.ops.len();
        self.ops.clear();
        self.queued.clear();
        self.records.clear();
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
        assert!(pending.queued.is_empty(), "no entry is left behind for cancelled copies");
    }

    /// A fold of the older records only: their copies go to redb (a later removal is a change
    /// of its own), the younger ones stay pending and still cancel against their removals.
    #[test]
    fn a_fold_of_the_settled_records_leaves_the_young_ones_cancelling() {
        let t0 = Instant::now();
        let later = |ms| t0 + std::time::Duration::from_millis(ms);
        let mut pending = Pending::default();
        pending.extend([(1, vec![queue("a", 1), queue("b", 1)]), (2, vec![queue("a", 2)])], t0);
        pending.extend([(3, vec![dequeue("b", 1), queue("a", 3)])], later(100));
        pending.extend([(4, vec![queue("a", 4)])], later(200));
        assert_eq!(shape(&pending), ["+a/1", "+a/2", "+a/3", "+a/4"]);
        assert_eq!(pending.oldest(), Some(t0));
        assert_eq!(pending.settled(later(50)).map(|m| m.sequence), Some(2));
        assert_eq!(pending.settled(later(150)).map(|m| m.sequence), Some(3));
        assert!(pending.settled(t0 - std::time::Duration::from_millis(1)).is_none());

        let mark = pending.settled(later(50)).unwrap();
        let folded: Vec<String> = pending
            .iter_until(mark)
            .map(|op| match op {
                Op::Queue { client_id, sequence, .. } => format!("+{client_id}/{sequence}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(folded, ["+a/1", "+a/2"]);
        assert_eq!(pending.fold_until(mark), 2);
        assert_eq!((pending.count(), pending.oldest()), (2, Some(later(100))));
        // Removals of folded copies reach redb; of pending ones, cancel.
        pending.extend([(5, vec![dequeue("a", 1), dequeue("a", 3), dequeue("a", 4)])], later(300));
        assert_eq!(shape(&pending), ["-a/1"]);
        assert_eq!(pending.count(), 1);
        let mark = pending.settled(later(300)).unwrap();
        assert_eq!(pending.fold_until(mark), 1);
        assert!(pending.count() == 0 && pending.iter().next().is_none() && pending.oldest().is_none());
        assert!(pending.queued.is_empty() && pending.ops.is_empty());
        // Positions stay valid after the front went.
        pending.extend([(6, vec![queue("c", 9), dequeue("c", 9)])], later(400));
        assert_eq!(pending.count(), 0);
    }
}
