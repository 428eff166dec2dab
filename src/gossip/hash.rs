//! Hashing for the gossip core's maps, which a 1,000-node join storm hits
//! hundreds of thousands of times a second: FxHash's word-at-a-time
//! mixing, with a final avalanche.
//!
//! - [`NameHasher`] is unkeyed, for the member map, which is walked (its
//!   order must replay identically in the simulator; it replaced a SipHash
//!   with fixed keys: no more predictable, much cheaper).
//! - [`Keyed`] draws a random key per map, for the maps that are only ever
//!   looked up (suspicions, pending acks, the broadcast queue's names): their
//!   order never shows, and a key a peer cannot know keeps names it chose
//!   from all landing in one bucket.

use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// FxHash with an avalanche at the end (see the module's notes).
#[derive(Debug, Default, Clone, Copy)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(x)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(v)).wrapping_mul(K);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }
}

/// [`NameHasher`] started from a random key drawn per map.
#[derive(Debug, Clone, Copy)]
pub struct Keyed(u64);

impl Default for Keyed {
    fn default() -> Self {
        // std's per-thread random keys, advanced for each map.
        Keyed(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

impl BuildHasher for Keyed {
    type Hasher = NameHasher;

    fn build_hasher(&self) -> NameHasher {
        NameHasher(self.0)
    }
}

/// A map that is only looked up, never walked in order.
pub type LookupMap<K, V> = std::collections::HashMap<K, V, Keyed>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasherDefault;

    #[test]
    fn names_spread_over_the_low_bits() {
        // The member map's trie takes 5 bits a level from the low end.
        let b = BuildHasherDefault::<NameHasher>::default();
        let mut buckets = [0u32; 32];
        for i in 0..32_000 {
            buckets[(b.hash_one(format!("dc1-{i}")) & 31) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
        // Unkeyed: the same on every run.
        assert_eq!(b.hash_one("dc1-7"), b.hash_one("dc1-7"));
    }
}
