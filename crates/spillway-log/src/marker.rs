//! Small marker files of a log directory, and what the log knows about its
//! own history beyond its records.
//!
//! A marker is `magic (8 bytes) | payload | crc32c (4 bytes)`, written to a
//! `.tmp` file, fsynced, renamed into place and the directory fsynced, so it
//! is either the old or the new version after a crash, never half of one.
//! A damaged marker (bad magic, length or CRC) reads as absent; each caller
//! says what absent means, always the cautious reading.
//!
//! Markers:
//! * `durable-end`, `trimmed` — see [`crate::recovery`].
//! * `idle-confirmed` — the highest source position the capture loop may
//!   have confirmed to PostgreSQL *beyond* the last commit the log holds (a
//!   keepalive's `wal_end` while only uncaptured tables changed), with the
//!   log's committed lsn when it was stored. It is written before such a
//!   confirmation is sent, and counts only while the log still reaches that
//!   committed lsn (a cut below it, even one recovery made, voids it). At
//!   start, a slot confirmed beyond both the log's last commit and this
//!   position means the log lacks confirmed transactions (a repaired or
//!   restored directory, or another reader of the slot): the capture loop
//!   writes a gap record. `repair` deletes it before it cuts.
//! * `trust-slot-once` — written when a directory with records but without
//!   an `epochs` file (a build from before epochs) is opened: the next
//!   capture start takes the slot's position for idle progress once (that
//!   build confirmed idle positions without storing them) and deletes it.
//! * `epochs` — the log's epochs: a new epoch begins where lsns may mean
//!   something else than they meant before (after a repair cut, or at a gap
//!   record). A client that says which epoch its position belongs to is
//!   moved back to the first epoch boundary at or below its position
//!   instead of silently skipping lsns that were handed out again.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use tracing::warn;

use crate::error::LogError;
use crate::segment::{remove_if_exists, sync_dir, TMP_EXT};

/// Writes `magic | payload | crc` to `dir/name` atomically and durably.
pub(crate) fn write_marker(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    payload: &[u8],
    what: &'static str,
) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{TMP_EXT}"));
    let mut bytes = Vec::with_capacity(12 + payload.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let res = crate::faults::check(dir, crate::faults::Op::Marker).and_then(|()| {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    });
    res.map_err(|e| LogError::io(what, &path, e))?;
    sync_dir(dir)
}

/// The payload of a marker [`write_marker`] wrote; `None` when the file is
/// missing or damaged (a damaged one is logged).
pub(crate) fn read_marker(dir: &Path, name: &str, magic: &[u8; 8]) -> Option<Vec<u8>> {
    let path = dir.join(name);
    let bytes = fs::read(&path).ok()?;
    let body_len = bytes.len().checked_sub(4)?;
    let (body, crc) = bytes.split_at(body_len);
    let ok = body.len() >= 8
        && body.get(..8) == Some(&magic[..])
        && crc == crc32c::crc32c(body).to_le_bytes();
    if !ok {
        warn!(file = %path.display(), "change log: damaged marker file ignored");
        return None;
    }
    body.get(8..).map(<[u8]>::to_vec)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
}

pub(crate) const IDLE_CONFIRMED_FILE: &str = "idle-confirmed";
const IDLE_CONFIRMED_MAGIC: [u8; 8] = *b"SPWLIDL\0";

/// An idle-confirm position and the log's committed lsn when it was stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdleConfirmed {
    pub(crate) pg_lsn: u64,
    pub(crate) committed_lsn: u64,
}

/// Persists the idle-confirm position (see the module doc).
pub(crate) fn write_idle_confirmed(dir: &Path, idle: IdleConfirmed) -> Result<(), LogError> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&idle.pg_lsn.to_le_bytes());
    p.extend_from_slice(&idle.committed_lsn.to_le_bytes());
    write_marker(
        dir,
        IDLE_CONFIRMED_FILE,
        &IDLE_CONFIRMED_MAGIC,
        &p,
        "write idle-confirmed marker",
    )
}

/// The stored idle-confirm position; none when missing (or damaged: then a
/// slot ahead of the log counts as a gap, the cautious reading).
pub(crate) fn read_idle_confirmed(dir: &Path) -> IdleConfirmed {
    read_marker(dir, IDLE_CONFIRMED_FILE, &IDLE_CONFIRMED_MAGIC)
        .and_then(|p| {
            Some(IdleConfirmed {
                pg_lsn: u64_at(&p, 0)?,
                committed_lsn: u64_at(&p, 8)?,
            })
        })
        .unwrap_or_default()
}

