//! Are the `kv_load` transaction clients' transactions strictly
//! serializable? An Elle-style checker (Kingsbury & Alvaro, VLDB 2020) over
//! list-append histories: each key holds a list, transactions append unique
//! elements and read whole lists. Because every element is unique and a
//! list only grows, a read names the transactions it saw and the order in
//! which their appends happened, so the dependencies between transactions
//! can be inferred rather than searched for:
//!
//! - *ww*: T1 appended to a key before T2 did (adjacent in the key's list);
//! - *wr*: T2 read a list whose last element T1 appended;
//! - *rw*: T1 read a list that T2's append then extended;
//! - *realtime*: T1 returned before T2 was called.
//!
//! A serializable history has an order of its committed transactions that
//! respects every ww, wr and rw edge; a strictly serializable one also every
//! realtime edge. So any cycle in the graph is an anomaly, named as Adya
//! does: G0 (write cycle), G1c (ww and wr), G-single (one rw), G2 (more),
//! and a cycle that needs a realtime edge breaks strict serializability
//! only. Some anomalies need no cycle: a read of an element no committed
//! transaction appended (G1a, an aborted read, when its transaction
//! failed), two reads of one key that are not prefixes of one another
//! (incompatible orders), and an element read twice in one list.
//!
//! A transaction whose outcome its client never learned may have
//! committed: it counts as committed exactly when some read saw one of its
//! elements.

use std::collections::{BTreeMap, HashMap};

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    /// Append `value` to the list at `key`.
    Append {
        /// The key.
        key: String,
        /// The element (unique per key across the run).
        value: u64,
    },
    /// Read the list at `key`: `None` until the transaction committed.
    Read {
        /// The key.
        key: String,
        /// The list seen.
        seen: Option<Vec<u64>>,
    },
}

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It committed.
    Ok,
    /// It was refused and took no effect.
    Failed,
    /// No answer: it may or may not have committed.
    Unknown,
}

/// One transaction of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Who called it.
    pub client: u32,
    /// When it was called, virtual microseconds.
    pub call: u64,
    /// When it returned (`None`: never, as far as its client knows).
    pub ret: Option<u64>,
    /// How it ended.
    pub status: Status,
    /// Its operations, in order; reads hold what they saw.
    pub mops: Vec<Mop>,
}

/// Why a history is not strictly serializable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Its name: G0, G1a, G1c, G-single, G2, realtime, incompatible-order,
    /// duplicate, garbage-read.
    pub kind: String,
    /// The transactions involved, and how.
    pub detail: String,
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Why one transaction must come before another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Why {
    Ww,
    Wr,
    Rw,
    Realtime,
}

impl Why {
    fn name(self) -> &'static str {
        match self {
            Why::Ww => "ww",
            Why::Wr => "wr",
            Why::Rw => "rw",
            Why::Realtime => "realtime",
        }
    }
}

