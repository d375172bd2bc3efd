#![allow(clippy::unwrap_used, clippy::indexing_slicing, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spillway_log::{
    inspect, AppendRecord, ChangeLog, Checkpoint, CheckpointStore, CommitPosition, LogError,
    LogOptions, LogRecord, LogSummary, RetentionPolicy,
};

fn opts(dir: &Path, segment_bytes: u64) -> LogOptions {
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes,
        channel_capacity: 64,
        index_interval_bytes: 512,
        max_bytes: None,
    }
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{{\"lsn\":{lsn},\"pad\":\"").into_bytes();
    while v.len() < len {
        v.push(b'a' + (lsn as usize + v.len()) as u8 % 26);
    }
    v.push(b'"');
    v.push(b'}');
    v
}

fn rec(lsn: u64, tx_end: bool) -> AppendRecord {
    AppendRecord {
        lsn,
        timestamp_us: 1_000_000 + lsn as i64 * 10,
        tx_end,
        pg_commit_lsn: 0x1000 + lsn,
        pg_end_lsn: 0x2000 + lsn,
        payload: payload(lsn, 40 + (lsn as usize * 7) % 150),
    }
}

fn commit_of(r: &AppendRecord) -> CommitPosition {
    CommitPosition {
        lsn: r.lsn,
        pg_commit_lsn: r.pg_commit_lsn,
        pg_end_lsn: r.pg_end_lsn,
        timestamp_us: r.timestamp_us,
    }
}

fn read_all(log: &ChangeLog, from: u64) -> Result<Vec<LogRecord>, LogError> {
    let mut reader = log.reader(from)?;
    let mut out = Vec::new();
    loop {
        let batch = reader.read_batch(97, 64 * 1024)?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch);
    }
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn check_records(got: &[LogRecord], first_lsn: u64) {
    for (i, r) in got.iter().enumerate() {
        let expected = rec(first_lsn + i as u64, false);
        assert_eq!(r.lsn, expected.lsn);
        assert_eq!(r.timestamp_us, expected.timestamp_us);
        assert_eq!(r.payload, expected.payload, "payload of lsn {}", r.lsn);
    }
}

/// Appends lsns `from..=to`, tx_end on every `tx_every`-th record and on `to`.
async fn append_range(w: &mut spillway_log::LogWriter, from: u64, to: u64, tx_every: u64) {
    for lsn in from..=to {
        w.append(rec(lsn, lsn % tx_every == 0 || lsn == to))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn round_trip_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    assert_eq!(log.committed_lsn(), 0);
    assert_eq!(log.oldest_lsn(), 1);
    assert_eq!(w.next_lsn(), 1);
    assert_eq!(log.last_commit(), None);
    append_range(&mut w, 1, 2000, 7).await;
    assert_eq!(w.next_lsn(), 2001);
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 2000);
    assert_eq!(log.last_commit(), Some(commit_of(&rec(2000, true))));
    assert_eq!(*w.durable().borrow(), Some(commit_of(&rec(2000, true))));
    let stats = log.writer_stats();
    assert_eq!(stats.records, 2000);
    assert!(stats.fsyncs >= 1 && stats.rolls > 20, "{stats:?}");

    let all = read_all(&log, 1).unwrap();
    assert_eq!(all.len(), 2000);
    check_records(&all, 1);

    let segs = files_with_ext(dir.path(), "seg");
    assert!(segs.len() > 20, "only {} segments", segs.len());
    assert!(segs[0].ends_with("00000000000000000001.seg"));
    // Every sealed segment has an index; the active one does not.
    assert_eq!(files_with_ext(dir.path(), "idx").len(), segs.len() - 1);
    for s in &segs {
        assert!(fs::metadata(s).unwrap().len() <= 4096);
    }
    // Segments and indexes only (not LOCK and checkpoints.redb).
    assert_eq!(log.disk_usage_bytes(), dir_bytes(dir.path()));

    // Batch limits.
    let mut r = log.reader(10).unwrap();
    let b = r.read_batch(5, usize::MAX).unwrap();
    assert_eq!(
        b.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    let b = r.read_batch(1000, 1).unwrap();
    assert_eq!(b.len(), 1, "max_bytes still returns one record");
    assert_eq!(r.next_lsn(), 16);
    w.close().await.unwrap();
}

#[tokio::test]
async fn lsn_must_be_dense() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    w.append(rec(1, true)).await.unwrap();
    match w.append(rec(3, true)).await {
        Err(LogError::LsnMismatch {
            expected: 2,
            got: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.append(rec(1, true)).await,
        Err(LogError::LsnMismatch {
            expected: 2,
            got: 1
        })
    ));
    w.append(rec(2, true)).await.unwrap();
    w.close().await.unwrap();
}

#[tokio::test]
async fn second_open_in_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    let err = ChangeLog::open(opts(dir.path(), 4096)).unwrap_err();
    assert!(matches!(err, LogError::AlreadyOpen { ref dir } if dir == log.dir()));
    assert!(
        err.to_string().contains("another spillway process"),
        "{err}"
    );
    // The checkpoint store alone is refused too.
    assert!(matches!(
        spillway_log::CheckpointStore::open(dir.path()),
        Err(LogError::AlreadyOpen { .. })
    ));
    // The lock lives as long as anything of the log: the writer, clones of
    // the handle, readers, checkpoint store clones.
    let clone = log.clone();
    let reader = log.reader(1).unwrap();
    let store = log.checkpoints().clone();
    w.close().await.unwrap();
    drop(log);
    assert!(matches!(
        ChangeLog::open(opts(dir.path(), 4096)),
        Err(LogError::AlreadyOpen { .. })
    ));
    drop(clone);
    assert!(matches!(
        ChangeLog::open(opts(dir.path(), 4096)),
        Err(LogError::AlreadyOpen { .. })
    ));
    drop(reader);
    assert!(matches!(
        ChangeLog::open(opts(dir.path(), 4096)),
        Err(LogError::AlreadyOpen { .. })
    ));
    drop(store);
    let (log, w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    // Dropping without close releases it as well.
    drop(w);
    drop(log);
    let (_log, _w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    // The pid of the holder is in the LOCK file.
    let pid = fs::read_to_string(dir.path().join("LOCK")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
}

#[tokio::test]
async fn unfinished_transaction_is_invisible_until_its_end_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    append_range(&mut w, 1, 3, 1).await; // three single-record txs
    for lsn in 4..=60 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 3);
    assert_eq!(*w.durable().borrow(), Some(commit_of(&rec(3, true))));
    let mut r = log.reader(1).unwrap();
    assert_eq!(r.read_batch(1000, usize::MAX).unwrap().len(), 3);
    assert!(r.read_batch(1000, usize::MAX).unwrap().is_empty());
    assert_eq!(r.next_lsn(), 4);

    w.append(rec(61, true)).await.unwrap();
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 61);
    let rest = r.read_batch(1000, usize::MAX).unwrap();
    assert_eq!(rest.len(), 58);
    check_records(&rest, 4);
    w.close().await.unwrap();
}

#[tokio::test]
async fn subscribe_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    let mut sub = log.subscribe();
    let reader_log = log.clone();
    let waiter = tokio::spawn(async move {
        let mut r = reader_log.reader(1).unwrap();
        loop {
            let batch = r.read_batch(100, usize::MAX).unwrap();
            if !batch.is_empty() {
                return batch;
            }
            sub.changed().await.unwrap();
        }
    });
    tokio::task::yield_now().await;
    w.append(rec(1, false)).await.unwrap();
    w.append(rec(2, true)).await.unwrap();
    let batch = waiter.await.unwrap();
    assert_eq!(batch.len(), 2);
    w.close().await.unwrap();
}

/// Per-checkpoint versions tell an owner whether *its* checkpoint changed,
/// and a missing checkpoint is at 0 for `set_if`.
#[test]
fn checkpoint_versions_count_changes_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    let cps = log.checkpoints();
    let mut sub = cps.subscribe();
    assert_eq!(cps.version("a"), 0);
    cps.set("a", 5, false).unwrap();
    assert_eq!(cps.version("a"), 1);
    cps.set("b", 7, false).unwrap();
    cps.set_if("b", 7, 9).unwrap();
    assert_eq!(cps.version("a"), 1, "changes of b are not changes of a");
    assert_eq!(cps.version("b"), 2);
    assert!(sub.has_changed().unwrap());
    sub.borrow_and_update();
    assert!(cps.delete("a").unwrap());
    assert!(cps.version("a") > 1);
    assert!(sub.has_changed().unwrap());
    // Gone counts as 0: storing from 0 succeeds, anything else is "moved".
    assert!(matches!(
        cps.set_if("a", 5, 6),
        Err(LogError::CheckpointMoved { current: 0, .. })
    ));
    assert_eq!(cps.set_if("a", 0, 6).unwrap().lsn, 6);
}

