//! Consul's snapshot archive (`GET`/`PUT /v1/snapshot`, `cairn snapshot`):
//! a gzipped tar of three files.
//!
//! - `meta.json`: the fields of hashicorp/raft's `SnapshotMeta` (version,
//!   ID, index, term, the Raft configuration, the size of `state.bin`);
//! - `state.bin`: the store's contents (cairn's own encoding: a Consul
//!   server cannot restore it, nor cairn a Consul one, but both read the
//!   archive and its metadata);
//! - `SHA256SUMS`: `<hex>  <name>` lines for the other two, checked on
//!   every read so that a damaged archive is refused before it is used.

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest `state.bin` read: a restore travels as one Raft entry,
/// which must fit in one RPC frame with room to spare.
pub const MAX_STATE: u64 = (crate::rpc::MAX_FRAME / 2) as u64;

/// hashicorp/raft's `SnapshotMeta`, in its JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SnapshotMeta {
    /// The snapshot format version (raft's is 1).
    pub version: i64,
    /// `<term>-<index>-<unix ms>`, as raft names its snapshots.
    #[serde(rename = "ID")]
    pub id: String,
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Raft's old peer list (always empty here; base64 in JSON).
    pub peers: Option<String>,
    /// The Raft configuration at `index`.
    pub configuration: Configuration,
    /// The log index of that configuration.
    pub configuration_index: u64,
    /// Bytes in `state.bin`.
    pub size: u64,
}

/// hashicorp/raft's `Configuration`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Configuration {
    /// Every server.
    pub servers: Option<Vec<ConfigServer>>,
}

/// One server of a [`Configuration`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfigServer {
    /// 0: voter, 1: non-voter, 2: staging (raft's `ServerSuffrage`).
    pub suffrage: i64,
    /// Its ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its RPC address.
    pub address: String,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not gzip, a tar that ends early, or an I/O failure while reading.
    #[error("failed reading snapshot: {0}")]
    Read(String),
    /// A file the format does not have.
    #[error("unexpected file {0:?} in snapshot")]
    Unexpected(String),
    /// `meta.json` does not decode.
    #[error("failed to decode snapshot metadata: {0}")]
    Meta(String),
    /// A file is missing, or its checksum is wrong.
    #[error("failed checking integrity of snapshot: {0}")]
    Integrity(String),
    /// `state.bin` is larger than a restore may be.
    #[error("snapshot state is {0} bytes; the most cairn restores is {MAX_STATE}")]
    TooLarge(u64),
}

