//! How cairn reads and writes the small values every layer meets:
//! durations as Go writes them, UUIDs, and `host:port`. They sit below
//! every feature, so that code as far down as `state/` and `acl/` can read
//! a TTL without importing the agent.

use std::time::Duration;

/// Parses a Go-style duration: `"30s"`, `"1m30s"`, `"250ms"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("must be a duration like \"30s\", \"1m30s\" or \"250ms\", not {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += num * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Writes a duration as Go's `time.Duration.String` does: `"200ms"`,
/// `"10s"`, `"1m30s"`, `"1h0m0s"`, `"0s"`, so that clients comparing
/// Consul's strings see the same ones.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // Below a second Go picks the largest unit that keeps the integer part
    // non-zero, and writes the rest as a trimmed fraction.
    let fraction = |value: u128, unit: u128, name: &str| {
        let (whole, rest) = (value / unit, value % unit);
        let digits = unit.ilog10() as usize;
        let frac = format!("{rest:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{whole}{name}")
        } else {
            format!("{whole}.{frac}{name}")
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return fraction(nanos, 1_000, "µs");
    }
    if nanos < 1_000_000_000 {
        return fraction(nanos, 1_000_000, "ms");
    }
    let secs = fraction(nanos % 60_000_000_000, 1_000_000_000, "s");
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Parses a canonical UUID string into its 16 bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Formats 16 random bytes as a version-4 UUID.
pub fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Splits `host[:port]` (IPv6 in brackets when a port is given).
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or("missing ']' in IPv6 address")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            None if tail.is_empty() => default_port,
            None => return Err(format!("unexpected {tail:?} after IPv6 address")),
        };
        return Ok((host.to_string(), port));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), default_port)),
        1 => {
            let (h, p) = s.split_once(':').ok_or("bad address")?;
            let port = p.parse().map_err(|_| format!("bad port {p:?} in {s:?}"))?;
            Ok((h.to_string(), port))
        }
        // A bare IPv6 address.
        _ => Ok((s.to_string(), default_port)),
    }
}

/// RFC 3339, as Consul writes times.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An RFC 3339 time (as Consul reads `ExpirationTime`) in Unix ms.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("{s:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let ms = 1_765_000_000_123;
        assert_eq!(parse_rfc3339_ms(&rfc3339(ms)).unwrap(), ms);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(parse_rfc3339_ms("yesterday").is_err());
        assert!(parse_rfc3339_ms("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(10_500), "10.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 s").is_err());
    }

    #[test]
    fn uuids_round_trip() {
        let id = format_uuid([7; 16]);
        assert_eq!(id.len(), 36);
        let b = parse_uuid(&id).unwrap();
        assert_eq!(format_uuid(b), id);
        assert!(parse_uuid("00000000-0000-0000-0000-00000000000").is_none());
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("10.0.0.1", 8301).unwrap(),
            ("10.0.0.1".into(), 8301)
        );
        assert_eq!(
            split_host_port("10.0.0.1:9", 8301).unwrap(),
            ("10.0.0.1".into(), 9)
        );
        assert_eq!(
            split_host_port("node-a", 8301).unwrap(),
            ("node-a".into(), 8301)
        );
        assert_eq!(split_host_port("[::1]:7", 8301).unwrap(), ("::1".into(), 7));
        assert_eq!(split_host_port("::1", 8301).unwrap(), ("::1".into(), 8301));
        assert!(split_host_port("a:b", 1).is_err());
        assert!(split_host_port("[::1", 1).is_err());
        assert!(split_host_port("", 1).is_err());
    }
}