/// A rename carries the checkpoint and its pending requery in one step and
/// never overwrites an existing target.
#[test]
fn checkpoint_rename_if_absent_moves_the_pending_requery_too() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    let cps = log.checkpoints();
    cps.set("old", 50, false).unwrap();
    assert_eq!(cps.reset_ahead(10).unwrap(), vec![("old".to_string(), 50)]);
    let moved = cps.rename_if_absent("old", "sink:old").unwrap().unwrap();
    assert_eq!(moved.lsn, 10);
    assert!(cps.get("old").unwrap().is_none());
    assert!(cps.pending_requery("old").unwrap().is_none());
    assert_eq!(
        cps.pending_requery("sink:old").unwrap(),
        Some(spillway_log::PendingRequery {
            requested_lsn: 51,
            resume_lsn: 11
        })
    );
    cps.set("again", 5, false).unwrap();
    assert!(cps.rename_if_absent("again", "sink:old").unwrap().is_none());
    assert_eq!(cps.get("again").unwrap().unwrap().lsn, 5);
    assert_eq!(cps.get("sink:old").unwrap().unwrap().lsn, 10);
    assert!(cps
        .rename_if_absent("missing", "sink:missing")
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn reader_follows_rolls_while_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    const N: u64 = 5000;
    let reader_log = log.clone();
    let mut sub = log.subscribe();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader_thread = std::thread::spawn(move || {
        let mut r = reader_log.reader(1).unwrap();
        let mut got = Vec::new();
        while (got.len() as u64) < N {
            let batch = r.read_batch(64, usize::MAX).unwrap();
            if batch.is_empty() {
                std::thread::sleep(Duration::from_micros(200));
            }
            got.extend(batch);
        }
        done_tx.send(()).unwrap();
        got
    });
    let writer = async {
        for lsn in 1..=N {
            w.append(rec(lsn, lsn % 3 == 0 || lsn == N)).await.unwrap();
            if lsn % 500 == 0 {
                // Let the writer thread commit a few groups mid-stream.
                w.flush().await.unwrap();
            }
        }
        w.flush().await.unwrap();
        w
    };
    let w = writer.await;
    // The watch must have seen the final value.
    assert_eq!(*sub.borrow_and_update(), N);
    let got = reader_thread.join().unwrap();
    done_rx.recv().unwrap();
    assert_eq!(got.len() as u64, N);
    check_records(&got, 1);
    assert!(files_with_ext(dir.path(), "seg").len() > 100);
    w.close().await.unwrap();
}

#[tokio::test]
async fn reopen_after_clean_close_resumes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
        append_range(&mut w, 1, 300, 10).await;
        w.close().await.unwrap();
    }
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    assert_eq!(w.next_lsn(), 301);
    assert_eq!(log.committed_lsn(), 300);
    assert_eq!(log.last_commit(), Some(commit_of(&rec(300, true))));
    assert_eq!(*w.durable().borrow(), Some(commit_of(&rec(300, true))));
    append_range(&mut w, 301, 400, 10).await;
    w.close().await.unwrap();
    let all = read_all(&log, 0).unwrap();
    assert_eq!(all.len(), 400);
    check_records(&all, 1);
}

/// Builds a closed log with lsns 1..=n (tx_end every `tx_every` and at n).
async fn build_log(dir: &Path, segment_bytes: u64, n: u64, tx_every: u64) {
    let (_log, mut w) = ChangeLog::open(opts(dir, segment_bytes)).unwrap();
    append_range(&mut w, 1, n, tx_every).await;
    w.close().await.unwrap();
}

fn last_tx_end_at_or_before(lsn: u64, tx_every: u64, n: u64) -> u64 {
    if lsn >= n {
        n
    } else {
        lsn - lsn % tx_every
    }
}

/// Offsets of every record in a segment file (test-side parser of the
/// documented format).
fn record_offsets(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 64usize;
    while off + 41 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let lsn = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        out.push((lsn, off as u64, (off + 41 + len) as u64));
        off += 41 + len;
    }
    out
}

#[tokio::test]
async fn torn_tail_recovers_to_last_complete_transaction() {
    const N: u64 = 200;
    const TX: u64 = 6;
    let template = tempfile::tempdir().unwrap();
    build_log(template.path(), 1 << 20, N, TX).await;
    let seg = files_with_ext(template.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    assert_eq!(records.len() as u64, N);
    let file_len = fs::metadata(&seg).unwrap().len();
    let mut cuts = vec![0, 10, 64, 65, 100, file_len - 1, file_len];
    for &(_, start, end) in records.iter().rev().take(15) {
        cuts.extend([start, start + 3, start + 20, end - 1]);
    }
    for cut in cuts {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(seg.file_name().unwrap());
        fs::copy(&seg, &copy).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let complete = records.iter().filter(|r| r.2 <= cut).count() as u64;
        let expect = if complete == 0 {
            0
        } else {
            last_tx_end_at_or_before(complete, TX, N)
        };
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
        assert_eq!(log.committed_lsn(), expect, "cut at {cut}");
        assert_eq!(w.next_lsn(), expect + 1);
        let all = read_all(&log, 1).unwrap();
        assert_eq!(all.len() as u64, expect);
        check_records(&all, 1);
        if expect > 0 {
            assert_eq!(log.last_commit(), Some(commit_of(&rec(expect, true))));
        } else {
            assert_eq!(log.last_commit(), None);
        }
        // File was truncated exactly after the tx_end record.
        let expect_len = if expect == 0 {
            64
        } else {
            records[expect as usize - 1].2
        };
        assert_eq!(fs::metadata(&copy).unwrap().len(), expect_len);
        // The log is writable again from there.
        w.append(rec(expect + 1, true)).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(log.committed_lsn(), expect + 1);
    }
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, &bytes).unwrap();
}

/// Issue 8.3: damage followed by valid records is refused (it used to be
/// cut, deleting confirmed transactions); the file is left as it is, and
/// `repair` makes the cut on request, keeping the cut-off bytes.
#[tokio::test]
async fn corruption_followed_by_valid_records_is_refused_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 1 << 20, 50, 5).await;
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    // Flip a payload byte of lsn 48: lsns 49 and 50 (durable) follow it.
    let (lsn, start, _) = records[47];
    assert_eq!(lsn, 48);
    flip_byte(&seg, start + 50);
    let before = fs::read(&seg).unwrap();
    // Before the damage: the log's epoch, and an idle-confirm position.
    let epoch_before = {
        fs::copy(&seg, dir.path().join("keep")).unwrap();
        fs::write(&seg, &before[..start as usize]).unwrap();
        let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
        log.record_idle_confirmed(0x5000).unwrap();
        let e = log.epochs();
        w.close().await.unwrap();
        drop(log);
        fs::rename(dir.path().join("keep"), &seg).unwrap();
        e
    };
    assert_eq!(epoch_before.len(), 1);
    for _ in 0..2 {
        match ChangeLog::open(opts(dir.path(), 1 << 20)) {
            Err(LogError::Damaged {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg);
                assert_eq!(offset, start);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a damaged log with valid records after the damage was opened"),
        }
        assert_eq!(
            fs::read(&seg).unwrap(),
            before,
            "refusing must not change the file"
        );
    }
    let err = ChangeLog::open(opts(dir.path(), 1 << 20))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spillway admin cdc repair") && err.contains(&start.to_string()),
        "{err}"
    );

    let report = spillway_log::repair(&opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.cuts.len(), 1);
    assert_eq!(report.cuts[0].offset, start);
    assert_eq!(
        fs::read(&report.cuts[0].saved_as).unwrap(),
        before[start as usize..]
    );
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), 45);
    assert_eq!(w.next_lsn(), 46);
    check_records(&read_all(&log, 1).unwrap(), 1);
    // lsns from 46 on are handed out again: a new epoch begins there, so a
    // client that saw the old 46.. is moved back to it.
    let epochs = log.epochs();
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    assert_eq!(epochs[0], epoch_before[0]);
    assert_eq!(epochs[1].first_lsn, 46);
    assert_eq!(log.current_epoch(), epochs[1]);
    assert_eq!(
        spillway_log::start_in_epochs(&epochs, epochs[0].id, 49),
        Ok(46)
    );
    // The log's end moved back: the idle-confirm position no longer holds.
    assert_eq!(log.idle_confirmed(), 0);
    w.close().await.unwrap();
    drop(log);
    // Nothing left to repair.
    assert!(spillway_log::repair(&opts(dir.path(), 1 << 20))
        .unwrap()
        .cuts
        .is_empty());
}

/// Issue 8.3 (found by review): a damaged *length* field makes the record
/// look as if it ran past the end of the file — that must be refused like
/// any other damage followed by valid records, not cut as a torn tail.
#[tokio::test]
async fn damaged_length_field_followed_by_valid_records_is_refused() {
    for byte in [1u64, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        build_log(dir.path(), 1 << 20, 50, 5).await;
        let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
        let records = record_offsets(&seg);
        let (lsn, start, _) = records[20];
        assert_eq!(lsn, 21);
        flip_byte(&seg, start + byte);
        let before = fs::read(&seg).unwrap();
        match ChangeLog::open(opts(dir.path(), 1 << 20)) {
            Err(LogError::Damaged {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg);
                assert_eq!(offset, start);
            }
            Err(e) => panic!("length byte {byte}: {e}"),
            Ok(_) => panic!("length byte {byte}: a damaged length field cut durable records"),
        }
        assert_eq!(
            fs::read(&seg).unwrap(),
            before,
            "refusing must not change the file"
        );
    }
}

/// Zeros from the cut to the end of its file-system block, with valid
/// records in the next block, are what write-back leaves when a block whose
/// beginning was durable never got its new part written: a torn tail. The
/// cut bytes are kept in a `.torn` file next to the segment.
#[tokio::test]
async fn zeros_to_the_end_of_a_block_are_a_torn_tail_and_the_cut_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 1 << 20, 400, 5).await;
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    let mut bytes = fs::read(&seg).unwrap();
    // A record that starts inside block 2 (not on its boundary): zero from
    // there to the end of the block.
    let (_, start, _) = *records
        .iter()
        .find(|r| r.1 > 8192 && r.1 < 12288 - 64)
        .unwrap();
    bytes[start as usize..12288].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let last_whole = records.iter().filter(|r| r.2 <= start).count() as u64;
    let expect = last_whole - last_whole % 5;
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), expect);
    check_records(&read_all(&log, 1).unwrap(), 1);
    w.close().await.unwrap();
    let torn: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".torn"))
        .collect();
    assert_eq!(torn.len(), 1, "{torn:?}");
    assert!(torn[0]
        .to_string_lossy()
        .ends_with(&format!(".{start}.torn")));
    assert_eq!(fs::read(&torn[0]).unwrap(), bytes[start as usize..]);
    // A reopen does not treat the kept file as part of the log.
    drop(log);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), expect);
    w.close().await.unwrap();
}

