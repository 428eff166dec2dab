//! Shrinking a failing `[chaos]` run to a plain scenario file that fails
//! the same way.
//!
//! The run's drawn faults are written out as `[[event]]`s, with every
//! leader pick pinned to the server it hit in the failing run (replaying
//! that file is the same run). Then, keeping each change only while some
//! check that failed still fails: drop faults (halves first, then
//! smaller pieces, as delta debugging does), halve their windows, and drop
//! client agents and servers that no fault names. Every candidate is
//! written as text and read back before it runs, so the file printed at
//! the end is exactly what was last seen failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::action::{Action, TimedAction};
use crate::report::Report;
use crate::scenario::events_to_table;
use crate::scenario::select::{placeholder, Placeholder};
use crate::scenario::Scenario;

/// What shrinking found.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The scenario file: no `[chaos]`, the remaining faults as events.
    pub text: String,
    /// The checks it fails.
    pub failed: Vec<String>,
    /// Faults in the failing run, and in the file.
    pub faults: (usize, usize),
    /// Nodes in the failing run, and in the file.
    pub nodes: (usize, usize),
    /// Runs it took.
    pub runs: usize,
}

/// One candidate: the faults (each its start and end, named), and each
/// datacenter's clients and servers.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    faults: Vec<Vec<TimedAction>>,
    clients: Vec<usize>,
    servers: Vec<usize>,
}

struct Shrinker<'a> {
    scenario: &'a Scenario,
    base: toml::Table,
    dir: PathBuf,
    seed: u64,
    /// The checks the failing run failed.
    target: Vec<String>,
    runs: usize,
    budget: usize,
}

/// Shrinks the failing run `failing` of `s` (a scenario with `[chaos]`,
/// read from a file) with at most `budget` more runs, telling `progress`
/// what it tries.
pub fn shrink(
    s: &Scenario,
    failing: &Report,
    budget: usize,
    mut progress: impl FnMut(&str),
) -> Result<Shrunk, String> {
    let chaos = s
        .chaos
        .as_ref()
        .ok_or("the scenario draws no faults ([chaos]); there is nothing to shrink")?;
    let source = s
        .source
        .as_ref()
        .ok_or("shrinking writes a scenario file from the original's; this scenario has no file")?;
    let target: Vec<String> = failing.failed();
    if target.is_empty() {
        return Err(format!("seed {} passes every check", failing.seed));
    }
    let mut base: toml::Table = toml::from_str(&source.text)
        .map_err(|e| format!("cannot read {}: {e}", source.path.display()))?;
    base.remove("chaos");
    let seed = failing.seed;
    let drawn = chaos.draw(seed)?;
    let faults: Vec<Vec<TimedAction>> = drawn
        .iter()
        .enumerate()
        .map(|(i, f)| {
            pin(
                crate::chaos::fault_actions(&chaos.space, chaos.from, i, f),
                &failing.output.picks,
            )
        })
        .filter(|f| !f.is_empty())
        .collect();
    let mut sh = Shrinker {
        scenario: s,
        base,
        dir: source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        seed,
        target,
        runs: 0,
        budget,
    };
    let mut best = Candidate {
        faults,
        clients: s.topology.datacenters.iter().map(|d| d.clients).collect(),
        servers: s.topology.datacenters.iter().map(|d| d.servers).collect(),
    };
    progress(&format!(
        "shrinking seed {seed}: {} faults, failing {}",
        best.faults.len(),
        sh.target.join(", ")
    ));
    // The first candidate is the whole run: a file the rules refuse is a
    // bug here, not a smaller run.
    Scenario::parse_in("shrunk", &sh.text(&best, &sh.target)?, &sh.dir)
        .map_err(|e| format!("the faults written out as events do not read back: {e}"))?;
    let Some(mut failed) = sh.fails(&best)? else {
        return Err(format!(
            "seed {seed} did not fail the same way once its faults were written out as events; run it with --no-shrink and report this"
        ));
    };
    let (faults_before, nodes_before) = (best.faults.len(), s.topology.nodes.len());
    loop {
        let before = best.clone();
        for step in [Step::Drop, Step::Shorten, Step::Nodes] {
            while let Some((next, f)) = sh.improve(&best, step, &mut progress)? {
                best = next;
                failed = f;
            }
        }
        if best == before || sh.runs >= sh.budget {
            break;
        }
    }
    Ok(Shrunk {
        text: sh.text(&best, &failed)?,
        failed,
        faults: (faults_before, best.faults.len()),
        nodes: (
            nodes_before,
            best.clients.iter().sum::<usize>() + best.servers.iter().sum::<usize>(),
        ),
        runs: sh.runs,
    })
}

