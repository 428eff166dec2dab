//! Naming an algorithm to score: `default` or `serf`, optionally with
//! settings changed, as `NAME/KEY=VALUE/...` (for example
//! `default/window=4/smoothing=off`), so a study can vary one setting
//! without rebuilding.

use cairn::coordinate::{Config, Smoothing, SpikeClip};

/// The settings `NAME/KEY=VALUE` may change.
pub const KEYS: &[&str] = &[
    "dimensionality",
    "error_max",
    "ce",
    "cc",
    "adjustment_window",
    "height_min",
    "latency_filter",
    "gravity_rho",
    "window",
    "relative_weight",
    "robust_adjustment",
    "spike_clip (off)",
    "spike_clip.base",
    "spike_clip.error_scale",
    "smoothing (off)",
    "smoothing.weight",
    "smoothing.confidence_power",
];

/// The configuration `spec` names, or what is wrong with it.
pub fn parse(spec: &str) -> Result<Config, String> {
    let mut parts = spec.split('/');
    let base = parts.next().unwrap_or_default();
    let mut cfg = Config::named(base).ok_or_else(|| {
        format!(
            "unknown algorithm {base:?} (known: {}; change settings as NAME/KEY=VALUE)",
            Config::NAMES.join(", ")
        )
    })?;
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: {part:?} is not KEY=VALUE"))?;
        set(&mut cfg, key.trim(), value.trim()).map_err(|e| format!("{spec:?}: {e}"))?;
    }
    cfg.validate().map_err(|e| format!("{spec:?}: {e}"))?;
    Ok(cfg)
}

fn set(cfg: &mut Config, key: &str, value: &str) -> Result<(), String> {
    let num = || {
        value
            .parse::<f64>()
            .map_err(|_| format!("{key} takes a number, not {value:?}"))
    };
    let count = || {
        value
            .parse::<usize>()
            .map_err(|_| format!("{key} takes a whole number, not {value:?}"))
    };
    let off = value == "off";
    let clip = |c: &mut Option<SpikeClip>| {
        *c.get_or_insert(SpikeClip {
            base: 1.2,
            error_scale: 1.0,
        })
    };
    let smooth = |s: &mut Option<Smoothing>| {
        *s.get_or_insert(Smoothing {
            weight: 0.05,
            confidence_power: 2.0,
        })
    };
    match key {
        "dimensionality" => cfg.dimensionality = count()?,
        "error_max" => cfg.error_max = num()?,
        "ce" => cfg.ce = num()?,
        "cc" => cfg.cc = num()?,
        "adjustment_window" => cfg.adjustment_window = count()?,
        "height_min" => cfg.height_min = num()?,
        "latency_filter" => cfg.latency_filter = count()?,
        "gravity_rho" => cfg.gravity_rho = num()?,
        "window" => cfg.window = count()?,
        "relative_weight" => cfg.relative_weight = num()?,
        "robust_adjustment" => {
            cfg.robust_adjustment = match value {
                "on" => true,
                "off" => false,
                _ => return Err(format!("{key} takes on or off, not {value:?}")),
            }
        }
        "spike_clip" if off => cfg.spike_clip = None,
        "spike_clip.base" => {
            let c = clip(&mut cfg.spike_clip);
            cfg.spike_clip = Some(SpikeClip { base: num()?, ..c });
        }
        "spike_clip.error_scale" => {
            let c = clip(&mut cfg.spike_clip);
            cfg.spike_clip = Some(SpikeClip {
                error_scale: num()?,
                ..c
            });
        }
        "smoothing" if off => cfg.smoothing = None,
        "smoothing.weight" => {
            let s = smooth(&mut cfg.smoothing);
            cfg.smoothing = Some(Smoothing {
                weight: num()?,
                ..s
            });
        }
        "smoothing.confidence_power" => {
            let s = smooth(&mut cfg.smoothing);
            cfg.smoothing = Some(Smoothing {
                confidence_power: num()?,
                ..s
            });
        }
        _ => return Err(format!("no setting {key:?} (known: {})", KEYS.join(", "))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_changed_settings_parse() {
        assert_eq!(parse("serf").unwrap(), Config::serf());
        let c = parse("default/window=4/smoothing=off/spike_clip.base=1.5").unwrap();
        assert_eq!(c.window, 4);
        assert_eq!(c.smoothing, None);
        assert_eq!(c.spike_clip.unwrap().base, 1.5);
        assert_eq!(c.cc, Config::default().cc);
        // Serf has no clip: setting one part starts from cairn's.
        let s = parse("serf/spike_clip.base=2").unwrap();
        assert_eq!(s.spike_clip.unwrap().error_scale, 1.0);
    }

    #[test]
    fn wrong_specs_say_what_to_fix() {
        for (spec, says) in [
            ("vivaldi", "unknown algorithm"),
            ("default/window", "is not KEY=VALUE"),
            ("default/window=lots", "whole number"),
            ("default/speed=2", "no setting \"speed\""),
            ("default/window=0", "window must be"),
            ("default/cc=-1", "cc must be"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