/// The same zeros in front of the next block *without* reaching the block
/// end are not a write-back hole: refused as damage.
#[tokio::test]
async fn zeros_short_of_the_block_end_before_valid_records_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 1 << 20, 400, 5).await;
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    let mut bytes = fs::read(&seg).unwrap();
    let (_, start, end) = *records
        .iter()
        .find(|r| r.1 > 8192 && r.2 < 12288 - 64)
        .unwrap();
    bytes[start as usize..end as usize].fill(0);
    fs::write(&seg, &bytes).unwrap();
    match ChangeLog::open(opts(dir.path(), 1 << 20)) {
        Err(LogError::Damaged { offset, .. }) => assert_eq!(offset, start),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("zeros inside a block were cut as a torn tail"),
    }
}

/// Damage in the last record, with nothing valid after it, is a torn tail.
#[tokio::test]
async fn corrupt_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 1 << 20, 50, 5).await;
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    let (_, start, _) = records[49];
    flip_byte(&seg, start + 45);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), 45);
    assert_eq!(fs::metadata(&seg).unwrap().len(), records[44].2);
    w.close().await.unwrap();
}

/// A whole unwritten block (zeros) with valid records after it is what a
/// crash during write-back leaves: a torn tail, not damage.
#[tokio::test]
async fn unwritten_block_before_later_records_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 1 << 20, 400, 5).await;
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() > 3 * 4096);
    bytes[8192..12288].fill(0);
    fs::write(&seg, &bytes).unwrap();
    // The last complete transaction before the hole survives.
    let last_whole = records.iter().filter(|r| r.2 <= 8192).count() as u64;
    let expect = last_whole - last_whole % 5;
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), expect);
    check_records(&read_all(&log, 1).unwrap(), 1);
    w.close().await.unwrap();
}

/// Recovery never cuts into a sealed segment: damage there (reached because
/// the newest segment holds only an unfinished transaction) is refused.
#[tokio::test]
async fn damage_in_a_sealed_segment_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        append_range(&mut w, 1, 40, 4).await;
        for lsn in 41..=60 {
            w.append(rec(lsn, false)).await.unwrap();
        }
        w.flush().await.unwrap();
    }
    let segs = files_with_ext(dir.path(), "seg");
    // The newest segment holds no transaction end; damage the one before.
    let newest = segs.last().unwrap();
    assert!(record_offsets(newest).iter().all(|r| r.0 > 40));
    let victim = &segs[segs.len() - 2];
    let (_, start, _) = record_offsets(victim)[0];
    flip_byte(victim, start + 45);
    match ChangeLog::open(opts(dir.path(), 1024)) {
        Err(LogError::Damaged { segment, .. }) => assert_eq!(&segment, victim),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("recovery cut into a sealed segment"),
    }
    assert_eq!(files_with_ext(dir.path(), "seg"), segs);
}

/// Issue 8.3: a checkpoint beyond the log's end (here after a repair) is
/// reset to the end with a pending requery, never left to skip silently.
#[tokio::test]
async fn checkpoint_beyond_the_end_is_reset_with_a_pending_requery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
        append_range(&mut w, 1, 50, 5).await;
        w.flush().await.unwrap();
        log.checkpoints().set("ahead", 50, false).unwrap();
        log.checkpoints().set("behind", 30, false).unwrap();
        w.close().await.unwrap();
    }
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let (_, start, _) = record_offsets(&seg)[47];
    flip_byte(&seg, start + 50);
    spillway_log::repair(&opts(dir.path(), 1 << 20)).unwrap();
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), 45);
    let cps = log.checkpoints();
    assert_eq!(cps.get("ahead").unwrap().unwrap().lsn, 45);
    assert_eq!(
        cps.pending_requery("ahead").unwrap(),
        Some(spillway_log::PendingRequery {
            requested_lsn: 51,
            resume_lsn: 46
        })
    );
    assert_eq!(cps.get("behind").unwrap().unwrap().lsn, 30);
    assert_eq!(cps.pending_requery("behind").unwrap(), None);
    cps.clear_requery("ahead").unwrap();
    assert_eq!(cps.pending_requery("ahead").unwrap(), None);
    w.close().await.unwrap();
}

/// Issue 8.3: a start time inside the trimmed range must not start silently
/// at the oldest retained record — also after a reopen.
#[tokio::test]
async fn timestamp_inside_the_trimmed_range_maps_below_the_oldest_lsn() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
        append_range(&mut w, 1, 600, 5).await;
        w.flush().await.unwrap();
        log.trim_before(300).unwrap();
        let oldest = log.oldest_lsn();
        assert!(oldest > 20 && oldest <= 300);
        let ts20 = rec(20, false).timestamp_us;
        assert_eq!(log.lsn_for_timestamp(ts20).unwrap(), oldest - 1);
        // A time after everything trimmed still maps exactly.
        let ts = rec(oldest + 10, false).timestamp_us;
        assert_eq!(log.lsn_for_timestamp(ts).unwrap(), oldest + 10);
        w.close().await.unwrap();
    }
    let (log, w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    let oldest = log.oldest_lsn();
    assert_eq!(
        log.lsn_for_timestamp(rec(20, false).timestamp_us).unwrap(),
        oldest - 1
    );
    assert_eq!(
        log.lsn_for_timestamp(rec(oldest + 10, false).timestamp_us)
            .unwrap(),
        oldest + 10
    );
    w.close().await.unwrap();
}

/// The trimmed range survives a reopen exactly, also when timestamps are
/// not monotonic (the oldest segment's header only knows the last commit
/// before it, not the newest timestamp trimmed).
#[tokio::test]
async fn trimmed_range_is_persisted_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let late = 9_000_000_000;
    {
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
        // lsn 1 carries a timestamp later than everything after it.
        let mut first = rec(1, true);
        first.timestamp_us = late;
        w.append(first).await.unwrap();
        append_range(&mut w, 2, 400, 1).await;
        w.flush().await.unwrap();
        log.trim_before(200).unwrap();
        assert!(log.oldest_lsn() > 1);
        assert_eq!(log.lsn_for_timestamp(late).unwrap(), log.oldest_lsn() - 1);
        w.close().await.unwrap();
    }
    let (log, w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    assert_eq!(
        log.lsn_for_timestamp(late).unwrap(),
        log.oldest_lsn() - 1,
        "after a reopen, a time only a trimmed record had must not map past the log's end"
    );
    w.close().await.unwrap();
}

/// Issue 8.9: `max_bytes` holds at every segment seal, without waiting for
/// a retention run.
#[tokio::test]
async fn max_bytes_is_enforced_when_a_segment_is_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), 4096);
    let cap = 5 * 4096;
    o.max_bytes = Some(cap);
    let (log, mut w) = ChangeLog::open(o).unwrap();
    log.checkpoints().set("slow", 0, false).unwrap();
    let mut peak = 0;
    for chunk in 0..40u64 {
        append_range(&mut w, chunk * 50 + 1, chunk * 50 + 50, 5).await;
        w.flush().await.unwrap();
        peak = peak.max(dir_bytes(dir.path()));
    }
    // The cap plus the segment being sealed (and its index) at most.
    assert!(
        peak <= cap + 4096 + 1024,
        "peak {peak} exceeds max_bytes {cap} by more than a segment"
    );
    assert!(log.oldest_lsn() > 1);
    w.close().await.unwrap();
}

#[tokio::test]
async fn partial_transaction_spanning_segments_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        append_range(&mut w, 1, 20, 4).await;
        // A big transaction that never ends.
        for lsn in 21..=120 {
            w.append(rec(lsn, false)).await.unwrap();
        }
        w.flush().await.unwrap();
        // Simulated crash: drop without close (queued data is still written).
    }
    let before = files_with_ext(dir.path(), "seg");
    assert!(before.len() > 5);
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 20);
    assert_eq!(w.next_lsn(), 21);
    assert_eq!(log.last_commit(), Some(commit_of(&rec(20, true))));
    let after = files_with_ext(dir.path(), "seg");
    assert!(after.len() < before.len());
    // No remaining segment holds anything after lsn 20.
    for s in &after {
        for (lsn, _, _) in record_offsets(s) {
            assert!(lsn <= 20, "{} still holds lsn {lsn}", s.display());
        }
    }
    // The segment holding lsn 20 is active again: no stale index for it.
    assert_eq!(files_with_ext(dir.path(), "idx").len(), after.len() - 1);
    check_records(&read_all(&log, 1).unwrap(), 1);
    // Resend the transaction, this time complete.
    append_range(&mut w, 21, 120, 1000).await;
    w.close().await.unwrap();
    let all = read_all(&log, 1).unwrap();
    assert_eq!(all.len(), 120);
    check_records(&all, 1);
    drop(log);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 120);
    w.close().await.unwrap();
}

#[tokio::test]
async fn partial_transaction_from_a_segment_start_is_removed() {
    // The unfinished transaction starts exactly at a segment boundary and
    // nothing before it is committed.
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        for lsn in 1..=80 {
            w.append(rec(lsn, false)).await.unwrap();
        }
    }
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 0);
    assert_eq!(log.last_commit(), None);
    assert_eq!(w.next_lsn(), 1);
    assert_eq!(files_with_ext(dir.path(), "seg").len(), 1);
    append_range(&mut w, 1, 10, 10).await;
    w.close().await.unwrap();
    assert_eq!(read_all(&log, 1).unwrap().len(), 10);
}

