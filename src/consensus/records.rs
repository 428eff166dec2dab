//! What the Raft store keeps on disk can rot, and a store that served a
//! flipped bit, or voted with it, could elect two leaders or lose a
//! committed write. So every value it stores is sealed with a checksum
//! ([`seal`]), the small records whose loss would be unsafe (the vote and
//! the purge point) are kept twice, and a store checks everything when it
//! opens ([`check_and_repair`]):
//!
//! - a damaged copy of a doubled record is rewritten from the other;
//! - a damaged log entry takes the log from there on with it (onto the
//!   *shelf*, from which [`mend`](super::mend) restores what peers can
//!   vouch for before Raft starts), and a damaged snapshot (behind which
//!   the log was purged) takes the log;
//! - either way the server may have lost entries it had acknowledged, so
//!   it is *recovering* ([`Recovering`]) until it has caught up from a
//!   leader (see [`Recovering::caught_up_by`]). Meanwhile it does not
//!   stand, and votes only for a candidate whose log reaches as far as
//!   the one it lost (protocol-aware recovery, Alagappan et al., FAST
//!   2018);
//! - what cannot be recovered safely (both copies of the vote) stops the
//!   server with an error that says what to do.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// The log: each entry under its index.
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// The vote, the purge point, the commit hint, the recovery marker.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The latest snapshot: `meta` and `data`.
pub(super) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// The log from its first damaged entry on, as stored, set aside by the
/// check at open so that the log Raft reads has no holes. It lives only
/// until the log next changes: [`mend`](super::mend) puts back what it
/// can, and any write to the log empties it.
pub(super) const SHELF: TableDefinition<u64, &[u8]> = TableDefinition::new("shelf");

/// A server's Raft ID.
pub(super) type NodeId = u64;

/// What the store's operations return: openraft's error, which stops Raft.
pub(super) type StorageResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// A failed read, as openraft hears of it.
pub(super) fn read_err(e: impl std::error::Error + 'static) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::read(openraft::AnyError::new(&e)).into()
}

/// A failed write, as openraft hears of it.
pub(super) fn write_err(e: impl std::error::Error + 'static) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::write(openraft::AnyError::new(&e)).into()
}

/// What a snapshot covers.
pub(super) type Meta = openraft::SnapshotMeta<u64, openraft::BasicNode>;

/// What starts a sealed value: a file of this format holds nothing else.
const MAGIC: [u8; 4] = *b"crn1";

/// The META key whose presence says every value is sealed (files written
/// before checksums have none, and are sealed when first opened).
const FORMAT: &str = "format";

/// The META key of the recovery marker.
const RECOVERING: &str = "recovering";

/// The META records kept twice (each copy under `key` and `key.2`).
pub(super) const DOUBLED: [&str; 2] = ["vote", "last_purged"];

/// `payload`, sealed: the magic, the payload's CRC-32 (little-endian),
/// then the payload.
pub(super) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A stored value that fails its checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored Raft record is damaged: {0}")]
pub struct Damaged(pub &'static str);

/// The payload of a sealed value, unless it is damaged.
pub(super) fn unseal(bytes: &[u8]) -> Result<&[u8], Damaged> {
    let (head, payload) = bytes
        .split_at_checked(8)
        .ok_or(Damaged("shorter than its seal"))?;
    if head[..4] != MAGIC {
        return Err(Damaged("its seal is gone"));
    }
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if crc32fast::hash(payload) != crc {
        return Err(Damaged("its checksum does not match"));
    }
    Ok(payload)
}

/// A sealed JSON value, decoded. A value that passes its checksum but is
/// not what was expected is damaged too (written by something else).
pub(super) fn open_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Damaged> {
    serde_json::from_slice(unseal(bytes)?).map_err(|_| Damaged("it is not the record expected"))
}

/// A value sealed as JSON.
pub(super) fn seal_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value).map(|v| seal(&v))
}