/// The fault's actions with every leader pick replaced by the server it
/// hit (`picks`), and actions left with no node dropped.
fn pin(actions: Vec<TimedAction>, picks: &BTreeMap<usize, String>) -> Vec<TimedAction> {
    actions
        .into_iter()
        .map(|a| TimedAction {
            at: a.at,
            action: a.action.map(|set| {
                set.iter()
                    .filter_map(|x| match placeholder(x) {
                        Some(Placeholder::Leader(_, Some(tag)) | Placeholder::Picked(tag)) => {
                            picks.get(&tag).cloned()
                        }
                        _ => Some(x.clone()),
                    })
                    .collect::<Vec<String>>()
            }),
        })
        .filter(|a| !a.action.nodes().is_empty())
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Drop,
    Shorten,
    Nodes,
}

impl Shrinker<'_> {
    /// The first smaller candidate of `step` that still fails, and what it
    /// fails; `None` when none does (or the budget is spent).
    fn improve(
        &mut self,
        c: &Candidate,
        step: Step,
        progress: &mut impl FnMut(&str),
    ) -> Result<Option<(Candidate, Vec<String>)>, String> {
        for (what, next) in candidates(c, step) {
            if self.runs >= self.budget {
                return Ok(None);
            }
            if let Some(failed) = self.fails(&next)? {
                progress(&format!(
                    "  {what}: still fails ({} faults, run {})",
                    next.faults.len(),
                    self.runs
                ));
                return Ok(Some((next, failed)));
            }
        }
        Ok(None)
    }

    /// Runs the candidate from its text: the checks it fails, if one of
    /// them is one the original failed.
    fn fails(&mut self, c: &Candidate) -> Result<Option<Vec<String>>, String> {
        let text = self.text(c, &self.target)?;
        // A candidate the scenario rules refuse (a fault naming a node it
        // dropped) is no smaller failing run.
        let Ok(s) = Scenario::parse_in("shrunk", &text, &self.dir) else {
            return Ok(None);
        };
        self.runs += 1;
        let Ok(r) = s.run_with(self.scenario.engine, self.seed, |_| {}) else {
            return Ok(None);
        };
        let failed: Vec<String> = r.failed();
        Ok(failed
            .iter()
            .any(|f| self.target.contains(f))
            .then_some(failed))
    }

    /// The candidate as a scenario file.
    fn text(&self, c: &Candidate, failed: &[String]) -> Result<String, String> {
        let mut t = self.base.clone();
        let name = format!("{}-seed-{}-shrunk", self.scenario.name, self.seed);
        t.insert("name".into(), toml::Value::String(name));
        t.insert("seed".into(), toml::Value::Integer(self.seed as i64));
        if let Some(toml::Value::Array(dcs)) = t.get_mut("datacenter") {
            for (i, dc) in dcs.iter_mut().enumerate() {
                if let toml::Value::Table(d) = dc {
                    d.insert("clients".into(), toml::Value::Integer(c.clients[i] as i64));
                    d.insert("servers".into(), toml::Value::Integer(c.servers[i] as i64));
                }
            }
        }
        // What reaches nothing changes nothing, and a side of no nodes has
        // no way to be written.
        let mut actions: Vec<&TimedAction> = c
            .faults
            .iter()
            .flatten()
            .filter(|a| !a.action.reaches_nothing())
            .collect();
        actions.sort_by_key(|a| a.at);
        let mut events = match t.remove("event") {
            Some(toml::Value::Array(v)) => v,
            _ => Vec::new(),
        };
        for a in actions {
            let table = events_to_table(a.at, &a.action)
                .ok_or_else(|| format!("cannot write {} as an event", a.action.name()))?;
            events.push(toml::Value::Table(table));
        }
        t.insert("event".into(), toml::Value::Array(events));
        let body = toml::to_string(&t).map_err(|e| format!("cannot write the scenario: {e}"))?;
        Ok(format!(
            "# Shrunk by cairn-sim from seed {} of {}: {} faults, failing {}.\n\n{body}",
            self.seed,
            self.scenario
                .source
                .as_ref()
                .map_or("a scenario".into(), |s| s.path.display().to_string()),
            c.faults.len(),
            failed.join(", ")
        ))
    }
}