#[tokio::test]
async fn corruption_in_old_segment_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 2048, 400, 3).await;
    let segs = files_with_ext(dir.path(), "seg");
    assert!(segs.len() > 5);
    let victim = &segs[2];
    let records = record_offsets(victim);
    let (bad_lsn, start, _) = records[records.len() / 2];
    let mut bytes = fs::read(victim).unwrap();
    bytes[start as usize + 45] ^= 0x01;
    fs::write(victim, &bytes).unwrap();

    // Twice: the second open sees whatever the first one left behind.
    for _ in 0..2 {
        let (log, w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
        // Sealed segments are not scanned at open: nothing was truncated.
        assert_eq!(log.committed_lsn(), 400);
        let mut r = log.reader(1).unwrap();
        let mut got = Vec::new();
        let err = loop {
            match r.read_batch(50, usize::MAX) {
                Ok(b) if b.is_empty() => panic!("read past corruption"),
                Ok(b) => got.extend(b),
                Err(e) => break e,
            }
        };
        match err {
            LogError::Corrupt { segment, offset } => {
                assert_eq!(&segment, victim);
                assert_eq!(offset, start);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got.len() as u64, bad_lsn - 1);
        check_records(&got, 1);
        // Retrying keeps failing; it never skips.
        assert!(matches!(
            r.read_batch(50, usize::MAX),
            Err(LogError::Corrupt { .. })
        ));
        // Seeking directly to the bad record fails too; past it works.
        assert!(matches!(
            log.reader(bad_lsn).unwrap().read_batch(1, usize::MAX),
            Err(LogError::Corrupt { .. })
        ));
        // Later segments are unaffected.
        let next_base = bad_lsn + (records.len() - records.len() / 2) as u64;
        let after = read_all(&log, next_base).unwrap();
        assert_eq!(after.len() as u64, 401 - next_base);
        check_records(&after, next_base);
        drop(w);
    }
}

#[tokio::test]
async fn index_seeks_land_exactly_and_time_lookup_works() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(LogOptions {
        dir: dir.path().to_path_buf(),
        segment_bytes: 256 * 1024,
        channel_capacity: 128,
        index_interval_bytes: 1024,
        max_bytes: None,
    })
    .unwrap();
    append_range(&mut w, 1, 5000, 10).await;
    w.flush().await.unwrap();
    let segs = files_with_ext(dir.path(), "seg");
    assert!(segs.len() >= 2, "want a sealed and an active segment");
    for from in [1, 2, 17, 999, 1000, 1001, 2500, 3333, 4999, 5000] {
        let mut r = log.reader(from).unwrap();
        let b = r.read_batch(3, usize::MAX).unwrap();
        assert_eq!(b[0].lsn, from);
        check_records(&b, from);
    }
    assert!(log
        .reader(5001)
        .unwrap()
        .read_batch(3, usize::MAX)
        .unwrap()
        .is_empty());
    // Timestamps are 1_000_000 + 10 * lsn.
    assert_eq!(log.lsn_for_timestamp(i64::MIN).unwrap(), 1);
    assert_eq!(log.lsn_for_timestamp(0).unwrap(), 1);
    for lsn in [1u64, 2, 100, 1234, 4000, 5000] {
        let ts = 1_000_000 + lsn as i64 * 10;
        assert_eq!(log.lsn_for_timestamp(ts).unwrap(), lsn);
        assert_eq!(log.lsn_for_timestamp(ts - 9).unwrap(), lsn);
    }
    assert_eq!(log.lsn_for_timestamp(1_000_000 + 50_001).unwrap(), 5001);
    // Invisible records are not found.
    for lsn in 5001..=5010 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    assert_eq!(
        log.lsn_for_timestamp(1_000_000 + 50_005 * 10).unwrap(),
        5001
    );
    w.close().await.unwrap();
}

#[tokio::test]
async fn time_lookup_with_non_monotonic_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    // Timestamps go 0,1,...; a spike at lsn 500; then back.
    for lsn in 1..=1000u64 {
        let mut r = rec(lsn, true);
        r.timestamp_us = if lsn == 500 { 1_000_000 } else { lsn as i64 };
        w.append(r).await.unwrap();
    }
    w.close().await.unwrap();
    assert_eq!(log.lsn_for_timestamp(999_999).unwrap(), 500);
    assert_eq!(log.lsn_for_timestamp(700).unwrap(), 500);
    assert_eq!(log.lsn_for_timestamp(300).unwrap(), 300);
    assert_eq!(log.lsn_for_timestamp(1_000_001).unwrap(), 1001);
}

#[tokio::test]
async fn missing_or_garbled_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    build_log(dir.path(), 4096, 1500, 4).await;
    let idx = files_with_ext(dir.path(), "idx");
    assert!(idx.len() > 6);
    let original: Vec<Vec<u8>> = idx.iter().map(|p| fs::read(p).unwrap()).collect();
    fs::remove_file(&idx[1]).unwrap();
    let mut garbled = original[3].clone();
    let mid = garbled.len() / 2;
    garbled[mid] ^= 0xff;
    fs::write(&idx[3], garbled).unwrap();
    fs::write(&idx[5], b"nonsense").unwrap();
    // Half-written files of atomic writes a crash left: an index, the kept
    // bytes of a torn tail, a marker.
    let leftovers = [
        "00000000000000000001.tmp",
        "00000000000000000001.seg.4000.tmp",
        "epochs.tmp",
    ];
    for name in leftovers {
        fs::write(dir.path().join(name), b"junk").unwrap();
    }

    let (log, w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    for name in leftovers {
        assert!(!dir.path().join(name).exists(), "{name} was left");
    }
    // Rebuilt indexes are identical to the ones written at seal time.
    for (p, orig) in idx.iter().zip(&original) {
        assert_eq!(&fs::read(p).unwrap(), orig, "{}", p.display());
    }
    for from in (1..=1500).step_by(37) {
        let b = log.reader(from).unwrap().read_batch(2, usize::MAX).unwrap();
        assert_eq!(b[0].lsn, from);
        check_records(&b, from);
    }
    assert_eq!(log.lsn_for_timestamp(1_000_000 + 7770).unwrap(), 777);
    w.close().await.unwrap();
}

#[tokio::test]
async fn trim_deletes_only_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    append_range(&mut w, 1, 600, 5).await;
    w.flush().await.unwrap();
    let segs_before = files_with_ext(dir.path(), "seg");
    let bases: Vec<u64> = segs_before
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    let usage_before = log.disk_usage_bytes();
    let mut slow_reader = log.reader(1).unwrap();
    slow_reader.read_batch(3, usize::MAX).unwrap();

    // Trim in the middle of segment 4: segments 0..=2 go, segment 3 stays.
    let target = bases[3] + 2;
    let report = log.trim_before(target).unwrap();
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(report.oldest_lsn, bases[3]);
    assert_eq!(log.oldest_lsn(), bases[3]);
    assert!(report.bytes_freed > 0);
    assert_eq!(log.disk_usage_bytes(), usage_before - report.bytes_freed);
    assert_eq!(files_with_ext(dir.path(), "seg"), segs_before[3..].to_vec());
    // Nothing more to trim at the same point.
    assert_eq!(log.trim_before(target).unwrap().segments_deleted, 0);

    match slow_reader.read_batch(10, usize::MAX) {
        Err(LogError::Trimmed {
            requested: 4,
            oldest,
        }) => assert_eq!(oldest, bases[3]),
        other => panic!("{other:?}"),
    }
    // A new reader from before the oldest is told, never moved up silently.
    match read_all(&log, 1) {
        Err(LogError::Trimmed {
            requested: 1,
            oldest,
        }) => assert_eq!(oldest, bases[3]),
        other => panic!("{other:?}"),
    }
    let all = read_all(&log, bases[3]).unwrap();
    assert_eq!(all[0].lsn, bases[3]);
    assert_eq!(all.last().unwrap().lsn, 600);
    check_records(&all, bases[3]);
    // A time inside the trimmed range maps below the oldest lsn.
    assert_eq!(log.lsn_for_timestamp(0).unwrap(), bases[3] - 1);

    // Trimming everything keeps the active segment.
    let report = log.trim_before(u64::MAX).unwrap();
    assert_eq!(files_with_ext(dir.path(), "seg").len(), 1);
    assert_eq!(report.oldest_lsn, *bases.last().unwrap());
    w.close().await.unwrap();
    // Readers keep the directory locked too.
    drop(slow_reader);
    drop(log);

    // Reopen after trimming: state and last_commit survive.
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    assert_eq!(log.committed_lsn(), 600);
    assert_eq!(log.oldest_lsn(), *bases.last().unwrap());
    assert_eq!(log.last_commit(), Some(commit_of(&rec(600, true))));
    append_range(&mut w, 601, 650, 5).await;
    w.close().await.unwrap();
}

#[tokio::test]
async fn trim_never_deletes_invisible_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    append_range(&mut w, 1, 10, 10).await;
    for lsn in 11..=200 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 10);
    log.trim_before(u64::MAX).unwrap();
    // The segment holding lsn 11 must remain.
    assert!(log.oldest_lsn() <= 11);
    w.append(rec(201, true)).await.unwrap();
    w.close().await.unwrap();
    let all = read_all(&log, 11).unwrap();
    assert_eq!(all.len(), 191);
    check_records(&all, 11);
}

#[tokio::test]
async fn everything_trimmed_then_crash_keeps_last_commit() {
    // All tx_end records end up in trimmed segments; the unfinished tail is
    // then discarded by recovery, and last_commit comes from the header.
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        append_range(&mut w, 1, 30, 30).await;
        for lsn in 31..=200 {
            w.append(rec(lsn, false)).await.unwrap();
        }
        w.flush().await.unwrap();
        log.trim_before(u64::MAX).unwrap();
        assert_eq!(log.oldest_lsn(), 31.min(log.oldest_lsn()));
    }
    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 30);
    assert_eq!(log.last_commit(), Some(commit_of(&rec(30, true))));
    assert_eq!(w.next_lsn(), 31);
    w.close().await.unwrap();
}

/// A record of an unfinished transaction that gets discarded: same lsn,
/// timestamp and size as `rec(lsn, false)` but another payload, so that
/// stale bytes served at a reused lsn would show.
fn doomed(lsn: u64) -> AppendRecord {
    let mut r = rec(lsn, false);
    let mut p = format!("discarded-{lsn}-").into_bytes();
    p.resize(r.payload.len(), b'#');
    r.payload = p;
    r
}

