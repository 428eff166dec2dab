//! Node tags carried in memberlist metadata, encoded as Serf encodes them:
//! a magic byte `0xff` followed by a msgpack map of strings. Metadata without
//! the magic byte is Serf's old format: the whole of it is the `role` tag.

use std::collections::BTreeMap;

use super::wire::META_MAX_SIZE;
use crate::msgpack::{Reader, Writer};

/// Serf's marker for msgpack-encoded tags.
pub const TAG_MAGIC_BYTE: u8 = 0xff;

/// Tags by name.
pub type Tags = BTreeMap<String, String>;

/// Encodes `tags` as node metadata; fails if the result exceeds memberlist's
/// 512-byte limit.
pub fn encode(tags: &Tags) -> Result<Vec<u8>, String> {
    let mut out = vec![TAG_MAGIC_BYTE];
    let mut w = Writer::new(&mut out);
    w.map_len(tags.len());
    for (k, v) in tags {
        w.str(k).str(v);
    }
    if out.len() > META_MAX_SIZE {
        return Err(format!(
            "node tags take {} bytes encoded; gossip allows at most {META_MAX_SIZE}",
            out.len()
        ));
    }
    Ok(out)
}

/// Decodes node metadata into tags.
pub fn decode(meta: &[u8]) -> Result<Tags, String> {
    let mut tags = Tags::new();
    match meta.split_first() {
        None => {}
        Some((&TAG_MAGIC_BYTE, rest)) => {
            let mut r = Reader::new(rest);
            let n = r.read_map_len().map_err(|e| format!("bad tags: {e}"))?;
            for _ in 0..n {
                let k = r.read_str().map_err(|e| format!("bad tag name: {e}"))?;
                let v = r
                    .read_str()
                    .map_err(|e| format!("bad value for tag {k:?}: {e}"))?;
                tags.insert(k.to_owned(), v.to_owned());
            }
        }
        Some(_) => {
            tags.insert("role".into(), String::from_utf8_lossy(meta).into_owned());
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn old_format_is_the_role() {
        assert_eq!(decode(b"consul").unwrap()["role"], "consul");
        assert!(decode(b"").unwrap().is_empty());
    }

    #[test]
    fn too_many_tags_are_refused() {
        let tags: Tags = (0..100)
            .map(|i| (format!("key{i}"), "v".repeat(10)))
            .collect();
        assert!(encode(&tags).is_err());
    }

    proptest! {
        #[test]
        fn tags_round_trip(tags in proptest::collection::btree_map("[a-z_]{1,10}", "[ -~]{0,20}", 0..10)) {
            let meta = encode(&tags).unwrap();
            prop_assert_eq!(decode(&meta).unwrap(), tags);
        }

        #[test]
        fn garbage_never_panics(meta in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(&meta);
        }
    }
}
