//! Unit tests that need crate internals (fault injection).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn rec(lsn: u64, tx_end: bool) -> AppendRecord {
    AppendRecord {
        lsn,
        timestamp_us: lsn as i64,
        tx_end,
        pg_commit_lsn: lsn * 10,
        pg_end_lsn: lsn * 10 + 1,
        payload: format!("payload-{lsn}").into_bytes(),
    }
}

#[tokio::test]
async fn failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions::new(dir.path());
    let (log, mut w) = ChangeLog::open(opts).unwrap();
    w.append(rec(1, true)).await.unwrap();
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 1);

    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    w.append(rec(2, true)).await.unwrap();
    // The group commit may fail before or while the flush is handled.
    assert!(matches!(
        w.flush().await,
        Err(LogError::Io { op: "fsync", .. } | LogError::Poisoned { .. })
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        w.append(rec(3, true)).await,
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(w.flush().await, Err(LogError::Poisoned { .. })));
    assert!(matches!(
        w.discard_uncommitted().await,
        Err(LogError::Poisoned { .. })
    ));
    // Never pretend: the failed record did not become visible.
    assert_eq!(log.committed_lsn(), 1);
    assert!(matches!(w.close().await, Err(LogError::Poisoned { .. })));
}

#[tokio::test]
async fn failed_discard_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = LogOptions::new(dir.path());
    opts.segment_bytes = 1024;
    let (log, mut w) = ChangeLog::open(opts).unwrap();
    for lsn in 1..=5 {
        w.append(rec(lsn, lsn == 5)).await.unwrap();
    }
    for lsn in 6..=60 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    // The fsync of the records queued before the discard fails (more than one
    // staged batch, so some are in the writer's queue, not only staged).
    for lsn in 61..=400 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    assert!(matches!(
        w.discard_uncommitted().await,
        Err(LogError::Poisoned { .. } | LogError::Io { .. })
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        w.append(rec(6, true)).await,
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(log.committed_lsn(), 5);
    assert!(matches!(w.close().await, Err(LogError::Poisoned { .. })));
    drop(log);
    faults::clear(dir.path(), faults::Op::Fsync);
    // Recovery makes the cut the discard could not make.
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 5);
    assert_eq!(w.next_lsn(), 6);
    w.close().await.unwrap();
}

#[test]
fn handles_are_send_and_sync_where_needed() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<LogWriter>();
    send::<LogReader>();
    send_sync::<ChangeLog>();
    send_sync::<LogError>();
}

#[allow(dead_code)]
fn writer_futures_are_send(w: &mut LogWriter, r: AppendRecord) {
    fn is_send<T: Send>(_: T) {}
    is_send(w.append(r));
    is_send(w.flush());
    is_send(w.discard_uncommitted());
}

#[tokio::test]
async fn segment_deleted_under_a_reader_counts_as_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = LogOptions::new(dir.path());
    opts.segment_bytes = 1024;
    let (log, mut w) = ChangeLog::open(opts).unwrap();
    for lsn in 1..=100 {
        w.append(rec(lsn, true)).await.unwrap();
    }
    w.flush().await.unwrap();
    let mut r = log.reader(1).unwrap();
    // A reader looked the first segment up, then retention deleted it
    // before the reader opened it.
    let (first, _) = log.shared.segment_for(1).unwrap();
    log.trim_before(50).unwrap();
    let oldest = log.oldest_lsn();
    assert!(oldest > 1);
    let err = segment::open_checked(&first, 4096).unwrap_err();
    assert!(log.shared.was_trimmed(&first, &err));
    let (kept, _) = log.shared.segment_for(oldest).unwrap();
    let e = LogError::io(
        "open segment",
        &kept.path,
        std::io::ErrorKind::NotFound.into(),
    );
    assert!(!log.shared.was_trimmed(&kept, &e));
    assert!(matches!(
        r.read_batch(10, usize::MAX),
        Err(LogError::Trimmed { requested: 1, oldest: o }) if o == oldest
    ));
    w.close().await.unwrap();
}

fn seg_len(dir: &std::path::Path) -> u64 {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    std::fs::metadata(segs.last().unwrap()).unwrap().len()
}

/// Issue 8.1: what recovery keeps must be on disk before it is published
/// (and confirmed). A clean close leaves nothing to truncate, so recovery
/// used to fsync nothing; an injected fsync failure now fails the open.
#[tokio::test]
async fn recovery_fsyncs_what_it_keeps_before_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    for lsn in 1..=3 {
        w.append(rec(lsn, true)).await.unwrap();
    }
    w.close().await.unwrap();
    drop(log);
    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    let err = ChangeLog::open(LogOptions::new(dir.path())).unwrap_err();
    assert!(
        matches!(&err, LogError::Io { op: "fsync", .. }),
        "open must fsync the kept segment: {err:?}"
    );
    faults::clear(dir.path(), faults::Op::Fsync);
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 3);
    w.close().await.unwrap();
}