/// Reads everything currently visible through an existing reader.
fn drain(reader: &mut spillway_log::LogReader) -> Vec<LogRecord> {
    let mut out = Vec::new();
    loop {
        let batch = reader.read_batch(7, 64 * 1024).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    files_with_ext(dir, "seg")
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect()
}

/// Bytes of segment and index files (what `disk_usage_bytes` counts).
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg" || e == "idx"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test]
async fn discard_removes_partial_transaction_spanning_segments() {
    // Every cut position across a few tiny segments: in the middle of a
    // segment and right at a segment end (the partial transaction then
    // starts a segment of its own).
    let mut cut_mid_segment = 0;
    let mut cut_at_segment_end = 0;
    for committed in 25..=45u64 {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        append_range(&mut w, 1, committed, 10).await;
        w.flush().await.unwrap();
        // Never read: positioned exactly at committed + 1.
        let mut idle = log.reader(committed + 1).unwrap();
        // A partial transaction spanning several segments, written and
        // fsynced but invisible.
        let last = committed + 120;
        for lsn in committed + 1..=last {
            w.append(doomed(lsn)).await.unwrap();
        }
        w.flush().await.unwrap();
        assert_eq!(log.committed_lsn(), committed);
        // A reader that read everything visible after the partial records
        // were written: its read-ahead holds bytes of them.
        let mut tail = log.reader(1).unwrap();
        let got = drain(&mut tail);
        assert_eq!(got.len() as u64, committed);
        check_records(&got, 1);
        assert_eq!(tail.next_lsn(), committed + 1);
        assert!(idle.read_batch(10, usize::MAX).unwrap().is_empty());

        let before = segment_bases(dir.path());
        assert!(before.len() > 5, "{before:?}");
        if before.contains(&(committed + 1)) {
            cut_at_segment_end += 1;
        } else {
            cut_mid_segment += 1;
        }
        assert_eq!(w.discard_uncommitted().await.unwrap(), 120);
        assert_eq!(w.next_lsn(), committed + 1);
        assert_eq!(log.committed_lsn(), committed);
        assert_eq!(log.last_commit(), Some(commit_of(&rec(committed, true))));
        assert_eq!(
            *w.durable().borrow(),
            Some(commit_of(&rec(committed, true)))
        );

        // The segments of the partial transaction are gone; the one holding
        // the cut is active (no index) and ends exactly at the cut.
        let after = segment_bases(dir.path());
        assert!(after.len() < before.len() - 3, "{before:?} -> {after:?}");
        assert_eq!(after[..], before[..after.len()]);
        assert!(*after.last().unwrap() <= committed + 1);
        for s in files_with_ext(dir.path(), "seg") {
            for (lsn, _, _) in record_offsets(&s) {
                assert!(lsn <= committed, "{} still holds lsn {lsn}", s.display());
            }
        }
        let active = files_with_ext(dir.path(), "seg").pop().unwrap();
        let expect_len = record_offsets(&active).last().map_or(64, |r| r.2);
        assert_eq!(fs::metadata(&active).unwrap().len(), expect_len);
        assert_eq!(files_with_ext(dir.path(), "idx").len(), after.len() - 1);
        assert_eq!(log.disk_usage_bytes(), dir_bytes(dir.path()));
        assert!(tail.read_batch(10, usize::MAX).unwrap().is_empty());

        // The resent transaction reuses the lsns, with other payloads.
        let end = committed + 100;
        append_range(&mut w, committed + 1, end, 1000).await;
        w.flush().await.unwrap();
        assert_eq!(log.committed_lsn(), end);
        let got = drain(&mut tail);
        assert_eq!(got.len() as u64, end - committed);
        check_records(&got, committed + 1);
        let got = drain(&mut idle);
        assert_eq!(got.len() as u64, end - committed);
        check_records(&got, committed + 1);
        let all = read_all(&log, 1).unwrap();
        assert_eq!(all.len() as u64, end);
        check_records(&all, 1);
        // Index seeks and time lookups at the reused lsns.
        check_records(&read_all(&log, committed + 9).unwrap(), committed + 9);
        assert_eq!(
            log.lsn_for_timestamp(rec(committed + 5, false).timestamp_us)
                .unwrap(),
            committed + 5
        );

        // A partial transaction again, left for recovery this time.
        for lsn in end + 1..=end + 30 {
            w.append(doomed(lsn)).await.unwrap();
        }
        w.close().await.unwrap();
        drop((tail, idle));
        drop(log);
        let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
        assert_eq!(log.committed_lsn(), end);
        assert_eq!(w.next_lsn(), end + 1);
        let all = read_all(&log, 1).unwrap();
        assert_eq!(all.len() as u64, end);
        check_records(&all, 1);
        w.close().await.unwrap();
    }
    assert!(cut_mid_segment > 0 && cut_at_segment_end > 0);
}

#[tokio::test]
async fn discard_with_nothing_uncommitted_is_a_noop() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(w.discard_uncommitted().await.unwrap(), 0);
    assert_eq!(w.next_lsn(), 1);
    assert_eq!(log.committed_lsn(), 0);
    // Complete transactions still queued: made durable, nothing removed.
    append_range(&mut w, 1, 60, 6).await;
    assert_eq!(w.discard_uncommitted().await.unwrap(), 0);
    assert_eq!(w.next_lsn(), 61);
    assert_eq!(log.committed_lsn(), 60);
    let files: Vec<(PathBuf, u64)> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path(), e.metadata().unwrap().len())
        })
        .collect();
    assert!(files.len() > 3);
    assert_eq!(w.discard_uncommitted().await.unwrap(), 0);
    for (path, len) in &files {
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            *len,
            "{}",
            path.display()
        );
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), files.len());
    append_range(&mut w, 61, 80, 6).await;
    w.close().await.unwrap();
    drop(log);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 80);
    check_records(&read_all(&log, 1).unwrap(), 1);
    w.close().await.unwrap();
}

#[tokio::test]
async fn discard_while_partial_records_are_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    let mut tail = log.reader(1).unwrap();
    // Neither the complete transactions nor the partial one are awaited:
    // most of it is still queued or buffered when the discard is queued.
    append_range(&mut w, 1, 50, 5).await;
    for lsn in 51..=400 {
        w.append(doomed(lsn)).await.unwrap();
    }
    assert_eq!(w.discard_uncommitted().await.unwrap(), 350);
    assert_eq!(w.next_lsn(), 51);
    // The complete transactions queued before the discard are durable.
    assert_eq!(log.committed_lsn(), 50);
    assert_eq!(*w.durable().borrow(), Some(commit_of(&rec(50, true))));
    for s in files_with_ext(dir.path(), "seg") {
        for (lsn, _, _) in record_offsets(&s) {
            assert!(lsn <= 50, "{} still holds lsn {lsn}", s.display());
        }
    }
    let got = drain(&mut tail);
    assert_eq!(got.len(), 50);
    check_records(&got, 1);
    // Queue another partial transaction and discard it right away.
    for lsn in 51..=120 {
        w.append(doomed(lsn)).await.unwrap();
    }
    assert_eq!(w.discard_uncommitted().await.unwrap(), 70);
    assert_eq!(w.next_lsn(), 51);
    append_range(&mut w, 51, 100, 7).await;
    w.flush().await.unwrap();
    let got = drain(&mut tail);
    assert_eq!(got.len(), 50);
    check_records(&got, 51);
    w.close().await.unwrap();
    drop(tail);
    drop(log);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 100);
    let all = read_all(&log, 1).unwrap();
    assert_eq!(all.len(), 100);
    check_records(&all, 1);
    w.close().await.unwrap();
}

#[tokio::test]
async fn discard_partial_transaction_within_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    append_range(&mut w, 1, 20, 5).await;
    for lsn in 21..=40 {
        w.append(doomed(lsn)).await.unwrap();
    }
    w.flush().await.unwrap();
    let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
    let records = record_offsets(&seg);
    assert_eq!(records.len(), 40);
    // Read after the partial records were written: read-ahead holds them.
    let mut tail = log.reader(1).unwrap();
    check_records(&drain(&mut tail), 1);
    assert_eq!(tail.next_lsn(), 21);

    assert_eq!(w.discard_uncommitted().await.unwrap(), 20);
    assert_eq!(w.next_lsn(), 21);
    assert_eq!(log.committed_lsn(), 20);
    assert_eq!(files_with_ext(dir.path(), "seg"), vec![seg.clone()]);
    assert!(files_with_ext(dir.path(), "idx").is_empty());
    assert_eq!(fs::metadata(&seg).unwrap().len(), records[19].2);
    assert_eq!(log.disk_usage_bytes(), records[19].2);

    // The resent transaction, then a reader at the reused lsns.
    append_range(&mut w, 21, 30, 100).await;
    w.flush().await.unwrap();
    let got = drain(&mut tail);
    assert_eq!(got.len(), 10);
    check_records(&got, 21);
    // An unfinished transaction queued behind a complete one.
    append_range(&mut w, 31, 33, 100).await;
    for lsn in 34..=38 {
        w.append(doomed(lsn)).await.unwrap();
    }
    assert_eq!(w.discard_uncommitted().await.unwrap(), 5);
    assert_eq!(w.next_lsn(), 34);
    append_range(&mut w, 34, 36, 100).await;
    w.close().await.unwrap();
    let got = drain(&mut tail);
    assert_eq!(got.len(), 6);
    check_records(&got, 31);
    drop(tail);
    drop(log);
    let (log, w) = ChangeLog::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(log.committed_lsn(), 36);
    let all = read_all(&log, 1).unwrap();
    assert_eq!(all.len(), 36);
    check_records(&all, 1);
    w.close().await.unwrap();
}

#[tokio::test]
async fn discard_of_an_abandoned_call_still_applies() {
    use std::future::Future;
    use std::task::Poll;
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    append_range(&mut w, 1, 10, 10).await;
    for lsn in 11..=50 {
        w.append(doomed(lsn)).await.unwrap();
    }
    // An empty queue, so the first poll queues the command.
    w.flush().await.unwrap();
    {
        // Poll once (queues the command), then drop the future.
        let mut fut = std::pin::pin!(w.discard_uncommitted());
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(res) = polled {
            assert_eq!(res.unwrap(), 40);
        }
    }
    // The next append waits for the discard and takes its lsn from it.
    w.append(rec(11, true)).await.unwrap();
    assert_eq!(w.next_lsn(), 12);
    w.close().await.unwrap();
    assert_eq!(log.committed_lsn(), 11);
    check_records(&read_all(&log, 1).unwrap(), 1);
}