/// Why a server is recovering: it lost (to damage) log entries it may
/// have acknowledged, so a vote of its could elect a leader without a
/// committed entry. Until it has caught up, it does not stand, and votes
/// only as its lost log would have let it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovering {
    /// The highest term the server knew of when it found the damage (its
    /// vote's): no entry it acknowledged is of a later term.
    pub term: u64,
    /// The last log ID it held before the damage, or a bound above it
    /// when that entry itself was damaged: it acknowledged nothing later.
    pub last: LogId,
    /// What was lost, for people.
    pub lost: String,
}

impl Recovering {
    /// Whether a log that durably holds `appended` (from a leader, and so
    /// matching that leader's log up to there) has caught up. A leader's
    /// log holds every committed entry, since openraft takes entries only
    /// from a leader at least as recent as its vote. So either `appended`
    /// is of a later term than any the server knew of (its leader was
    /// elected without this server's vote), or it reaches as far as what
    /// was lost: either way the log now holds every committed entry the
    /// server may have acknowledged.
    pub fn caught_up_by(&self, appended: LogId) -> bool {
        appended.leader_id.term > self.term || appended >= self.last
    }

    /// Whether the server may vote for a candidate whose log ends at
    /// `candidate`: only if it would have with the log it lost, which no
    /// committed entry it acknowledged can be missing from.
    pub fn may_vote_for(&self, candidate: Option<LogId>) -> bool {
        candidate >= Some(self.last)
    }
}

/// A log entry's ID: its leader's term and ID, and its index.
type LogId = openraft::LogId<u64>;

/// What [`check_and_repair`] could not mend: the server must not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unrecoverable(pub String);

type Txn = WriteTransaction;
type Fail = Box<dyn std::error::Error + Send + Sync>;

