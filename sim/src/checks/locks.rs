//! `locks_exclusive`: no two lock clients ever believed they held the same
//! lock at once. What a client believed is its [`Hold`]: from its acquire's
//! success to its release call or the end of its session's lease (see
//! [`crate::engine::full::locks`]), so the check judges the servers' lock
//! delay and session invalidation against what a careful client counts on.

use std::collections::BTreeMap;

use crate::engine::full::locks::Hold;
use crate::verdict::CheckResult;

/// `locks_exclusive` over a run's holds.
pub fn locks_exclusive(holds: &[Hold]) -> CheckResult {
    let check = "locks_exclusive".to_string();
    if holds.is_empty() {
        return CheckResult {
            check,
            passed: false,
            detail: "no lock was ever held: give a kv_load event locks = 1".into(),
        };
    }
    let mut by_key: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in holds {
        by_key.entry(&h.key).or_default().push(h);
    }
    let summary = format!(
        "{} holds of {} locks by {} clients",
        holds.len(),
        by_key.len(),
        holds
            .iter()
            .map(|h| h.client)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    for list in by_key.values_mut() {
        list.sort_by_key(|h| (h.from_us, h.client));
        // The holds still running when the next one starts.
        let mut running: Vec<&Hold> = Vec::new();
        for &h in list.iter() {
            running.retain(|r| r.until_us > h.from_us);
            if let Some(r) = running.iter().find(|r| r.client != h.client) {
                return CheckResult {
                    check,
                    passed: false,
                    detail: format!("{summary}: two holders at once: {}", overlap(r, h)),
                };
            }
            running.push(h);
        }
    }
    CheckResult {
        check,
        passed: true,
        detail: format!("{summary}: never two holders at once"),
    }
}

fn overlap(a: &Hold, b: &Hold) -> String {
    format!(
        "{} was held by client {} on {} (session {}) from {} to {}, and by client {} on {} (session {}) from {}",
        a.key,
        a.client,
        a.node,
        a.session,
        secs(a.from_us),
        secs(a.until_us),
        b.client,
        b.node,
        b.session,
        secs(b.from_us),
    )
}

fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(client: u32, key: &str, from_s: f64, until_s: f64) -> Hold {
        Hold {
            client,
            node: format!("dc1-{client}"),
            key: key.into(),
            session: format!("s{client}"),
            from_us: (from_s * 1e6) as u64,
            until_us: (until_s * 1e6) as u64,
        }
    }

    #[test]
    fn holders_one_after_another_pass() {
        let r = locks_exclusive(&[
            hold(1, "dc1/locks/l0", 1.0, 5.0),
            hold(2, "dc1/locks/l0", 5.0, 9.0),
            hold(1, "dc1/locks/l1", 2.0, 20.0),
            hold(3, "dc1/locks/l0", 9.5, 12.0),
        ]);
        assert!(r.passed, "{}", r.detail);
        assert!(
            r.detail.contains("4 holds of 2 locks by 3 clients"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn an_overlap_is_named_even_behind_a_short_hold() {
        // Client 2's short hold ends before client 3 starts, but client
        // 1's long one still runs.
        let r = locks_exclusive(&[
            hold(1, "dc1/locks/l0", 1.0, 10.0),
            hold(2, "dc2/locks/l0", 2.0, 3.0),
            hold(2, "dc1/locks/l0", 10.0, 11.0),
            hold(3, "dc1/locks/l0", 10.5, 12.0),
        ]);
        assert!(!r.passed);
        assert!(
            r.detail.contains("dc1/locks/l0 was held by client 2")
                && r.detail.contains("client 3 on dc1-3"),
            "{}",
            r.detail
        );
        let r = locks_exclusive(&[
            hold(1, "dc1/locks/l0", 1.0, 10.0),
            hold(2, "dc1/locks/l0", 4.0, 5.0),
        ]);
        assert!(!r.passed);
        assert!(r.detail.contains("from 1.000s to 10.000s"), "{}", r.detail);
    }

    #[test]
    fn one_clients_own_holds_may_touch_and_no_holds_is_a_failure() {
        let r = locks_exclusive(&[
            hold(1, "dc1/locks/l0", 1.0, 5.0),
            hold(1, "dc1/locks/l0", 4.9, 8.0),
        ]);
        assert!(r.passed, "{}", r.detail);
        let r = locks_exclusive(&[]);
        assert!(!r.passed && r.detail.contains("locks = 1"), "{}", r.detail);
    }
}