/// Deterministic xorshift64* PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn model_random_appends_reopens_and_crashes() {
    for seed in [1u64, 0xfeed, 0xdead_beef, 42] {
        run_model(seed, 150).await;
    }
    // MODEL_SEEDS=n runs n more seeds (for soak testing).
    let extra: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let first: u64 = std::env::var("MODEL_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for seed in first..first + extra {
        run_model(seed, 300).await;
    }
}

async fn run_model(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let seg_bytes = [512u64, 1024, 4096][rng.below(3) as usize];
    let o = LogOptions {
        dir: dir.path().to_path_buf(),
        segment_bytes: seg_bytes,
        channel_capacity: 1 + rng.below(64) as usize,
        index_interval_bytes: 1 + rng.below(700),
        max_bytes: None,
    };
    // Every record appended in the current history (a prefix of it is visible).
    let mut history: Vec<AppendRecord> = Vec::new();
    let (mut log, mut w) = ChangeLog::open(o.clone()).unwrap();
    // A long-lived reader following along across discards, trims and
    // reopens (its read-ahead often holds records a discard removes).
    let mut tail = log.reader(1).unwrap();
    let trace = std::env::var_os("MODEL_TRACE").is_some();
    for step in 0..steps {
        let op = rng.below(11);
        if trace {
            eprintln!(
                "step {step}: op {op} history {} committed {} files {:?}",
                history.len(),
                log.committed_lsn(),
                fs::read_dir(dir.path())
                    .unwrap()
                    .filter_map(|e| {
                        let e = e.ok()?;
                        Some((
                            e.file_name()
                                .into_string()
                                .unwrap()
                                .trim_start_matches('0')
                                .to_string(),
                            e.metadata().ok()?.len(),
                        ))
                    })
                    .filter(|(n, _)| n.ends_with("seg"))
                    .collect::<std::collections::BTreeMap<_, _>>()
            );
        }
        match op {
            0..=5 => {
                // A transaction of random size, sometimes unfinished.
                let n = if rng.below(8) == 0 {
                    20 + rng.below(60)
                } else {
                    1 + rng.below(8)
                };
                let finish = rng.below(5) != 0;
                for i in 0..n {
                    let lsn = history.len() as u64 + 1;
                    let max = if rng.below(20) == 0 { 2000 } else { 200 };
                    let len = rng.below(max) as usize;
                    let r = AppendRecord {
                        lsn,
                        timestamp_us: rng.below(1 << 40) as i64,
                        tx_end: finish && i == n - 1,
                        pg_commit_lsn: rng.next(),
                        pg_end_lsn: rng.next(),
                        payload: (0..len).map(|_| rng.next() as u8).collect(),
                    };
                    w.append(r.clone()).await.unwrap();
                    history.push(r);
                }
                if rng.below(3) == 0 {
                    w.flush().await.unwrap();
                    let visible = history.iter().rposition(|r| r.tx_end).map_or(0, |i| i + 1);
                    assert_eq!(log.committed_lsn(), visible as u64);
                }
            }
            6 => {
                w.close().await.unwrap();
                let pos = tail.next_lsn();
                drop(tail);
                drop(log);
                (log, w) = ChangeLog::open(o.clone()).unwrap();
                tail = log.reader(pos).unwrap();
                let visible = history.iter().rposition(|r| r.tx_end).map_or(0, |i| i + 1);
                assert_eq!(
                    log.committed_lsn(),
                    visible as u64,
                    "seed {seed} step {step}"
                );
            }
            7 | 8 => {
                // Crash: the writer stops and whatever was not yet durable
                // may be lost, torn at any byte. What was published as
                // committed before the crash was fsynced and must survive;
                // the segment header is fsynced before any record goes in.
                // (Dropping the writer actually writes everything; the
                // truncation below simulates the loss.)
                let durable = log.committed_lsn();
                let pos = tail.next_lsn();
                drop(w);
                drop(tail);
                drop(log);
                let seg = files_with_ext(dir.path(), "seg").pop().unwrap();
                let len = fs::metadata(&seg).unwrap().len();
                let min_cut = record_offsets(&seg)
                    .iter()
                    .find(|r| r.0 == durable)
                    .map_or(64, |r| r.2);
                let cut = if rng.below(4) == 0 {
                    len
                } else {
                    min_cut + rng.below(len - min_cut + 1)
                };
                if trace {
                    eprintln!(
                        "  crash: cut {} from {len} to {cut} (durable {durable})",
                        seg.display()
                    );
                }
                fs::OpenOptions::new()
                    .write(true)
                    .open(&seg)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                match rng.below(4) {
                    // Write-back left a block unwritten (zeros) before
                    // blocks that reached the disk: a torn tail too.
                    0 => {
                        let block = min_cut.div_ceil(4096) * 4096;
                        if block + 4096 < cut {
                            let mut bytes = fs::read(&seg).unwrap();
                            bytes[block as usize..block as usize + 4096].fill(0);
                            fs::write(&seg, &bytes).unwrap();
                        }
                    }
                    // Garbage after the last write (preallocated or stale).
                    1 => {
                        let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
                        let junk: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                        std::io::Write::write_all(&mut f, &junk).unwrap();
                    }
                    _ => {}
                }
                (log, w) = ChangeLog::open(o.clone()).unwrap();
                tail = log.reader(pos).unwrap();
                assert!(
                    log.committed_lsn() >= durable,
                    "seed {seed} step {step}: durable data lost"
                );
            }
            10 => {
                // The replication connection broke mid-transaction.
                let visible = history.iter().rposition(|r| r.tx_end).map_or(0, |i| i + 1);
                let n = w.discard_uncommitted().await.unwrap();
                assert_eq!(
                    n,
                    (history.len() - visible) as u64,
                    "seed {seed} step {step}"
                );
                assert_eq!(
                    log.committed_lsn(),
                    visible as u64,
                    "seed {seed} step {step}"
                );
                assert_eq!(w.next_lsn(), visible as u64 + 1, "seed {seed} step {step}");
                history.truncate(visible);
            }
            _ => {
                let c = log.committed_lsn();
                if c > 0 {
                    log.trim_before(1 + rng.below(c + 1)).unwrap();
                }
            }
        }
        // Invariant: the visible records are a prefix of history ending at a
        // tx_end, with the right contents. (The writer thread may commit more
        // in the background while we look.)
        let c1 = log.committed_lsn();
        let oldest = log.oldest_lsn();
        assert!(oldest >= 1 && oldest <= c1 + 1, "seed {seed} step {step}");
        let got = read_all(&log, oldest).unwrap();
        let lc = log.last_commit();
        let c2 = log.committed_lsn();
        assert!(c2 as usize <= history.len());
        let last = got.last().map_or(oldest - 1, |r| r.lsn);
        assert!(
            last >= c1 && last <= c2,
            "seed {seed} step {step}: read up to {last}, committed {c1}..{c2}"
        );
        assert_eq!(
            got.len() as u64,
            last + 1 - oldest,
            "seed {seed} step {step}"
        );
        if last > 0 {
            assert!(
                history[last as usize - 1].tx_end,
                "seed {seed} step {step}: visible prefix ends mid-transaction"
            );
        }
        for r in &got {
            let h = &history[r.lsn as usize - 1];
            assert_eq!(
                (r.lsn, r.timestamp_us, &r.payload),
                (h.lsn, h.timestamp_us, &h.payload)
            );
        }
        match lc {
            Some(lc) => {
                assert!(lc.lsn >= c1 && lc.lsn <= c2, "seed {seed} step {step}");
                assert_eq!(lc, commit_of(&history[lc.lsn as usize - 1]));
            }
            None => assert_eq!(c1, 0),
        }
        loop {
            match tail.read_batch(1 + rng.below(50) as usize, usize::MAX) {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    for r in &batch {
                        let h = &history[r.lsn as usize - 1];
                        assert_eq!(
                            (r.lsn, r.timestamp_us, &r.payload),
                            (h.lsn, h.timestamp_us, &h.payload),
                            "seed {seed} step {step}: tail reader"
                        );
                    }
                }
                Err(LogError::Trimmed { oldest, .. }) => tail = log.reader(oldest).unwrap(),
                Err(e) => panic!("seed {seed} step {step}: tail reader: {e}"),
            }
        }
        let committed = log.committed_lsn();
        // Forget what the crash dropped; the source would resend it.
        if w.next_lsn() <= history.len() as u64 {
            assert_eq!(w.next_lsn(), committed + 1, "seed {seed} step {step}");
            history.truncate(committed as usize);
        }
    }
    w.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Consumer checkpoints