/// Checks every record in the store and mends what it can, in `txn`
/// (which the caller commits durably): seals a file written before
/// checksums, rewrites a damaged copy of a doubled record, drops damaged
/// log entries and snapshots, and marks the server recovering when what it
/// dropped may have been acknowledged. Returns the recovery the server is
/// in, if any.
pub(super) fn check_and_repair(
    txn: &Txn,
) -> Result<Result<Option<Recovering>, Unrecoverable>, Fail> {
    seal_legacy(txn)?;
    let mut meta = txn.open_table(META)?;
    let mut vote = None;
    for key in DOUBLED {
        let copy = format!("{key}.2");
        let read = |k: &str| -> Result<Option<Result<serde_json::Value, Damaged>>, Fail> {
            Ok(meta.get(k)?.map(|v| open_json(v.value())))
        };
        let (a, b) = (read(key)?, read(&copy)?);
        let good = match (&a, &b) {
            (Some(Ok(v)), _) | (_, Some(Ok(v))) => Some(v.clone()),
            (None, None) => None,
            _ => return Ok(Err(Unrecoverable(both_damaged(key)))),
        };
        let Some(good) = good else { continue };
        if !matches!((&a, &b), (Some(Ok(_)), Some(Ok(_)))) {
            let bytes = seal_json(&good)?;
            meta.insert(key, bytes.as_slice())?;
            meta.insert(copy.as_str(), bytes.as_slice())?;
            tracing::warn!(
                record = key,
                "one copy of a doubled Raft record was damaged; rewritten from the other"
            );
        }
        if key == "vote" {
            vote = Some(good);
        }
    }
    let committed = meta
        .get("committed")?
        .map(|v| open_json::<Option<openraft::LogId<u64>>>(v.value()));
    let mut committed = match committed {
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            // A hint the leader gives again.
            meta.remove("committed")?;
            None
        }
        None => None,
    };
    let marked = meta
        .get(RECOVERING)?
        .map(|v| open_json::<Recovering>(v.value()));
    let last_purged = meta
        .get("last_purged")?
        .and_then(|v| open_json::<openraft::LogId<u64>>(v.value()).ok());
    drop(meta);

    let vote_leader = vote
        .as_ref()
        .and_then(|v| serde_json::from_value::<openraft::Vote<u64>>(v.clone()).ok())
        .map(|v| v.leader_id)
        .unwrap_or_default();
    let held = held_last(txn, vote_leader, last_purged)?;
    let mut lost = Vec::new();
    let snapshot_last = match check_snapshot(txn)? {
        Ok(last) => last,
        Err(()) if last_purged.is_none() => None,
        Err(()) => {
            // The log behind it is purged: what is left cannot rebuild the
            // state, so the server starts over from a leader's snapshot.
            txn.open_table(LOG)?.retain(|_, _| false)?;
            txn.open_table(SHELF)?.retain(|_, _| false)?;
            let mut meta = txn.open_table(META)?;
            for key in ["last_purged", "last_purged.2", "committed"] {
                meta.remove(key)?;
            }
            committed = None;
            lost.push("its snapshot, and the log behind it".to_string());
            None
        }
    };
    let last_index = match check_log(txn)? {
        (last, Some(from)) => {
            lost.push(format!("log entries from index {from} on"));
            last
        }
        (last, None) => last,
    };
    let last_index = last_index
        .max(snapshot_last)
        .max(last_purged.map(|l| l.index));
    if committed.is_some_and(|c| Some(c.index) > last_index) {
        txn.open_table(META)?.remove("committed")?;
    }

    let mut meta = txn.open_table(META)?;
    let recovering = match (marked, lost.is_empty()) {
        (None, true) => None,
        // Planted (benches/planted_bugs.sh): what was lost is forgotten.
        _ if cfg!(cairn_planted = "recovery_off") => None,
        (Some(Ok(r)), true) => Some(r),
        (marked, _) => {
            let earlier = marked.and_then(Result::ok);
            let mut what = earlier
                .as_ref()
                .map(|r| r.lost.clone())
                .into_iter()
                .collect::<Vec<_>>();
            what.extend(lost);
            let r = Recovering {
                term: vote_leader.term.max(earlier.as_ref().map_or(0, |r| r.term)),
                last: held.max(earlier.map_or(LogId::default(), |r| r.last)),
                lost: what.join("; "),
            };
            meta.insert(RECOVERING, seal_json(&r)?.as_slice())?;
            Some(r)
        }
    };
    // A vote that says this server leads would have openraft resume
    // leading at start, without an election, and hand out again, in the
    // same term, indexes its followers already hold other entries under.
    // Its log may lack them even when nothing here was damaged: entries
    // appended but not yet fsynced when it crashed are gone without a
    // trace, and a majority of followers may have committed them (chaos
    // seed 7453: a stale read from the restarted leader). So no server
    // starts as a leader, as in hashicorp/raft: the vote still says whom
    // it voted for in that term, but no longer who leads it.
    if let Some(mut v) = vote.filter(|v| v["committed"] == true) {
        v["committed"] = serde_json::Value::Bool(false);
        let bytes = seal_json(&v)?;
        for key in ["vote", "vote.2"] {
            meta.insert(key, bytes.as_slice())?;
        }
    }
    Ok(Ok(recovering))
}

fn both_damaged(key: &str) -> String {
    let what = match key {
        "vote" => "its Raft vote, so it cannot know whom it voted for, and voting again could elect two leaders in one term",
        _ => "where its Raft log begins",
    };
    format!(
        "both stored copies of {what}; the server cannot rejoin safely with this disk: \
         remove it from the cluster (`cairn operator raft remove-peer`), move its data \
         directory aside, and start it again to join as a new server"
    )
}