/// Checks `history`; the first anomaly found, if any.
pub fn check(history: &[Txn]) -> Result<(), Anomaly> {
    // Who appended each element of each key.
    let mut writer: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, t) in history.iter().enumerate() {
        for m in &t.mops {
            if let Mop::Append { key, value } = m {
                writer.insert((key.as_str(), *value), i);
            }
        }
    }
    // A transaction counts as committed if it said so, or, when its fate
    // is unknown, if someone saw what it wrote.
    let mut committed: Vec<bool> = history.iter().map(|t| t.status == Status::Ok).collect();
    let reads = || {
        history
            .iter()
            .enumerate()
            .filter(|(_, t)| t.status == Status::Ok)
            .flat_map(|(i, t)| {
                t.mops.iter().filter_map(move |m| match m {
                    Mop::Read {
                        key,
                        seen: Some(seen),
                    } => Some((i, key.as_str(), seen)),
                    _ => None,
                })
            })
    };
    for (reader, key, seen) in reads() {
        let mut once = std::collections::HashSet::new();
        for v in seen {
            if !once.insert(*v) {
                return Err(Anomaly {
                    kind: "duplicate".into(),
                    detail: format!(
                        "{} read {key} as {seen:?}: {v} twice",
                        name(history, reader)
                    ),
                });
            }
            match writer.get(&(key, *v)) {
                None => {
                    return Err(Anomaly {
                        kind: "garbage-read".into(),
                        detail: format!(
                            "{} read {key} as {seen:?}, but no transaction appended {v}",
                            name(history, reader)
                        ),
                    })
                }
                Some(&w) if history[w].status == Status::Failed => {
                    return Err(Anomaly {
                        kind: "G1a".into(),
                        detail: format!(
                            "{} read {key} as {seen:?}, with {v} from {}, which failed",
                            name(history, reader),
                            name(history, w)
                        ),
                    })
                }
                Some(&w) => committed[w] = true,
            }
        }
    }
    // Each key's order: its longest read, which every other read must be
    // a prefix of.
    let mut order: BTreeMap<&str, (usize, &Vec<u64>)> = BTreeMap::new();
    for (reader, key, seen) in reads() {
        let longest = order.entry(key).or_insert((reader, seen));
        if seen.len() > longest.1.len() {
            *longest = (reader, seen);
        }
    }
    for (reader, key, seen) in reads() {
        let (other, longest) = order[key];
        if !longest.starts_with(seen) {
            return Err(Anomaly {
                kind: "incompatible-order".into(),
                detail: format!(
                    "{} read {key} as {seen:?} and {} read it as {longest:?}: neither list extends the other",
                    name(history, reader),
                    name(history, other)
                ),
            });
        }
    }

    let n = history.len();
    let mut edges: Vec<Vec<(usize, Why)>> = vec![Vec::new(); n];
    let mut add = |from: usize, to: usize, why: Why| {
        if from != to && committed[from] && committed[to] {
            edges[from].push((to, why));
        }
    };
    for (key, (_, list)) in &order {
        for pair in list.windows(2) {
            add(writer[&(*key, pair[0])], writer[&(*key, pair[1])], Why::Ww);
        }
    }
    for (reader, key, seen) in reads() {
        let list = order[key].1;
        if let Some(last) = seen.last() {
            add(writer[&(key, *last)], reader, Why::Wr);
        }
        if let Some(next) = list.get(seen.len()) {
            add(reader, writer[&(key, *next)], Why::Rw);
        }
    }
    // Realtime, reduced: a transaction follows the ones that had returned
    // when it was called and that no other such one follows.
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, t) in history.iter().enumerate().filter(|(i, _)| committed[*i]) {
        events.push((t.call, true, i));
        if let Some(r) = t.ret {
            events.push((r, false, i));
        }
    }
    // Returns before calls at one instant: a call at the instant another
    // returned came after it.
    events.sort_by_key(|&(t, is_call, i)| (t, is_call, i));
    let mut frontier: Vec<usize> = Vec::new();
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (_, is_call, i) in events {
        if is_call {
            before[i] = frontier.clone();
            for &p in &frontier {
                add(p, i, Why::Realtime);
            }
        } else {
            frontier.retain(|p| !before[i].contains(p));
            frontier.push(i);
        }
    }
    for e in &mut edges {
        e.sort();
        e.dedup_by_key(|x| x.0);
    }

    match find_cycle(&edges) {
        None => Ok(()),
        Some(cycle) => Err(describe(history, &cycle)),
    }
}

/// A cycle of the graph, as (transaction, why the next follows it), if any:
/// Tarjan's strongly connected components, then the shortest way back to
/// one member of a component from itself. Cycles without a realtime edge
/// are preferred, as the stronger finding.
fn find_cycle(edges: &[Vec<(usize, Why)>]) -> Option<Vec<(usize, Why)>> {
    let without_realtime: Vec<Vec<(usize, Why)>> = edges
        .iter()
        .map(|e| e.iter().copied().filter(|x| x.1 != Why::Realtime).collect())
        .collect();
    for graph in [&without_realtime[..], edges] {
        for component in components(graph) {
            if component.len() > 1 {
                let start = component[0];
                if let Some(c) = shortest_cycle(graph, start, &component) {
                    return Some(c);
                }
            }
        }
    }
    None
}

