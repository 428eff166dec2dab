//! Where a run's randomness comes from: seeds derived from the run's seed
//! by name, and a small generator for the network's draws. Below
//! everything else in the simulator, so that the topology, the network
//! and the engines draw alike.

/// A stable 64-bit seed from the run's seed, a node, its boot count and a
/// purpose (FNV-1a, then SplitMix64 to spread the bits). Stable across
/// platforms and Rust versions, unlike `std`'s hashers.
pub fn derive_seed(run_seed: u64, node: &str, boot: u64, purpose: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&run_seed.to_le_bytes());
    feed(node.as_bytes());
    feed(&[0xff]);
    feed(&boot.to_le_bytes());
    feed(purpose.as_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: cheap to seed, good enough for network draws.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl rand::RngCore for SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