pub(crate) const TRUST_SLOT_ONCE_FILE: &str = "trust-slot-once";
const TRUST_SLOT_ONCE_MAGIC: [u8; 8] = *b"SPWLTSO\0";

pub(crate) fn write_trust_slot_once(dir: &Path) -> Result<(), LogError> {
    write_marker(
        dir,
        TRUST_SLOT_ONCE_FILE,
        &TRUST_SLOT_ONCE_MAGIC,
        &[],
        "write trust-slot-once marker",
    )
}

pub(crate) fn trust_slot_once(dir: &Path) -> bool {
    read_marker(dir, TRUST_SLOT_ONCE_FILE, &TRUST_SLOT_ONCE_MAGIC).is_some()
}

pub(crate) fn remove_trust_slot_once(dir: &Path) -> Result<(), LogError> {
    if remove_if_exists(&dir.join(TRUST_SLOT_ONCE_FILE))? {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes the idle-confirm position (repair: the log's end moved back).
pub(crate) fn remove_idle_confirmed(dir: &Path) -> Result<(), LogError> {
    if remove_if_exists(&dir.join(IDLE_CONFIRMED_FILE))? {
        sync_dir(dir)?;
    }
    Ok(())
}

/// One epoch of the log: from `first_lsn` on, until the next epoch begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    /// Random, never reused; shown as 16 hex digits.
    pub id: u64,
    /// The first lsn that belongs to this epoch.
    pub first_lsn: u64,
}

impl Epoch {
    /// The id as clients see it (16 lowercase hex digits).
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.id)
    }
}

pub(crate) const EPOCHS_FILE: &str = "epochs";
const EPOCHS_MAGIC: [u8; 8] = *b"SPWLEPO\0";

pub(crate) fn new_epoch_id() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::getrandom(&mut buf).is_err() {
        // No OS randomness: time and pid still differ between epochs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        buf = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    u64::from_le_bytes(buf).max(1)
}

/// The epochs stored in `dir`, oldest first; `None` when there is no
/// (undamaged) epochs file.
pub(crate) fn read_epochs(dir: &Path) -> Option<Vec<Epoch>> {
    let p = read_marker(dir, EPOCHS_FILE, &EPOCHS_MAGIC)?;
    if p.is_empty() || p.len() % 16 != 0 {
        warn!(file = %dir.join(EPOCHS_FILE).display(), "change log: damaged epochs file ignored");
        return None;
    }
    p.chunks_exact(16)
        .map(|c| {
            Some(Epoch {
                id: u64_at(c, 0)?,
                first_lsn: u64_at(c, 8)?,
            })
        })
        .collect()
}

pub(crate) fn write_epochs(dir: &Path, epochs: &[Epoch]) -> Result<(), LogError> {
    let mut p = Vec::with_capacity(epochs.len() * 16);
    for e in epochs {
        p.extend_from_slice(&e.id.to_le_bytes());
        p.extend_from_slice(&e.first_lsn.to_le_bytes());
    }
    write_marker(dir, EPOCHS_FILE, &EPOCHS_MAGIC, &p, "write epochs file")
}

/// The epochs of `dir`, creating the file when missing: a log without one
/// (new, or from an earlier build, or with a damaged file) gets a fresh
/// epoch from its oldest lsn on, so positions clients hold from before are
/// unknown to it and answered with `requery_required`, never trusted. A
/// directory with records (`committed_lsn > 0`) whose file is *absent* (not
/// damaged) and that has no idle-confirm marker either was written by a
/// build from before epochs: it gets the `trust-slot-once` marker.
pub(crate) fn load_or_create_epochs(
    dir: &Path,
    oldest_lsn: u64,
    committed_lsn: u64,
) -> Result<Vec<Epoch>, LogError> {
    if let Some(e) = read_epochs(dir) {
        return Ok(e);
    }
    if committed_lsn > 0
        && !dir.join(EPOCHS_FILE).exists()
        && !dir.join(IDLE_CONFIRMED_FILE).exists()
    {
        write_trust_slot_once(dir)?;
    }
    let epochs = vec![Epoch {
        id: new_epoch_id(),
        first_lsn: oldest_lsn.max(1),
    }];
    write_epochs(dir, &epochs)?;
    Ok(epochs)
}

/// Appends an epoch beginning at `first_lsn` (no-op when the newest epoch
/// already begins there). Epochs are kept in the order they began, so a
/// cut below an earlier boundary gives a boundary lower than the one
/// before it. Returns the epochs.
pub(crate) fn begin_epoch(
    dir: &Path,
    mut epochs: Vec<Epoch>,
    first_lsn: u64,
) -> Result<Vec<Epoch>, LogError> {
    if epochs.last().is_some_and(|e| e.first_lsn == first_lsn) {
        return Ok(epochs);
    }
    epochs.push(Epoch {
        id: new_epoch_id(),
        first_lsn,
    });
    write_epochs(dir, &epochs)?;
    Ok(epochs)
}

