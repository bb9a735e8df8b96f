//! A cheap hasher for the maps persistence keys by numbers the broker assigns itself: store
//! sequences (the fold's index of queued copies) and the packet ids of a connection's deliveries.
//! The standard SipHash resists keys chosen to collide, which these are not (the broker counts
//! them up), and cost ~1.5 % of the gate's samples per persisted message (docs/persistence.md,
//! "Where the gate's CPU goes"); a multiply spreads counted-up numbers over the table as well.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing: a number times 2^64 / φ (odd), which moves every input bit into the
/// high bits the table looks at first.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// See the module documentation. Meant for integer keys (`write_u64` and friends); arbitrary
/// bytes are folded in eight at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(SPREAD);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(n.into());
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n.into());
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type NumberMap<K, V> = HashMap<K, V, BuildHasherDefault<NumberHasher>>;
pub type NumberSet<K> = HashSet<K, BuildHasherDefault<NumberHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_up_keys_spread_and_maps_work() {
        let mut map: NumberMap<u64, u64> = NumberMap::default();
        for n in 0..10_000u64 {
            map.insert(n, n * 2);
        }
        assert!((0..10_000u64).all(|n| map.get(&n) == Some(&(n * 2))));
        assert_eq!(map.remove(&17), Some(34));
        assert_eq!(map.len(), 9_999);
        // Consecutive keys land in different high bits (what the table's control bytes use).
        let top = |n: u64| {
            let mut h = NumberHasher::default();
            h.write_u64(n);
            h.finish() >> 57
        };
        let distinct: NumberSet<u64> = (0..128u64).map(top).collect();
        assert!(distinct.len() > 64, "{}", distinct.len());
    }
}