/// The candidates one step tries, smallest change last, each with what it
/// changed.
fn candidates(c: &Candidate, step: Step) -> Vec<(String, Candidate)> {
    let mut out = Vec::new();
    match step {
        Step::Drop => {
            let n = c.faults.len();
            let mut size = n.div_ceil(2);
            while size >= 1 {
                for start in (0..n).step_by(size) {
                    let mut next = c.clone();
                    let end = (start + size).min(n);
                    next.faults.drain(start..end);
                    out.push((format!("without faults {}..{}", start + 1, end), next));
                }
                if size == 1 {
                    break;
                }
                size = size.div_ceil(2);
            }
        }
        Step::Shorten => {
            for i in 0..c.faults.len() {
                if let Some(f) = shorter(&c.faults[i]) {
                    let mut next = c.clone();
                    next.faults[i] = f;
                    out.push((format!("fault {} half as long", i + 1), next));
                }
            }
        }
        Step::Nodes => {
            for d in 0..c.clients.len() {
                if c.clients[d] > 0 {
                    let mut next = c.clone();
                    next.clients[d] -= 1;
                    out.push((
                        format!("one client agent fewer in datacenter {}", d + 1),
                        next,
                    ));
                }
                if c.servers[d] >= 3 {
                    let mut next = c.clone();
                    next.servers[d] -= 2;
                    out.push((format!("two servers fewer in datacenter {}", d + 1), next));
                }
            }
        }
    }
    out
}

/// The fault with its window halved, unless it is already under 100 ms.
fn shorter(fault: &[TimedAction]) -> Option<Vec<TimedAction>> {
    let floor = Duration::from_millis(100);
    let half = |d: Duration| Duration::from_millis((d.as_millis() / 2) as u64);
    match fault {
        [TimedAction {
            at,
            action: Action::Pause(x, Some(d)),
        }] if *d >= 2 * floor => Some(vec![TimedAction {
            at: *at,
            action: Action::Pause(x.clone(), Some(half(*d))),
        }]),
        [start, end] if end.at - start.at >= 2 * floor => Some(vec![
            start.clone(),
            TimedAction {
                at: start.at + half(end.at - start.at),
                action: end.action.clone(),
            },
        ]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, action: Action) -> TimedAction {
        TimedAction {
            at: Duration::from_millis(ms),
            action,
        }
    }

    #[test]
    fn pinning_puts_the_picked_server_in_both_ends_and_drops_a_pick_of_nobody() {
        let picks = BTreeMap::from([(3, "dc1-server-2".to_string())]);
        let f = vec![
            at(1000, Action::Crash(vec!["@leader:dc1#3".into()])),
            at(2000, Action::Restart(vec!["@picked:3".into()])),
        ];
        let pinned = pin(f, &picks);
        assert_eq!(pinned[0].action, Action::Crash(vec!["dc1-server-2".into()]));
        assert_eq!(
            pinned[1].action,
            Action::Restart(vec!["dc1-server-2".into()])
        );
        let nobody = vec![at(1000, Action::Crash(vec!["@leader:dc1#4".into()]))];
        assert!(pin(nobody, &picks).is_empty());
    }

    #[test]
    fn halving_a_window_moves_the_end_and_stops_near_100ms() {
        let f = vec![
            at(1000, Action::Crash(vec!["a".into()])),
            at(2000, Action::Restart(vec!["a".into()])),
        ];
        let h = shorter(&f).unwrap();
        assert_eq!(h[1].at, Duration::from_millis(1500));
        let tiny = vec![f[0].clone(), at(1150, Action::Restart(vec!["a".into()]))];
        assert!(shorter(&tiny).is_none());
        let p = vec![at(
            0,
            Action::Pause(vec!["a".into()], Some(Duration::from_secs(1))),
        )];
        assert_eq!(
            shorter(&p).unwrap()[0].action,
            Action::Pause(vec!["a".into()], Some(Duration::from_millis(500)))
        );
    }

    #[test]
    fn dropping_tries_halves_before_single_faults() {
        let c = Candidate {
            faults: (0..4)
                .map(|i| vec![at(i, Action::Crash(vec!["a".into()]))])
                .collect(),
            clients: vec![2],
            servers: vec![3],
        };
        let lens: Vec<usize> = candidates(&c, Step::Drop)
            .iter()
            .map(|(_, n)| n.faults.len())
            .collect();
        assert_eq!(lens, vec![2, 2, 3, 3, 3, 3]);
        let nodes = candidates(&c, Step::Nodes);
        assert_eq!(nodes.len(), 2);
    }
}