fn names_and_lsns(list: &[Checkpoint]) -> Vec<(&str, u64)> {
    list.iter().map(|c| (c.name.as_str(), c.lsn)).collect()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn checkpoints_set_get_list_delete() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<CheckpointStore>();

    let dir = tempfile::tempdir().unwrap();
    let (log, w) = ChangeLog::open(opts(dir.path(), 4096)).unwrap();
    assert!(dir.path().join("checkpoints.redb").exists());
    let cps = log.checkpoints();
    assert_eq!(cps.get("sink-a").unwrap(), None);
    assert!(cps.list().unwrap().is_empty());
    assert_eq!(cps.min_lsn().unwrap(), None);

    let before = now_us();
    let a = cps.set("sink-a", 5, false).unwrap();
    assert_eq!((a.name.as_str(), a.lsn), ("sink-a", 5));
    assert!(a.updated_at_us >= before && a.updated_at_us <= now_us());
    cps.set("sink-b", 3, false).unwrap();
    cps.set("audit", 9, false).unwrap();
    assert_eq!(cps.get("sink-a").unwrap(), Some(a.clone()));
    assert_eq!(
        names_and_lsns(&cps.list().unwrap()),
        vec![("audit", 9), ("sink-a", 5), ("sink-b", 3)]
    );
    assert_eq!(cps.min_lsn().unwrap(), Some(3));

    // Never backward without force.
    match cps.set("sink-a", 4, false) {
        Err(LogError::CheckpointBackward {
            name,
            current: 5,
            requested: 4,
        }) => assert_eq!(name, "sink-a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cps.get("sink-a").unwrap().unwrap().lsn, 5);
    // Same lsn again is fine; forward is fine; force rewinds.
    assert_eq!(cps.set("sink-a", 5, false).unwrap().lsn, 5);
    assert_eq!(cps.set("sink-a", 7, false).unwrap().lsn, 7);
    assert_eq!(cps.set("sink-a", 2, true).unwrap().lsn, 2);
    assert_eq!(cps.get("sink-a").unwrap().unwrap().lsn, 2);
    assert_eq!(cps.min_lsn().unwrap(), Some(2));

    assert!(cps.delete("sink-b").unwrap());
    assert!(!cps.delete("sink-b").unwrap());
    assert_eq!(cps.get("sink-b").unwrap(), None);
    assert_eq!(
        names_and_lsns(&cps.list().unwrap()),
        vec![("audit", 9), ("sink-a", 2)]
    );

    // Names: 1 to 256 bytes.
    assert!(matches!(
        cps.set("", 1, false),
        Err(LogError::InvalidCheckpointName { .. })
    ));
    assert!(matches!(
        cps.get(&"x".repeat(257)),
        Err(LogError::InvalidCheckpointName { .. })
    ));
    assert_eq!(cps.set(&"x".repeat(256), 1, false).unwrap().lsn, 1);
    assert!(cps.delete(&"x".repeat(256)).unwrap());

    // Clones share the database; concurrent sets never move backward.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let cps = cps.clone();
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    match cps.set("race", i * 4 + t, false) {
                        Ok(c) => assert_eq!(c.lsn, i * 4 + t),
                        Err(LogError::CheckpointBackward {
                            current, requested, ..
                        }) => {
                            assert!(current > requested)
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(cps.get("race").unwrap().unwrap().lsn, 99);
    w.close().await.unwrap();
}

#[tokio::test]
async fn checkpoints_survive_close_reopen_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    append_range(&mut w, 1, 50, 5).await;
    w.flush().await.unwrap();
    let a = log.checkpoints().set("a", 20, false).unwrap();
    w.close().await.unwrap();
    drop(log);

    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.checkpoints().get("a").unwrap(), Some(a));
    append_range(&mut w, 51, 60, 5).await;
    w.flush().await.unwrap();
    let b = log.checkpoints().set("b", 55, false).unwrap();
    log.checkpoints().set("a", 40, false).unwrap();
    // Dropped without close.
    drop(w);
    drop(log);

    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 60);
    assert_eq!(log.checkpoints().get("b").unwrap(), Some(b));
    assert_eq!(log.checkpoints().get("a").unwrap().unwrap().lsn, 40);
    drop((log, w));

    // Without the log, e.g. for an admin command.
    let store = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        names_and_lsns(&store.list().unwrap()),
        vec![("a", 40), ("b", 55)]
    );
    assert!(matches!(
        ChangeLog::open(opts(dir.path(), 1024)),
        Err(LogError::AlreadyOpen { .. })
    ));
    assert!(store.delete("a").unwrap());
    drop(store);
    let (log, _w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(
        names_and_lsns(&log.checkpoints().list().unwrap()),
        vec![("b", 55)]
    );
}

// ---------------------------------------------------------------------------
// Child processes (for the lock and for crashes): the test binary runs
// itself with only `child_process_entry` selected.

const CHILD_MODE: &str = "SPILLWAY_LOG_TEST_CHILD_MODE";
const CHILD_DIR: &str = "SPILLWAY_LOG_TEST_CHILD_DIR";

fn run_child(mode: &str, dir: &Path) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .output()
        .unwrap()
}

fn summary_line(s: &LogSummary) -> String {
    format!(
        "SUMMARY oldest={} current={} segments={} usage={}",
        s.oldest_lsn, s.current_lsn, s.segments, s.disk_usage_bytes
    )
}

/// Does nothing unless started by `run_child`.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
    match mode.as_str() {
        "expect-locked" => {
            match ChangeLog::open(opts(&dir, 1024)) {
                Err(e @ LogError::AlreadyOpen { .. }) => {
                    assert!(e.to_string().contains("another spillway process"), "{e}");
                }
                other => panic!("expected AlreadyOpen, got {other:?}"),
            }
            assert!(matches!(
                CheckpointStore::open(&dir),
                Err(LogError::AlreadyOpen { .. })
            ));
            // Read-only inspection works meanwhile.
            let s = inspect(&dir).unwrap();
            assert!(s.checkpoints.is_empty());
            assert!(s.checkpoints_unavailable.is_some());
            println!("{}", summary_line(&s));
        }
        "expect-unlocked" => {
            let (log, w) = ChangeLog::open(opts(&dir, 1024)).unwrap();
            println!("COMMITTED {}", log.committed_lsn());
            drop((log, w));
        }
        "crash" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let (log, mut w) = ChangeLog::open(opts(&dir, 1024)).unwrap();
                append_range(&mut w, 1, 80, 10).await;
                w.flush().await.unwrap();
                log.checkpoints().set("crashy", 17, false).unwrap();
                log.checkpoints().set("other", 3, false).unwrap();
                log.checkpoints().set("crashy", 33, false).unwrap();
                // Die without running any destructor.
                std::process::exit(0);
            });
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[tokio::test]
async fn lock_excludes_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    append_range(&mut w, 1, 100, 10).await;
    w.flush().await.unwrap();
    log.trim_before(30).unwrap();
    let out = run_child("expect-locked", dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "SUMMARY oldest={} current=100 segments={} usage={}",
        log.oldest_lsn(),
        segment_bases(dir.path()).len(),
        log.disk_usage_bytes()
    );
    assert!(stdout.contains(&expected), "{stdout}\nexpected {expected}");
    w.close().await.unwrap();
    drop(log);

    let out = run_child("expect-unlocked", dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("COMMITTED 100"), "{stdout}");
}

#[tokio::test]
async fn checkpoints_survive_a_process_crash() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child("crash", dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The log can be inspected right after the crash; the checkpoints only
    // once the next open has repaired their database.
    let s = inspect(dir.path()).unwrap();
    assert_eq!(s.current_lsn, 80);
    assert!(s.checkpoints.is_empty());
    assert!(
        s.checkpoints_unavailable
            .as_deref()
            .is_some_and(|r| r.contains("repair")),
        "{s:?}"
    );
    let (log, w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    assert_eq!(log.committed_lsn(), 80);
    assert_eq!(log.checkpoints().get("crashy").unwrap().unwrap().lsn, 33);
    assert_eq!(log.checkpoints().min_lsn().unwrap(), Some(3));
    log.checkpoints().set("other", 70, false).unwrap();
    w.close().await.unwrap();
    drop(log);
    let s = inspect(dir.path()).unwrap();
    assert_eq!(s.checkpoints_unavailable, None);
    assert_eq!(
        names_and_lsns(&s.checkpoints),
        vec![("crashy", 33), ("other", 70)]
    );
}

// ---------------------------------------------------------------------------
// Retention

fn age_policy(max_age: Duration) -> RetentionPolicy {
    RetentionPolicy {
        max_age: Some(max_age),
        max_bytes: None,
    }
}

fn ts_of(lsn: u64) -> i64 {
    rec(lsn, false).timestamp_us
}

#[tokio::test]
async fn retention_by_age_deletes_old_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    append_range(&mut w, 1, 600, 5).await;
    w.flush().await.unwrap();
    let bases = segment_bases(dir.path());
    assert!(bases.len() > 8);
    let usage_before = log.disk_usage_bytes();
    let mut reader = log.reader(1).unwrap();
    reader.read_batch(3, usize::MAX).unwrap();

    // No limits: nothing happens.
    let report = log
        .apply_retention(&RetentionPolicy::default(), i64::MAX)
        .unwrap();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(report.oldest_lsn, 1);

    // Cut-off just after the first record of segment 3: segments 0..=2
    // are entirely older, segment 3 has newer records.
    let max_age = Duration::from_secs(60);
    let now = ts_of(bases[3] + 1) + max_age.as_micros() as i64;
    let report = log.apply_retention(&age_policy(max_age), now).unwrap();
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(report.oldest_lsn, bases[3]);
    assert_eq!(log.oldest_lsn(), bases[3]);
    assert_eq!(log.disk_usage_bytes(), usage_before - report.bytes_freed);
    assert_eq!(segment_bases(dir.path()), bases[3..].to_vec());
    assert_eq!(dir_bytes(dir.path()), log.disk_usage_bytes());
    // Idempotent.
    let again = log.apply_retention(&age_policy(max_age), now).unwrap();
    assert_eq!(again.segments_deleted, 0);
    // A segment whose newest record is exactly at the cut-off stays.
    let at_cutoff = ts_of(bases[4] - 1) + max_age.as_micros() as i64;
    assert_eq!(
        log.apply_retention(&age_policy(max_age), at_cutoff)
            .unwrap()
            .segments_deleted,
        0
    );
    assert_eq!(
        log.apply_retention(&age_policy(max_age), at_cutoff + 1)
            .unwrap()
            .segments_deleted,
        1
    );

    // A reader positioned in a deleted segment is told so.
    match reader.read_batch(10, usize::MAX) {
        Err(LogError::Trimmed {
            requested: 4,
            oldest,
        }) => assert_eq!(oldest, bases[4]),
        other => panic!("{other:?}"),
    }

    // Everything is old: every sealed segment goes, the active one stays.
    let report = log
        .apply_retention(&age_policy(Duration::ZERO), i64::MAX)
        .unwrap();
    assert_eq!(report.segments_deleted, bases.len() - 5);
    assert_eq!(segment_bases(dir.path()), vec![*bases.last().unwrap()]);
    assert!(matches!(read_all(&log, 1), Err(LogError::Trimmed { .. })));
    let all = read_all(&log, log.oldest_lsn()).unwrap();
    assert_eq!(all[0].lsn, *bases.last().unwrap());
    assert_eq!(all.last().unwrap().lsn, 600);
    w.close().await.unwrap();
}