/// Strongly connected components (iterative Tarjan).
fn components(edges: &[Vec<(usize, Why)>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut at)) = work.last_mut() {
            if *at == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&(w, _)) = edges[v].get(*at) {
                *at += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut c = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    c.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(c);
            }
        }
    }
    out
}

/// The shortest path from `start` back to itself inside `component`.
fn shortest_cycle(
    edges: &[Vec<(usize, Why)>],
    start: usize,
    component: &[usize],
) -> Option<Vec<(usize, Why)>> {
    let inside: std::collections::HashSet<usize> = component.iter().copied().collect();
    let mut came: HashMap<usize, (usize, Why)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(w, why) in &edges[v] {
            if !inside.contains(&w) || came.contains_key(&w) {
                continue;
            }
            came.insert(w, (v, why));
            if w == start {
                let mut path = Vec::new();
                let mut at = start;
                loop {
                    let (from, why) = came[&at];
                    path.push((from, why));
                    at = from;
                    if at == start {
                        break;
                    }
                }
                path.reverse();
                return Some(path);
            }
            queue.push_back(w);
        }
    }
    None
}

fn describe(history: &[Txn], cycle: &[(usize, Why)]) -> Anomaly {
    let whys: Vec<Why> = cycle.iter().map(|c| c.1).collect();
    let rw = whys.iter().filter(|w| **w == Why::Rw).count();
    let kind = if whys.contains(&Why::Realtime) {
        "realtime"
    } else if rw == 1 {
        "G-single"
    } else if rw > 1 {
        "G2"
    } else if whys.contains(&Why::Wr) {
        "G1c"
    } else {
        "G0"
    };
    let steps: Vec<String> = cycle
        .iter()
        .map(|&(t, why)| format!("{} -{}->", name(history, t), why.name()))
        .collect();
    Anomaly {
        kind: kind.into(),
        detail: format!(
            "a cycle of {} transactions: {} {}",
            cycle.len(),
            steps.join(" "),
            name(history, cycle[0].0)
        ),
    }
}

