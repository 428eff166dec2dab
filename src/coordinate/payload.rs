//! The coordinate a node attaches to its gossip acks, in Serf's format: a
//! version byte (1) then the msgpack map `{Vec, Error, Adjustment, Height}`,
//! so Serf and Consul nodes read cairn's coordinates and the other way round.

use super::Coordinate;
use crate::msgpack::{Reader, Writer};

/// Serf's ping payload version.
pub const PING_PAYLOAD_VERSION: u8 = 1;

/// Most dimensions accepted from the network.
const MAX_DIMENSIONS: usize = 64;

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

/// Encodes `c` as Serf's ping payload.
pub fn encode_ping_payload(c: &Coordinate) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 9 * c.vec.len() + 48);
    out.push(PING_PAYLOAD_VERSION);
    let mut w = Writer::new(&mut out);
    w.map_len(4);
    w.str("Vec").array_len(c.vec.len());
    for v in &c.vec {
        w.f64(*v);
    }
    w.str("Error").f64(c.error);
    w.str("Adjustment").f64(c.adjustment);
    w.str("Height").f64(c.height);
    out
}

/// Decodes Serf's ping payload.
pub fn decode_ping_payload(payload: &[u8]) -> Result<Coordinate, PayloadError> {
    let (&version, rest) = payload.split_first().ok_or(PayloadError::Empty)?;
    if version != PING_PAYLOAD_VERSION {
        return Err(PayloadError::Version(version));
    }
    let bad = |e: crate::msgpack::Error| PayloadError::Malformed(e.to_string());
    let mut r = Reader::new(rest);
    let mut c = Coordinate {
        vec: Vec::new(),
        error: 0.0,
        adjustment: 0.0,
        height: 0.0,
    };
    for _ in 0..r.read_map_len().map_err(bad)? {
        match r.read_str().map_err(bad)? {
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
            "Error" => c.error = r.read_f64().map_err(bad)?,
            "Adjustment" => c.adjustment = r.read_f64().map_err(bad)?,
            "Height" => c.height = r.read_f64().map_err(bad)?,
            _ => r.skip().map_err(bad)?,
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn payload_round_trips(vec in proptest::collection::vec(-1.0f64..1.0, 0..12), e in 0.0f64..2.0, a in -0.1f64..0.1, h in 0.0f64..0.1) {
            let c = Coordinate { vec, error: e, adjustment: a, height: h };
            prop_assert_eq!(decode_ping_payload(&encode_ping_payload(&c)).unwrap(), c);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_ping_payload(&b);
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
