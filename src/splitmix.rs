//! SplitMix64: the small, seedable generator behind cairn's own
//! reproducible draws (openraft's election timeouts, Vivaldi's jitter, the
//! simulator's fault points), where a full RNG crate's state and API would
//! be more than the job needs.

/// Advances `state` and returns the next draw.
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw as a number uniform in [0, 1).
pub fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_follow_the_reference_sequence() {
        // SplitMix64's published first outputs for seed 0.
        let mut s = 0;
        assert_eq!(super::next(&mut s), 0xe220_a839_7b1d_cdaf);
        assert_eq!(super::next(&mut s), 0x6e78_9e6a_a1b9_65f4);
        assert!((0.0..1.0).contains(&super::unit(u64::MAX)));
    }
}