/// Issue 8.2 ("fsyncgate"): after a failed fsync the bytes written since the
/// last good fsync are cut off at once, so that a restart in the same boot
/// (page cache intact) cannot read them back and confirm them; the error
/// names the root cause.
#[tokio::test]
async fn failed_fsync_cuts_back_to_the_durable_end_and_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    w.append(rec(1, true)).await.unwrap();
    w.flush().await.unwrap();
    let durable_len = seg_len(dir.path());
    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    // The group commit runs in the background: an append may already fail.
    for lsn in 2..=5 {
        if w.append(rec(lsn, lsn == 5)).await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let err = w.append(rec(6, true)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Input/output error") && msg.contains("fsync"),
        "{msg}"
    );
    assert_eq!(log.committed_lsn(), 1);
    let _ = w.close().await;
    // The writer thread has stopped: the cut is made.
    assert_eq!(seg_len(dir.path()), durable_len);
    drop(log);
    faults::clear(dir.path(), faults::Op::Fsync);
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 1);
    assert_eq!(w.next_lsn(), 2);
    w.close().await.unwrap();
}

/// Issue 8.2: when the cut after a failed fsync fails too, a durable-end
/// marker makes the next open cut there.
#[tokio::test]
async fn failed_cut_leaves_a_marker_that_recovery_honours() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    w.append(rec(1, true)).await.unwrap();
    w.append(rec(2, true)).await.unwrap();
    w.flush().await.unwrap();
    let durable_len = seg_len(dir.path());
    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    faults::inject(dir.path(), faults::Op::Truncate, EIO);
    for lsn in 3..=9 {
        if w.append(rec(lsn, true)).await.is_err() {
            break;
        }
    }
    assert!(w.flush().await.is_err());
    let _ = w.close().await;
    drop(log);
    // The bytes are still there (the cut failed), the marker says where to cut.
    assert!(seg_len(dir.path()) > durable_len);
    assert!(dir.path().join(recovery::DURABLE_END_FILE).exists());
    faults::clear(dir.path(), faults::Op::Fsync);
    faults::clear(dir.path(), faults::Op::Truncate);
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 2);
    assert_eq!(seg_len(dir.path()), durable_len);
    assert!(!dir.path().join(recovery::DURABLE_END_FILE).exists());
    w.close().await.unwrap();
}

/// Issue 8.2: a failed write (disk full) poisons the log with ENOSPC named
/// in the error, and nothing of the failed group survives a reopen.
#[tokio::test]
async fn disk_full_on_write_names_enospc_and_keeps_only_durable_data() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    w.append(rec(1, true)).await.unwrap();
    w.flush().await.unwrap();
    faults::inject(dir.path(), faults::Op::Write, ENOSPC);
    if w.append(rec(2, true)).await.is_ok() {
        assert!(w.flush().await.is_err());
    }
    // Every later call names the root cause, not only the first failure.
    let err = w.append(rec(3, true)).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let _ = w.close().await;
    drop(log);
    faults::clear(dir.path(), faults::Op::Write);
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 1);
    w.close().await.unwrap();
}

/// Issue 8.2 (found by review): the bytes a failed fsync covered are cut
/// from the segment before anyone hears of the failure — not only when the
/// writer next runs. A process killed in between would otherwise leave them
/// in the page cache for the next open to read back as durable.
#[tokio::test]
async fn failed_fsync_cuts_the_segment_before_the_failure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions::new(dir.path());
    let (log, mut w) = ChangeLog::open(opts).unwrap();
    w.append(rec(1, true)).await.unwrap();
    w.flush().await.unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let durable_len = std::fs::metadata(&seg).unwrap().len();

    faults::inject(dir.path(), faults::Op::Fsync, EIO);
    // Not a transaction end: nothing starts a group commit before the flush.
    w.append(rec(2, false)).await.unwrap();
    assert!(w.flush().await.is_err());
    // The writer thread has not run since it handed the group over (it
    // waits for the next command); the sync thread made the cut.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), durable_len);
    faults::clear(dir.path(), faults::Op::Fsync);
    drop(w);
    drop(log);
    let (log, w) = ChangeLog::open(LogOptions::new(dir.path())).unwrap();
    assert_eq!(log.committed_lsn(), 1);
    w.close().await.unwrap();
}
