//! The coordinate a node attaches to its gossip acks, in Serf's format: a
//! version byte (1) then the msgpack map `{Vec, Error, Adjustment, Height}`,
//! so Serf and Consul nodes read cairn's coordinates and the other way round.
//!
//! cairn adds one key, `Estimate` (`{Vec, Adjustment, Height}`), holding the
//! smoothed coordinate to estimate with; peers update against the plain one.
//! Serf's decoder skips keys it does not know.

use super::{Coordinate, MAX_DIMENSIONS};
use crate::msgpack::{Reader, Writer};

/// Serf's ping payload version.
pub const PING_PAYLOAD_VERSION: u8 = 1;

/// What a peer's ack carried.
#[derive(Debug, Clone, PartialEq)]
pub struct PingPayload {
    /// The coordinate to update against.
    pub coordinate: Coordinate,
    /// The coordinate to estimate with, if the peer sent one (cairn peers).
    pub estimate: Option<Coordinate>,
}

impl PingPayload {
    /// The coordinate to estimate with: the smoothed one if sent, else the
    /// plain one.
    pub fn estimate(&self) -> &Coordinate {
        self.estimate.as_ref().unwrap_or(&self.coordinate)
    }
}

/// Why an ack payload is not a coordinate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Empty payload: the peer sends no coordinate.
    #[error("no coordinate in the ack")]
    Empty,
    /// Another payload version.
    #[error("unsupported coordinate payload version {0}")]
    Version(u8),
    /// Not a coordinate.
    #[error("malformed coordinate: {0}")]
    Malformed(String),
}

fn write_point(w: &mut Writer<'_>, c: &Coordinate) {
    w.str("Vec").array_len(c.vec.len());
    for v in &c.vec {
        w.f64(*v);
    }
    w.str("Adjustment").f64(c.adjustment);
    w.str("Height").f64(c.height);
}

/// Encodes our coordinate, and our estimate coordinate when it differs.
pub fn encode_ping_payload(coordinate: &Coordinate, estimate: Option<&Coordinate>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + 18 * coordinate.vec.len());
    out.push(PING_PAYLOAD_VERSION);
    let mut w = Writer::new(&mut out);
    w.map_len(4 + estimate.is_some() as usize);
    write_point(&mut w, coordinate);
    w.str("Error").f64(coordinate.error);
    if let Some(e) = estimate {
        w.str("Estimate").map_len(3);
        write_point(&mut w, e);
    }
    out
}

fn blank() -> Coordinate {
    Coordinate {
        vec: Vec::new(),
        error: 0.0,
        adjustment: 0.0,
        height: 0.0,
    }
}

fn read_point(r: &mut Reader<'_>, c: &mut Coordinate, key: &str) -> Result<bool, PayloadError> {
    let bad = |e: crate::msgpack::Error| PayloadError::Malformed(e.to_string());
    match key {
        "Vec" => {
            let n = r.read_array_len().map_err(bad)?;
            if n > MAX_DIMENSIONS {
                return Err(PayloadError::Malformed(format!("{n} dimensions")));
            }
            c.vec = (0..n)
                .map(|_| r.read_f64())
                .collect::<Result<_, _>>()
                .map_err(bad)?;
        }
        "Adjustment" => c.adjustment = r.read_f64().map_err(bad)?,
        "Height" => c.height = r.read_f64().map_err(bad)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Decodes Serf's ping payload (with cairn's estimate, if present).
pub fn decode_ping_payload(payload: &[u8]) -> Result<PingPayload, PayloadError> {
    let (&version, rest) = payload.split_first().ok_or(PayloadError::Empty)?;
    if version != PING_PAYLOAD_VERSION {
        return Err(PayloadError::Version(version));
    }
    let bad = |e: crate::msgpack::Error| PayloadError::Malformed(e.to_string());
    let mut r = Reader::new(rest);
    let mut c = blank();
    let mut estimate = None;
    for _ in 0..r.read_map_len().map_err(bad)? {
        let key = r.read_str().map_err(bad)?;
        if read_point(&mut r, &mut c, key)? {
            continue;
        }
        match key {
            "Error" => c.error = r.read_f64().map_err(bad)?,
            "Estimate" => {
                let mut e = blank();
                for _ in 0..r.read_map_len().map_err(bad)? {
                    let k = r.read_str().map_err(bad)?;
                    if !read_point(&mut r, &mut e, k)? {
                        r.skip().map_err(bad)?;
                    }
                }
                estimate = Some(e);
            }
            _ => r.skip().map_err(bad)?,
        }
    }
    // A broken estimate costs only itself: the coordinate still counts.
    let estimate = estimate
        .map(|mut e| {
            e.error = c.error;
            e
        })
        .filter(|e| e.vec.len() == c.vec.len() && e.is_valid());
    Ok(PingPayload {
        coordinate: c,
        estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn coord() -> impl Strategy<Value = Coordinate> {
        (
            proptest::collection::vec(-1.0f64..1.0, 8),
            0.0f64..2.0,
            -0.1f64..0.1,
            0.0f64..0.1,
        )
            .prop_map(|(vec, error, adjustment, height)| Coordinate {
                vec,
                error,
                adjustment,
                height,
            })
    }

    proptest! {
        #[test]
        fn payload_round_trips(c in coord(), e in proptest::option::of(coord())) {
            let e = e.map(|mut e| { e.error = c.error; e });
            let got = decode_ping_payload(&encode_ping_payload(&c, e.as_ref())).unwrap();
            prop_assert_eq!(got, PingPayload { coordinate: c, estimate: e });
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_ping_payload(&b);
        }
    }

    #[test]
    fn serf_payload_without_estimate_reads() {
        // What Serf writes: the four fields, in Go's field order.
        let c = Coordinate {
            vec: vec![0.5; 8],
            error: 0.25,
            adjustment: -0.001,
            height: 0.002,
        };
        let mut out = vec![1u8];
        let mut w = Writer::new(&mut out);
        w.map_len(4).str("Vec").array_len(8);
        for v in &c.vec {
            w.f64(*v);
        }
        w.str("Error")
            .f64(c.error)
            .str("Adjustment")
            .f64(c.adjustment)
            .str("Height")
            .f64(c.height);
        let p = decode_ping_payload(&out).unwrap();
        assert_eq!(p.coordinate, c);
        assert_eq!(p.estimate(), &c);
    }

    #[test]
    fn a_broken_estimate_costs_only_itself() {
        let c = Coordinate {
            vec: vec![0.5; 8],
            error: 0.25,
            adjustment: 0.0,
            height: 0.002,
        };
        let short = Coordinate {
            vec: vec![0.5; 3],
            ..c.clone()
        };
        let nan = Coordinate {
            height: f64::NAN,
            ..c.clone()
        };
        for bad in [short, nan] {
            let p = decode_ping_payload(&encode_ping_payload(&c, Some(&bad))).unwrap();
            assert_eq!(p.estimate, None);
            assert_eq!(p.estimate(), &c);
        }
    }

    #[test]
    fn version_and_emptiness_are_checked() {
        assert_eq!(decode_ping_payload(&[]), Err(PayloadError::Empty));
        assert_eq!(
            decode_ping_payload(&[2, 0x80]),
            Err(PayloadError::Version(2))
        );
    }
}
