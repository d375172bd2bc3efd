//! Measures append and full-read throughput of the change log.
//!
//! `cargo run --release -p spillway-log --example append_bench -- [records] [payload_bytes] [dir]`
//! (defaults: 1,000,000 records of 300 bytes in a temporary directory).

use std::time::Instant;

use spillway_log::{AppendRecord, ChangeLog, LogError, LogOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let payload_bytes: usize = args.next().map_or(Ok(300), |a| a.parse())?;
    let tmp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);

    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let (log, append_secs) = rt.block_on(async {
        let (log, mut writer) = ChangeLog::open(LogOptions::new(&dir))?;
        let first = writer.next_lsn();
        let payload = vec![b'x'; payload_bytes];
        let start = Instant::now();
        for lsn in first..first + records {
            writer
                .append(AppendRecord {
                    lsn,
                    timestamp_us: lsn as i64,
                    // Transactions of 10 rows.
                    tx_end: lsn % 10 == 0 || lsn == first + records - 1,
                    pg_commit_lsn: lsn,
                    pg_end_lsn: lsn,
                    payload: payload.clone(),
                })
                .await?;
        }
        writer.flush().await?;
        let secs = start.elapsed().as_secs_f64();
        writer.close().await?;
        Ok::<_, LogError>((log, secs))
    })?;
    let mb = (records as f64 * payload_bytes as f64) / 1e6;
    println!(
        "append: {records} records x {payload_bytes} B in {append_secs:.3} s = {:.0} records/s ({:.0} MB/s payload), durable",
        records as f64 / append_secs,
        mb / append_secs
    );

    let start = Instant::now();
    let mut reader = log.reader(0)?;
    let mut read = 0u64;
    let mut bytes = 0usize;
    loop {
        let batch = reader.read_batch(4096, 8 << 20)?;
        if batch.is_empty() {
            break;
        }
        read += batch.len() as u64;
        bytes += batch.iter().map(|r| r.payload.len()).sum::<usize>();
    }
    let read_secs = start.elapsed().as_secs_f64();
    println!(
        "read:   {read} records ({:.0} MB) in {read_secs:.3} s = {:.0} records/s",
        bytes as f64 / 1e6,
        read as f64 / read_secs
    );
    let stats = log.writer_stats();
    println!(
        "writer: {} fsyncs ({:.0} ms in fsync), {} segment rolls; disk usage {:.1} MB",
        stats.fsyncs,
        stats.fsync_micros as f64 / 1e3,
        stats.rolls,
        log.disk_usage_bytes() as f64 / 1e6
    );
    Ok(())
}