/// The last log ID the store holds, damaged or not: its last entry's, or
/// where the snapshot or the purge point ends. A damaged last entry's is
/// bounded by the vote's leader, the latest any entry can have.
fn held_last(
    txn: &Txn,
    vote: openraft::LeaderId<u64>,
    last_purged: Option<LogId>,
) -> Result<LogId, Fail> {
    let log = txn.open_table(LOG)?.last()?.map(|(k, v)| {
        open_json::<openraft::Entry<super::TypeConfig>>(v.value())
            .map_or(LogId::new(vote, k.value()), |e| e.log_id)
    });
    let snapshot = txn
        .open_table(SNAPSHOT)?
        .get("meta")?
        .and_then(|v| open_json::<Meta>(v.value()).ok())
        .and_then(|m| m.last_log_id);
    Ok(log.max(snapshot).max(last_purged).unwrap_or_default())
}

/// Checks the snapshot: its last log ID if it is whole (or absent: `None`),
/// `Err(())` if it was damaged and is now dropped.
fn check_snapshot(txn: &Txn) -> Result<Result<Option<u64>, ()>, Fail> {
    let mut table = txn.open_table(SNAPSHOT)?;
    let meta = table
        .get("meta")?
        .map(|v| open_json::<serde_json::Value>(v.value()));
    let data = table.get("data")?.map(|v| unseal(v.value()).map(drop));
    match (meta, data) {
        (None, None) => Ok(Ok(None)),
        (Some(Ok(meta)), Some(Ok(()))) => Ok(Ok(meta
            .pointer("/last_log_id/index")
            .and_then(serde_json::Value::as_u64))),
        _ => {
            table.remove("meta")?;
            table.remove("data")?;
            Ok(Err(()))
        }
    }
}

/// Checks every log entry: the last index left, and where the log was cut
/// if an entry was damaged (it and every later one go onto the shelf,
/// since a log must not have holes).
fn check_log(txn: &Txn) -> Result<(Option<u64>, Option<u64>), Fail> {
    let mut table = txn.open_table(LOG)?;
    let mut last = None;
    let mut damaged = None;
    for item in table.iter()? {
        let (k, v) = item?;
        if open_json::<openraft::Entry<super::TypeConfig>>(v.value()).is_err() {
            damaged = Some(k.value());
            break;
        }
        last = Some(k.value());
    }
    if let Some(from) = damaged {
        let mut shelf = txn.open_table(SHELF)?;
        for item in table.range(from..)? {
            let (k, v) = item?;
            shelf.insert(k.value(), v.value())?;
        }
        table.retain_in(from.., |_, _| false)?;
        tracing::warn!(
            from,
            "damaged Raft log entry: the log from there on is set aside until peers mend it"
        );
    }
    Ok((last, damaged))
}

/// A stored record's place: a log entry's index, or a key of the META or
/// SNAPSHOT table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// A log entry.
    Log(u64),
    /// A META record.
    Meta(String),
    /// A SNAPSHOT record.
    Snapshot(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Log(i) => write!(f, "log/{i}"),
            Key::Meta(k) => write!(f, "meta/{k}"),
            Key::Snapshot(k) => write!(f, "snapshot/{k}"),
        }
    }
}

impl Key {
    /// Every record stored, META first, then SNAPSHOT, then the log.
    pub(super) fn all(txn: &Txn) -> Result<Vec<Key>, Fail> {
        let mut out = Vec::new();
        for item in txn.open_table(META)?.iter()? {
            out.push(Key::Meta(item?.0.value().to_string()));
        }
        for item in txn.open_table(SNAPSHOT)?.iter()? {
            out.push(Key::Snapshot(item?.0.value().to_string()));
        }
        for item in txn.open_table(LOG)?.iter()? {
            out.push(Key::Log(item?.0.value()));
        }
        Ok(out)
    }

    /// The record's bytes as stored (empty when there is none).
    pub(super) fn read(&self, txn: &Txn) -> Result<Vec<u8>, Fail> {
        let bytes = match self {
            Key::Log(i) => txn.open_table(LOG)?.get(i)?.map(|v| v.value().to_vec()),
            Key::Meta(k) => txn
                .open_table(META)?
                .get(k.as_str())?
                .map(|v| v.value().to_vec()),
            Key::Snapshot(k) => txn
                .open_table(SNAPSHOT)?
                .get(k.as_str())?
                .map(|v| v.value().to_vec()),
        };
        Ok(bytes.unwrap_or_default())
    }

