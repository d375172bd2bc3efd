//! Unit tests that need crate internals (fault injection).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

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

    test_hooks::fail_fsync_in(dir.path());
    w.append(rec(2, true)).await.unwrap();
    // The group commit may fail before or while the flush is handled.
    assert!(matches!(
        w.flush().await,
        Err(LogError::Io { op: "fsync", .. } | LogError::Poisoned)
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        w.append(rec(3, true)).await,
        Err(LogError::Poisoned)
    ));
    assert!(matches!(w.flush().await, Err(LogError::Poisoned)));
    assert!(matches!(
        w.discard_uncommitted().await,
        Err(LogError::Poisoned)
    ));
    // Never pretend: the failed record did not become visible.
    assert_eq!(log.committed_lsn(), 1);
    assert!(matches!(w.close().await, Err(LogError::Poisoned)));
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
    test_hooks::fail_fsync_in(dir.path());
    assert!(matches!(
        w.discard_uncommitted().await,
        Err(LogError::Poisoned | LogError::Io { .. })
    ));
    assert!(log.is_poisoned());
    assert!(matches!(
        w.append(rec(6, true)).await,
        Err(LogError::Poisoned)
    ));
    assert_eq!(log.committed_lsn(), 5);
    assert!(matches!(w.close().await, Err(LogError::Poisoned)));
    drop(log);
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