/// Where a client at `lsn` (the next lsn it wants) of epoch `epoch_id`
/// starts: `Ok(lsn)` when nothing changed under it, `Ok(s)` with `s < lsn`
/// when an epoch that began later began at `s` below the position (the
/// lsns from `s` on are not the ones the client saw; the lowest such
/// boundary wins), `Err(())` for an epoch this log never had.
#[allow(clippy::result_unit_err)]
pub fn start_in_epochs(epochs: &[Epoch], epoch_id: u64, lsn: u64) -> Result<u64, ()> {
    let i = epochs.iter().position(|e| e.id == epoch_id).ok_or(())?;
    Ok(epochs
        .iter()
        .skip(i + 1)
        .map(|e| e.first_lsn)
        .filter(|&s| s < lsn)
        .min()
        .unwrap_or(lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_damage_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_idle_confirmed(dir.path()), IdleConfirmed::default());
        let idle = IdleConfirmed {
            pg_lsn: 0x1234_5678,
            committed_lsn: 42,
        };
        write_idle_confirmed(dir.path(), idle).unwrap();
        assert_eq!(read_idle_confirmed(dir.path()), idle);
        let path = dir.path().join(IDLE_CONFIRMED_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_idle_confirmed(dir.path()),
            IdleConfirmed::default(),
            "a damaged marker counts as none"
        );
        remove_idle_confirmed(dir.path()).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn epochs_persist_and_a_boundary_at_or_below_the_position_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_epochs(dir.path(), 1, 0).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(
            load_or_create_epochs(dir.path(), 1, 0).unwrap(),
            first,
            "read back, not made again"
        );
        let e = begin_epoch(dir.path(), first.clone(), 50).unwrap();
        assert_eq!(
            begin_epoch(dir.path(), e.clone(), 50).unwrap(),
            e,
            "same boundary: no new epoch"
        );
        assert_eq!(read_epochs(dir.path()).unwrap(), e);
        let (old, new) = (e[0].id, e[1].id);
        assert_ne!(old, new);
        // Old epoch, below the boundary: nothing changed under it.
        assert_eq!(start_in_epochs(&e, old, 40), Ok(40));
        assert_eq!(start_in_epochs(&e, old, 50), Ok(50));
        // Old epoch, beyond the boundary: back to it.
        assert_eq!(start_in_epochs(&e, old, 51), Ok(50));
        assert_eq!(start_in_epochs(&e, old, 900), Ok(50));
        // The current epoch: as asked.
        assert_eq!(start_in_epochs(&e, new, 900), Ok(900));
        assert_eq!(start_in_epochs(&e, 0xdead, 5), Err(()));
        // A cut below the last boundary: the lowest later boundary wins,
        // for a client of either earlier epoch.
        let again = begin_epoch(dir.path(), e.clone(), 30).unwrap();
        assert_eq!(again.len(), 3);
        assert_eq!(&again[..2], &e[..]);
        assert_eq!(start_in_epochs(&again, old, 60), Ok(30));
        assert_eq!(start_in_epochs(&again, new, 60), Ok(30));
        assert_eq!(start_in_epochs(&again, new, 20), Ok(20));
        assert_eq!(start_in_epochs(&again, again[2].id, 60), Ok(60));
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    #[test]
    fn only_a_log_from_before_epochs_trusts_the_slot_once() {
        // Records, no epochs file, no idle marker: an earlier build's log.
        let dir = tempfile::tempdir().unwrap();
        load_or_create_epochs(dir.path(), 1, 10).unwrap();
        assert!(trust_slot_once(dir.path()));
        remove_trust_slot_once(dir.path()).unwrap();
        load_or_create_epochs(dir.path(), 1, 10).unwrap();
        assert!(!trust_slot_once(dir.path()), "once");
        // A new log trusts nothing.
        let dir = tempfile::tempdir().unwrap();
        load_or_create_epochs(dir.path(), 1, 0).unwrap();
        assert!(!trust_slot_once(dir.path()));
        // A damaged epochs file is no upgrade: a gap must still be found.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(EPOCHS_FILE), b"garbage").unwrap();
        let e = load_or_create_epochs(dir.path(), 1, 10).unwrap();
        assert_eq!(e.len(), 1);
        assert!(!trust_slot_once(dir.path()));
    }
}