    /// Stores `bytes` as the record, as they are.
    pub(super) fn write(&self, txn: &Txn, bytes: &[u8]) -> Result<(), Fail> {
        match self {
            Key::Log(i) => drop(txn.open_table(LOG)?.insert(i, bytes)?),
            Key::Meta(k) => drop(txn.open_table(META)?.insert(k.as_str(), bytes)?),
            Key::Snapshot(k) => drop(txn.open_table(SNAPSHOT)?.insert(k.as_str(), bytes)?),
        }
        Ok(())
    }
}

/// Seals every value of a file written before checksums (one without the
/// format record), and writes the second copy of each doubled record.
fn seal_legacy(txn: &Txn) -> Result<(), Fail> {
    if txn.open_table(META)?.get(FORMAT)?.is_some() {
        return Ok(());
    }
    for key in Key::all(txn)? {
        let sealed = seal(&key.read(txn)?);
        key.write(txn, &sealed)?;
        if let Key::Meta(k) = &key {
            if DOUBLED.contains(&k.as_str()) {
                Key::Meta(format!("{k}.2")).write(txn, &sealed)?;
            }
        }
    }
    Key::Meta(FORMAT.into()).write(txn, &seal(b"2"))
}

/// Clears the recovery marker in `txn`.
pub(super) fn clear_marker(txn: &Txn) -> Result<(), Fail> {
    txn.open_table(META)?.remove(RECOVERING)?;
    Ok(())
}

/// One flipped bit in a stored record, as [`rot`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rot {
    /// The table (`log`, `meta` or `snapshot`) and the record's key.
    pub record: String,
    /// The bit flipped, counted from the record's first byte.
    pub bit: usize,
}

impl std::fmt::Display for Rot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bit {} of {}", self.bit, self.record)
    }
}

/// Flips one bit of one stored record, both chosen by `draw`: bit rot that
/// the layers below missed, which only the record's checksum can catch.
/// The table is drawn first (log, metadata, snapshot, of those holding
/// records), then a record in it: drawn from all records at once, the log
/// would take nearly every hit, and the vote and snapshot would rarely be
/// tested. `None` when nothing is stored.
pub(super) fn rot(txn: &Txn, draw: u64) -> Result<Option<Rot>, Fail> {
    let mut keys = Key::all(txn)?;
    keys.retain(|k| *k != Key::Meta(FORMAT.into()));
    let mut tables: Vec<Vec<Key>> = Vec::new();
    for k in keys {
        match tables.iter_mut().find(|t| same_table(&t[0], &k)) {
            Some(t) => t.push(k),
            None => tables.push(vec![k]),
        }
    }
    let mut next = draw;
    let mut pick = |n: usize| (crate::splitmix::next(&mut next) % n.max(1) as u64) as usize;
    let Some(table) = tables.get(pick(tables.len())) else {
        return Ok(None);
    };
    let key = &table[pick(table.len())];
    let mut bytes = key.read(txn)?;
    let bit = pick(bytes.len() * 8);
    if let Some(b) = bytes.get_mut(bit / 8) {
        *b ^= 1 << (bit % 8);
    }
    key.write(txn, &bytes)?;
    Ok(Some(Rot {
        record: key.to_string(),
        bit,
    }))
}

fn same_table(a: &Key, b: &Key) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_catches_every_single_bit_flip() {
        let sealed = seal(br#"{"leader_id":{"term":7,"node_id":3},"committed":true}"#);
        assert!(unseal(&sealed).is_ok());
        for bit in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(unseal(&b).is_err(), "bit {bit} went unnoticed");
        }
        assert_eq!(unseal(b"crn1"), Err(Damaged("shorter than its seal")));
        assert_eq!(unseal(b"{\"legacy\":1}"), Err(Damaged("its seal is gone")));
    }
}