/// A transaction as a report names it.
fn name(history: &[Txn], i: usize) -> String {
    let t = &history[i];
    let mops: Vec<String> = t
        .mops
        .iter()
        .map(|m| match m {
            Mop::Append { key, value } => format!("append {key} {value}"),
            Mop::Read { key, seen: Some(s) } => format!("read {key} {s:?}"),
            Mop::Read { key, seen: None } => format!("read {key} ?"),
        })
        .collect();
    let ret = t
        .ret
        .map_or("?".to_string(), |r| format!("{:.3}s", r as f64 / 1e6));
    format!(
        "[client {} {:.3}s..{ret} {}]",
        t.client,
        t.call as f64 / 1e6,
        mops.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(client: u32, call: u64, ret: u64, mops: Vec<Mop>) -> Txn {
        Txn {
            client,
            call,
            ret: Some(ret),
            status: Status::Ok,
            mops,
        }
    }

    fn app(key: &str, value: u64) -> Mop {
        Mop::Append {
            key: key.into(),
            value,
        }
    }

    fn read(key: &str, seen: &[u64]) -> Mop {
        Mop::Read {
            key: key.into(),
            seen: Some(seen.to_vec()),
        }
    }

    #[test]
    fn a_serial_history_passes() {
        let h = vec![
            txn(1, 0, 10, vec![app("x", 1), app("y", 1)]),
            txn(2, 20, 30, vec![read("x", &[1]), app("x", 2)]),
            txn(3, 40, 50, vec![read("x", &[1, 2]), read("y", &[1])]),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn concurrent_transactions_may_go_either_way() {
        let h = vec![
            txn(1, 0, 100, vec![app("x", 1)]),
            txn(2, 0, 100, vec![read("x", &[])]),
            txn(3, 200, 300, vec![read("x", &[1])]),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn write_skew_is_g2() {
        // Each read the other's key empty and then appended to its own:
        // no serial order has both reads see nothing.
        let h = vec![
            txn(1, 0, 100, vec![read("x", &[]), app("y", 1)]),
            txn(2, 0, 100, vec![read("y", &[]), app("x", 1)]),
            txn(3, 200, 300, vec![read("x", &[1]), read("y", &[1])]),
        ];
        let a = check(&h).unwrap_err();
        assert_eq!(a.kind, "G2", "{a}");
        assert!(a.detail.contains("-rw->"), "{a}");
    }

    #[test]
    fn a_lost_update_is_g_single() {
        let h = vec![
            txn(1, 0, 100, vec![read("x", &[]), app("x", 1)]),
            txn(2, 0, 100, vec![read("x", &[]), app("x", 2)]),
            txn(3, 200, 300, vec![read("x", &[1, 2])]),
        ];
        let a = check(&h).unwrap_err();
        assert_eq!(a.kind, "G-single", "{a}");
    }

    #[test]
    fn a_read_of_a_failed_append_is_g1a() {
        let mut failed = txn(1, 0, 10, vec![app("x", 1)]);
        failed.status = Status::Failed;
        let h = vec![failed, txn(2, 20, 30, vec![read("x", &[1])])];
        let a = check(&h).unwrap_err();
        assert_eq!(a.kind, "G1a", "{a}");
    }

    #[test]
    fn unknown_transactions_count_when_seen() {
        let mut lost = txn(1, 0, 10, vec![app("x", 1)]);
        lost.status = Status::Unknown;
        lost.ret = None;
        let h = vec![lost.clone(), txn(2, 20, 30, vec![read("x", &[1])])];
        assert_eq!(check(&h), Ok(()));
        let h = vec![lost, txn(2, 20, 30, vec![read("x", &[])])];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_stale_read_breaks_realtime_order_only() {
        // T2 returned before T3 was called, yet T3 missed T2's append.
        let h = vec![
            txn(1, 0, 10, vec![app("x", 1)]),
            txn(2, 20, 30, vec![app("x", 2)]),
            txn(3, 40, 50, vec![read("x", &[1])]),
            txn(4, 60, 70, vec![read("x", &[1, 2])]),
        ];
        let a = check(&h).unwrap_err();
        assert_eq!(a.kind, "realtime", "{a}");
    }

    #[test]
    fn diverging_reads_and_garbage_are_named() {
        let h = vec![
            txn(1, 0, 10, vec![app("x", 1)]),
            txn(2, 0, 10, vec![app("x", 2)]),
            txn(3, 20, 30, vec![read("x", &[1, 2])]),
            txn(4, 20, 30, vec![read("x", &[2, 1])]),
        ];
        assert_eq!(check(&h).unwrap_err().kind, "incompatible-order");
        let h = vec![txn(3, 20, 30, vec![read("x", &[7])])];
        assert_eq!(check(&h).unwrap_err().kind, "garbage-read");
        let h = vec![
            txn(1, 0, 10, vec![app("x", 1)]),
            txn(3, 20, 30, vec![read("x", &[1, 1])]),
        ];
        assert_eq!(check(&h).unwrap_err().kind, "duplicate");
    }

    #[test]
    fn a_write_cycle_is_g0() {
        // x says T1 then T2, y says T2 then T1.
        let h = vec![
            txn(1, 0, 100, vec![app("x", 1), app("y", 1)]),
            txn(2, 0, 100, vec![app("x", 2), app("y", 2)]),
            txn(3, 200, 300, vec![read("x", &[1, 2]), read("y", &[2, 1])]),
        ];
        assert_eq!(check(&h).unwrap_err().kind, "G0");
    }
}