#[tokio::test]
async fn retention_keeps_active_segment_and_invisible_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    // Only the active segment: nothing to delete.
    append_range(&mut w, 1, 5, 5).await;
    w.flush().await.unwrap();
    let all_limits = RetentionPolicy {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(0),
    };
    let report = log.apply_retention(&all_limits, i64::MAX).unwrap();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(read_all(&log, 1).unwrap().len(), 5);

    // An unfinished transaction spanning segments.
    append_range(&mut w, 6, 10, 5).await;
    for lsn in 11..=200 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    assert_eq!(log.committed_lsn(), 10);
    assert!(segment_bases(dir.path()).len() > 3);
    log.apply_retention(&all_limits, i64::MAX).unwrap();
    // The segment holding lsn 11 (not yet visible) and all after remain.
    assert!(log.oldest_lsn() <= 11);
    w.append(rec(201, true)).await.unwrap();
    w.flush().await.unwrap();
    let all = read_all(&log, 11).unwrap();
    assert_eq!(all.len(), 191);
    check_records(&all, 11);
    // Now visible: all but the active segment go.
    log.apply_retention(&all_limits, i64::MAX).unwrap();
    assert_eq!(segment_bases(dir.path()).len(), 1);
    w.close().await.unwrap();
}

#[tokio::test]
async fn checkpoint_protects_records_from_age_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    append_range(&mut w, 1, 600, 5).await;
    w.flush().await.unwrap();
    let bases = segment_bases(dir.path());
    let cps = log.checkpoints();
    let everything_old = age_policy(Duration::ZERO);

    // A consumer that has processed nothing protects everything.
    cps.set("new", 0, false).unwrap();
    assert_eq!(
        log.apply_retention(&everything_old, i64::MAX)
            .unwrap()
            .segments_deleted,
        0
    );
    assert!(cps.delete("new").unwrap());

    // The slowest consumer is in the middle of segment 2.
    let slow = bases[2] + 5;
    cps.set("slow", slow, false).unwrap();
    cps.set("fast", 590, false).unwrap();
    let report = log.apply_retention(&everything_old, i64::MAX).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(log.oldest_lsn(), bases[2]);
    // Every record the slow consumer has not processed is still there.
    let rest = read_all(&log, slow + 1).unwrap();
    assert_eq!(rest.len() as u64, 600 - slow);
    check_records(&rest, slow + 1);

    // A checkpoint on a segment's last record frees that segment.
    cps.set("slow", bases[4] - 1, false).unwrap();
    let report = log.apply_retention(&everything_old, i64::MAX).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(report.oldest_lsn, bases[4]);

    // Age still applies under the checkpoint: nothing is old enough here.
    cps.set("slow", 600, false).unwrap();
    let report = log
        .apply_retention(&age_policy(Duration::from_secs(3600)), ts_of(600))
        .unwrap();
    assert_eq!(report.segments_deleted, 0);

    // Manual trim ignores checkpoints.
    cps.set("slow", 0, true).unwrap();
    let report = log.trim_before(bases[6]).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(log.oldest_lsn(), bases[6]);
    assert_eq!(cps.get("slow").unwrap().unwrap().lsn, 0);
    w.close().await.unwrap();
}

#[tokio::test]
async fn max_bytes_overrides_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    append_range(&mut w, 1, 600, 5).await;
    w.flush().await.unwrap();
    let bases = segment_bases(dir.path());
    // Bytes of each segment with its index, oldest first.
    let sizes: Vec<u64> = bases
        .iter()
        .map(|b| {
            let seg = dir.path().join(format!("{b:020}.seg"));
            let idx = dir.path().join(format!("{b:020}.idx"));
            fs::metadata(seg).unwrap().len() + fs::metadata(idx).map_or(0, |m| m.len())
        })
        .collect();
    let total: u64 = sizes.iter().sum();
    assert_eq!(total, log.disk_usage_bytes());

    // A lagging consumer at lsn 10, reading.
    log.checkpoints().set("lagging", 10, false).unwrap();
    let mut reader = log.reader(11).unwrap();
    assert_eq!(reader.read_batch(2, usize::MAX).unwrap().len(), 2);
    // Age alone is held back by it (segment 0 ends after lsn 10).
    assert!(bases[1] > 11);
    let both = RetentionPolicy {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(total / 2),
    };
    let age_only = RetentionPolicy {
        max_bytes: None,
        ..both
    };
    assert_eq!(
        log.apply_retention(&age_only, i64::MAX)
            .unwrap()
            .segments_deleted,
        0
    );

    // The size limit goes past it, and no further than needed.
    let report = log.apply_retention(&both, i64::MAX).unwrap();
    let mut expect_n = 0;
    let mut left = total;
    while left > total / 2 {
        left -= sizes[expect_n];
        expect_n += 1;
    }
    assert_eq!(report.segments_deleted, expect_n);
    assert_eq!(report.bytes_freed, total - left);
    assert_eq!(log.disk_usage_bytes(), left);
    assert!(log.disk_usage_bytes() <= total / 2);
    assert_eq!(log.oldest_lsn(), bases[expect_n]);
    match reader.read_batch(10, usize::MAX) {
        Err(LogError::Trimmed {
            requested: 13,
            oldest,
        }) => assert_eq!(oldest, bases[expect_n]),
        other => panic!("{other:?}"),
    }
    // The checkpoint itself is untouched.
    assert_eq!(log.checkpoints().get("lagging").unwrap().unwrap().lsn, 10);

    // Under the limit: nothing more.
    assert_eq!(
        log.apply_retention(&both, i64::MAX)
            .unwrap()
            .segments_deleted,
        0
    );
    // A limit below the active segment: everything else goes.
    let report = log
        .apply_retention(
            &RetentionPolicy {
                max_age: None,
                max_bytes: Some(0),
            },
            0,
        )
        .unwrap();
    assert_eq!(report.segments_deleted, bases.len() - 1 - expect_n);
    assert_eq!(segment_bases(dir.path()), vec![*bases.last().unwrap()]);
    w.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Read-only inspection

/// Names, sizes and modification times of every file in `dir`.
fn dir_snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                m.len(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn inspect_matches_an_open_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();

    // A fresh log.
    let s = inspect(dir.path()).unwrap();
    assert_eq!(
        (s.oldest_lsn, s.current_lsn, s.segments),
        (1, 0, 1),
        "{s:?}"
    );
    assert_eq!(s.disk_usage_bytes, log.disk_usage_bytes());
    assert_eq!((s.oldest_timestamp_us, s.newest_timestamp_us), (None, None));

    append_range(&mut w, 1, 600, 5).await;
    // An unfinished transaction at the end (written, not visible).
    for lsn in 601..=640 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    log.trim_before(100).unwrap();
    log.checkpoints().set("sink", 300, false).unwrap();

    let before = dir_snapshot(dir.path());
    let s = inspect(dir.path()).unwrap();
    assert_eq!(dir_snapshot(dir.path()), before, "inspect changed files");
    let oldest = log.oldest_lsn();
    assert!(oldest > 1);
    assert_eq!(s.oldest_lsn, oldest);
    assert_eq!(s.current_lsn, log.committed_lsn());
    assert_eq!(s.current_lsn, 600);
    assert_eq!(s.segments, segment_bases(dir.path()).len());
    assert_eq!(s.disk_usage_bytes, log.disk_usage_bytes());
    assert_eq!(s.oldest_timestamp_us, Some(ts_of(oldest)));
    assert_eq!(
        s.newest_timestamp_us,
        Some(log.last_commit().unwrap().timestamp_us)
    );
    // The open log holds the checkpoint database.
    assert!(s.checkpoints.is_empty());
    assert!(s.checkpoints_unavailable.is_some());
    // inspect held no lock: the log carries on.
    append_range(&mut w, 641, 650, 5).await;
    w.flush().await.unwrap();
    assert_eq!(inspect(dir.path()).unwrap().current_lsn, 650);
    w.close().await.unwrap();
    drop(log);

    let before = dir_snapshot(dir.path());
    let s = inspect(dir.path()).unwrap();
    assert_eq!(dir_snapshot(dir.path()), before, "inspect changed files");
    assert_eq!(s.checkpoints_unavailable, None);
    assert_eq!(names_and_lsns(&s.checkpoints), vec![("sink", 300)]);
    let (log, w) = ChangeLog::open(opts(dir.path(), 2048)).unwrap();
    assert_eq!(log.committed_lsn(), s.current_lsn);
    assert_eq!(log.oldest_lsn(), s.oldest_lsn);
    assert_eq!(log.checkpoints().list().unwrap(), s.checkpoints);
    w.close().await.unwrap();
}

#[tokio::test]
async fn inspect_when_every_commit_was_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut w) = ChangeLog::open(opts(dir.path(), 1024)).unwrap();
    append_range(&mut w, 1, 30, 30).await;
    for lsn in 31..=200 {
        w.append(rec(lsn, false)).await.unwrap();
    }
    w.flush().await.unwrap();
    log.trim_before(u64::MAX).unwrap();
    let s = inspect(dir.path()).unwrap();
    assert_eq!(s.current_lsn, 30);
    assert_eq!(s.oldest_lsn, log.oldest_lsn());
    // The oldest segment holds no visible record; the last commit's time
    // comes from its header.
    if s.oldest_lsn > 30 {
        assert_eq!(s.oldest_timestamp_us, None);
    }
    assert_eq!(s.newest_timestamp_us, Some(ts_of(30)));
    w.close().await.unwrap();
}

#[test]
fn inspect_of_missing_or_empty_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = inspect(&missing).unwrap_err();
    assert!(matches!(err, LogError::NotALog { .. }), "{err:?}");
    assert!(err.to_string().contains("no change log in"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!missing.exists());

    let err = inspect(dir.path()).unwrap_err();
    assert!(matches!(err, LogError::NotALog { .. }), "{err:?}");
    assert!(err.to_string().contains("no segment files"), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(inspect(&file), Err(LogError::NotALog { .. })));
}
