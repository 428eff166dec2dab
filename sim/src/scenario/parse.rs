//! What the section parsers share: the error they return, the parsers of
//! the values every section writes (durations, rates, bandwidths,
//! distributions), and the selectors an event, a link or a check names
//! its nodes with. Below the parsers; it knows no section.

use std::time::Duration;

use cairn::format::parse_duration;

use crate::net::topology::{Dist, Topology};
use crate::scenario::select::Selector;

/// A problem with a scenario, saying where and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

/// A service name that is also a DNS label: letters, digits and dashes.
pub(super) fn valid_service_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(super) fn err(msg: impl Into<String>) -> ScenarioError {
    ScenarioError(msg.into())
}

pub(super) fn dur(what: &str, s: &str) -> Result<Duration, ScenarioError> {
    parse_duration(s).map_err(|e| err(format!("{what}: {e}")))
}

/// Parses a signed duration like `"-250ms"` into milliseconds.
pub(super) fn signed_ms(what: &str, s: &str) -> Result<i64, ScenarioError> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let ms = dur(what, body)?.as_millis() as i64;
    Ok(if neg { -ms } else { ms })
}

pub(super) fn rate(what: &str, r: f64) -> Result<f64, ScenarioError> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(err(format!("{what} must be between 0 and 1, not {r}")))
    }
}

/// A bandwidth like `"1Gbit/s"`, `"100Mbit/s"`, `"20MB/s"` or
/// `"unlimited"`, in bytes per second.
pub(super) fn bandwidth(what: &str, s: &str) -> Result<f64, ScenarioError> {
    let bad = || {
        err(format!(
            "{what}: {s:?} is not a bandwidth; write a number with a unit, like \"1Gbit/s\", \"100Mbit/s\", \"20MB/s\" (k, M, G; bit/s or B/s), or \"unlimited\""
        ))
    };
    let t = s.trim();
    if t == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let (scale, unit) = match unit.trim_start().chars().next() {
        Some('k') => (1e3, &unit.trim_start()[1..]),
        Some('M') => (1e6, &unit.trim_start()[1..]),
        Some('G') => (1e9, &unit.trim_start()[1..]),
        _ => (1.0, unit.trim_start()),
    };
    let per_byte = match unit {
        "bit/s" | "bps" => 1.0 / 8.0,
        "B/s" => 1.0,
        _ => return Err(bad()),
    };
    let bytes = v * scale * per_byte;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(err(format!("{what}: {s:?} is less than a byte a second")));
    }
    Ok(bytes)
}

/// A distribution: `"2ms"` (fixed) or a table with `dist` = `uniform`
/// (`min`, `max`), `normal` (`mean`, `stddev`) or `exponential` (`mean`).
pub(super) fn dist(what: &str, v: &toml::Value) -> Result<Dist, ScenarioError> {
    let table = match v {
        toml::Value::String(s) => return Ok(Dist::Const(dur(what, s)?)),
        toml::Value::Table(t) => t,
        _ => {
            return Err(err(format!(
                "{what} is a duration like \"2ms\" or a table like {{ dist = \"normal\", mean = \"2ms\", stddev = \"500us\" }}"
            )))
        }
    };
    let get = |k: &str| -> Result<Duration, ScenarioError> {
        let s = table
            .get(k)
            .and_then(toml::Value::as_str)
            .ok_or_else(|| err(format!("{what} needs {k}, a duration like \"2ms\"")))?;
        dur(&format!("{what}.{k}"), s)
    };
    let kind = table
        .get("dist")
        .and_then(toml::Value::as_str)
        .unwrap_or("");
    let (d, keys): (Dist, &[&str]) = match kind {
        "uniform" => {
            let (min, max) = (get("min")?, get("max")?);
            if min > max {
                return Err(err(format!("{what}: min is larger than max")));
            }
            (Dist::Uniform { min, max }, &["dist", "min", "max"])
        }
        "normal" => (
            Dist::Normal {
                mean: get("mean")?,
                stddev: get("stddev")?,
            },
            &["dist", "mean", "stddev"],
        ),
        "exponential" => (Dist::Exponential { mean: get("mean")? }, &["dist", "mean"]),
        other => {
            return Err(err(format!(
                "{what}.dist must be uniform, normal or exponential, not {other:?}"
            )))
        }
    };
    if let Some(k) = table.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(err(format!(
            "{what}: unknown key {k:?} for a {kind} distribution (keys: {})",
            keys.join(", ")
        )));
    }
    Ok(d)
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The selectors `list` holds, for the section `here` (named in errors).
pub(super) fn selectors(
    topology: &Topology,
    here: &str,
    list: &[String],
) -> Result<Vec<Selector>, ScenarioError> {
    list.iter()
        .map(|t| Selector::parse(t, topology))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{here}: {e}")))
}

/// Two sets of nodes: a link, a partition or a heal is between them.
pub(super) type Sets = (Vec<Selector>, Vec<Selector>);

/// One side of a `between`: a selector, or a list of them (their union).
#[derive(serde::Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub(super) enum Side {
    /// `"dc=dc1"`.
    One(String),
    /// `["dc1-0", "dc1-3"]`.
    Many(Vec<String>),
}

impl Side {
    fn list(&self) -> &[String] {
        match self {
            Side::One(s) => std::slice::from_ref(s),
            Side::Many(v) => v,
        }
    }
}

/// The two sets a `between` key names, if it is there.
pub(super) fn between(
    topology: &Topology,
    here: &str,
    list: &Option<Vec<Side>>,
) -> Result<Option<Sets>, ScenarioError> {
    match list.as_deref() {
        None => Ok(None),
        Some([a, b]) if !a.list().is_empty() && !b.list().is_empty() => Ok(Some((
            selectors(topology, here, a.list())?,
            selectors(topology, here, b.list())?,
        ))),
        Some(_) => Err(err(format!(
            "{here}: between takes two sides, each a selector or a list of them, like [\"dc=dc1\", \"dc=dc2\"] or [[\"dc1-0\", \"dc1-1\"], \"all\"]"
        ))),
    }
}