/// The archive of `state` described by `meta` (its `size` is set here).
pub fn write(meta: &SnapshotMeta, state: &[u8]) -> Vec<u8> {
    let meta = SnapshotMeta {
        size: state.len() as u64,
        ..meta.clone()
    };
    // Plain data: encoding cannot fail. Go's encoder ends with a newline.
    let mut meta_json = serde_json::to_vec(&meta).unwrap_or_default();
    meta_json.push(b'\n');
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        hex(&Sha256::digest(&meta_json)),
        hex(&Sha256::digest(state)),
    );
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mtime = meta
        .id
        .rsplit('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| ms / 1000);
    for (name, data) in [
        ("meta.json", &meta_json[..]),
        ("state.bin", state),
        ("SHA256SUMS", sums.as_bytes()),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        // Writing into memory: only a name too long could fail, and these
        // are short.
        let _ = tar.append_data(&mut header, name, data);
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .unwrap_or_default()
}

/// The metadata and state of an archive, once every checksum matched.
pub fn read(archive: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), ArchiveError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let (mut meta, mut state, mut sums) = (None, None, None);
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::Read(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Read(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| ArchiveError::Read(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_STATE {
            return Err(ArchiveError::TooLarge(size));
        }
        // Reserve what the header claims only up to a megabyte: the bytes
        // must arrive to earn the rest, so a few hundred bytes that claim
        // MAX_STATE cannot make the agent set that much aside.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| ArchiveError::Read(e.to_string()))?;
        let slot = match name.as_str() {
            "meta.json" => &mut meta,
            "state.bin" => &mut state,
            "SHA256SUMS" => &mut sums,
            _ => return Err(ArchiveError::Unexpected(name)),
        };
        *slot = Some(data);
    }
    let missing = |name: &str| ArchiveError::Integrity(format!("file missing for {name:?}"));
    let meta_json = meta.ok_or_else(|| missing("meta.json"))?;
    let state = state.ok_or_else(|| missing("state.bin"))?;
    let sums = sums.ok_or_else(|| missing("SHA256SUMS"))?;
    verify(&sums, &[("meta.json", &meta_json), ("state.bin", &state)])?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&meta_json).map_err(|e| ArchiveError::Meta(e.to_string()))?;
    Ok((meta, state))
}

/// Checks a `SHA256SUMS` file against `files`: every line names one of
/// them with its right sum, and every one of them has a line.
fn verify(sums: &[u8], files: &[(&str, &[u8])]) -> Result<(), ArchiveError> {
    let bad = |why: String| ArchiveError::Integrity(why);
    let text = std::str::from_utf8(sums).map_err(|_| bad("SHA256SUMS is not text".into()))?;
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("malformed line {line:?} in SHA256SUMS")))?;
        let (_, data) = files
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| bad(format!("list missing hash for {name:?}")))?;
        if !sum.eq_ignore_ascii_case(&hex(&Sha256::digest(data))) {
            return Err(bad(format!("hash check failed for {name:?}")));
        }
        seen.push(name);
    }
    match files.iter().find(|(n, _)| !seen.contains(n)) {
        Some((name, _)) => Err(bad(format!("file missing for {name:?}"))),
        None => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            version: 1,
            id: "2-17-1700000000000".into(),
            index: 17,
            term: 2,
            configuration: Configuration {
                servers: Some(vec![ConfigServer {
                    suffrage: 0,
                    id: "5f0cbb5c-2a43-4a5e-bd27-8f3d2b0e1a67".into(),
                    address: "127.0.0.1:8300".into(),
                }]),
            },
            configuration_index: 1,
            ..SnapshotMeta::default()
        }
    }

    #[test]
    fn an_archive_reads_back_and_checks_out() {
        let state = b"{\"format\":1}".to_vec();
        let bytes = write(&meta(), &state);
        assert_eq!(&bytes[..2], b"\x1f\x8b", "gzip");
        let (m, s) = read(&bytes).unwrap();
        assert_eq!(s, state);
        assert_eq!(m.size, state.len() as u64);
        assert_eq!(m.index, 17);
        assert_eq!(m.configuration, meta().configuration);
    }

    #[test]
    fn meta_json_has_raft_field_names() {
        let v = serde_json::to_value(meta()).unwrap();
        for field in [
            "Version",
            "ID",
            "Index",
            "Term",
            "Peers",
            "Configuration",
            "ConfigurationIndex",
            "Size",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        assert_eq!(v["Configuration"]["Servers"][0]["Suffrage"], 0);
    }

    /// Rebuilds an archive from `files` as given (names, contents).
    fn archive_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            tar.append_data(&mut h, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn damaged_archives_are_refused_naming_the_problem() {
        let good = write(&meta(), b"state");
        let (_, _) = read(&good).unwrap();
        let mut truncated = good.clone();
        truncated.truncate(good.len() / 2);
        assert!(matches!(read(&truncated), Err(ArchiveError::Read(_))));
        assert!(matches!(read(b"not gzip"), Err(ArchiveError::Read(_))));

        let meta_json = serde_json::to_vec(&meta()).unwrap();
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex(&Sha256::digest(&meta_json)),
            hex(&Sha256::digest(b"state")),
        );
        let tampered = archive_of(&[
            ("meta.json", &meta_json),
            ("state.bin", b"STATE"),
            ("SHA256SUMS", sums.as_bytes()),
        ]);
        let err = read(&tampered).unwrap_err();
        assert!(
            err.to_string()
                .contains("hash check failed for \"state.bin\""),
            "{err}"
        );

        let no_sums = archive_of(&[("meta.json", &meta_json), ("state.bin", b"state")]);
        let err = read(&no_sums).unwrap_err();
        assert!(err.to_string().contains("SHA256SUMS"), "{err}");

        let extra = archive_of(&[("evil.sh", b"rm -rf /")]);
        assert!(matches!(read(&extra), Err(ArchiveError::Unexpected(_))));

        let short_sums = format!("{}  meta.json\n", hex(&Sha256::digest(&meta_json)));
        let partial = archive_of(&[
            ("meta.json", &meta_json),
            ("state.bin", b"state"),
            ("SHA256SUMS", short_sums.as_bytes()),
        ]);
        let err = read(&partial).unwrap_err();
        assert!(
            err.to_string().contains("file missing for \"state.bin\""),
            "{err}"
        );
    }
}
