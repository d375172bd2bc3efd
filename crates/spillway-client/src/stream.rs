//! Change streams: [`ChangeStreamBuilder`] (where to start, what to receive) and
//! [`ChangeStream`] (typed items, batches, automatic resume).

use crate::client::{ok_or_error, Client};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use spillway_core::{ChangeEvent, Event, MessageEvent, Operation, SchemaChangeEvent};
use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server's default `batch_size`: the most items one batch holds when none is set.
const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default for [`ChangeStreamBuilder::idle_timeout`]: the server sends a heartbeat every
/// ~10 s on an idle stream, so this much silence means the connection is dead.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One item of a change stream. Heartbeats are not items: the stream swallows them.
///
/// Deliberately **not** `#[non_exhaustive]`: a `match` over it without a wildcard arm is
/// what makes a consumer handle [`StreamItem::RequeryRequired`], and if a later version
/// adds another control event a consumer must act on, such a `match` stops compiling
/// instead of dropping the new event into `_ => {}`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A row change (insert, update, delete, truncate, snapshot read).
    Change(ChangeEvent),
    /// A table's columns changed (or were seen for the first time).
    SchemaChange(SchemaChangeEvent),
    /// A logical decoding message (`pg_logical_emit_message`).
    Message(MessageEvent),
    /// The position asked for is no longer retained: events `requested_lsn ..
    /// oldest_lsn` are gone. The consumer must rebuild its state from the source tables;
    /// the stream then continues at `oldest_lsn`.
    RequeryRequired {
        /// The lsn the stream asked for.
        requested_lsn: u64,
        /// The oldest lsn still retained; the next event has this lsn or a later one.
        oldest_lsn: u64,
    },
}

impl StreamItem {
    /// The event's lsn (`None` for [`StreamItem::RequeryRequired`]).
    pub fn lsn(&self) -> Option<u64> {
        match self {
            StreamItem::Change(c) => Some(c.lsn),
            StreamItem::SchemaChange(s) => Some(s.lsn),
            StreamItem::Message(m) => Some(m.lsn),
            StreamItem::RequeryRequired { .. } => None,
        }
    }

    /// The row change, when this is one.
    pub fn as_change(&self) -> Option<&ChangeEvent> {
        match self {
            StreamItem::Change(c) => Some(c),
            _ => None,
        }
    }

    /// The row change, when this is one.
    pub fn into_change(self) -> Option<ChangeEvent> {
        match self {
            StreamItem::Change(c) => Some(c),
            _ => None,
        }
    }
}

/// A point in time for [`ChangeStreamBuilder::from_timestamp`]: µs since the Unix epoch.
/// Made from a [`SystemTime`] or from an `i64` of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From µs since the Unix epoch (event timestamps are in this unit).
    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    /// µs since the Unix epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<i64> for Timestamp {
    fn from(us: i64) -> Timestamp {
        Timestamp(us)
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    Now,
    Beginning,
    Lsn(u64),
    Timestamp(i64),
    Consumer(String),
}

#[derive(Debug, Clone)]
struct Options {
    entities: Vec<String>,
    exclude_entities: Vec<String>,
    operations: Vec<Operation>,
    batch_size: Option<usize>,
    batch_timeout: Option<Duration>,
    reconnect: bool,
    max_reconnect_attempts: Option<u32>,
    idle_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

/// Configures a change stream; made by [`Client::stream_changes`]. Finish it with
/// `.await` (it implements [`IntoFuture`]) or [`ChangeStreamBuilder::start`].
///
/// The start position is one of [`from_lsn`](Self::from_lsn),
/// [`after_lsn`](Self::after_lsn), [`from_timestamp`](Self::from_timestamp),
/// [`from_beginning`](Self::from_beginning), [`from_now`](Self::from_now) (the default)
/// and [`consumer`](Self::consumer); the last one called wins.
#[derive(Debug)]
#[must_use = "a builder does nothing until it is awaited"]
pub struct ChangeStreamBuilder {
    client: Client,
    start: Start,
    opts: Options,
    error: Option<Error>,
    epoch: Option<String>,
}

impl ChangeStreamBuilder {
    pub(crate) fn new(client: Client) -> ChangeStreamBuilder {
        ChangeStreamBuilder {
            client,
            start: Start::Now,
            epoch: None,
            opts: Options {
                entities: Vec::new(),
                exclude_entities: Vec::new(),
                operations: Vec::new(),
                batch_size: None,
                batch_timeout: None,
                reconnect: true,
                max_reconnect_attempts: None,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                backoff_initial: DEFAULT_BACKOFF_INITIAL,
                backoff_max: DEFAULT_BACKOFF_MAX,
            },
            error: None,
        }
    }

    fn fail(mut self, message: String) -> Self {
        self.error.get_or_insert(Error::InvalidArgument(message));
        self
    }

    /// Starts at lsn `lsn`, inclusive (lsns start at 1).
    pub fn from_lsn(mut self, lsn: u64) -> Self {
        if lsn == 0 {
            return self.fail(
                "from_lsn(0): lsns start at 1; use from_beginning(), or after_lsn(checkpoint)"
                    .into(),
            );
        }
        self.start = Start::Lsn(lsn);
        self
    }

    /// The log epoch a [`from_lsn`](Self::from_lsn) / [`after_lsn`](Self::after_lsn)
    /// position belongs to, as [`ChangeStream::log_epoch`] reported it when the
    /// position was stored. When the server's log has handed those lsns out again
    /// since (a repair or a restored backup), the stream then starts where that
    /// happened, after a [`StreamItem::RequeryRequired`], instead of skipping.
    pub fn log_epoch(mut self, epoch: impl Into<String>) -> Self {
        let epoch = epoch.into();
        if epoch.is_empty() || epoch.len() > 16 || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.fail(format!(
                "log_epoch({epoch:?}): an epoch is the 16 hex digits ChangeStream::log_epoch gave"
            ));
        }
        self.epoch = Some(epoch);
        self
    }

    /// Starts right after `lsn` (a checkpoint: the last lsn processed). `after_lsn(0)`
    /// starts at lsn 1.
    pub fn after_lsn(mut self, lsn: u64) -> Self {
        self.start = Start::Lsn(lsn.saturating_add(1));
        self
    }

    /// Starts at the first event committed at or after `t` (a [`SystemTime`], or µs
    /// since the Unix epoch as `i64`).
    pub fn from_timestamp(mut self, t: impl Into<Timestamp>) -> Self {
        self.start = Start::Timestamp(t.into().as_micros());
        self
    }

    /// Starts at the oldest event still retained (a full replay).
    pub fn from_beginning(mut self) -> Self {
        self.start = Start::Beginning;
        self
    }

    /// Starts with the events committed from now on (the default).
    pub fn from_now(mut self) -> Self {
        self.start = Start::Now;
        self
    }

    /// Starts right after the checkpoint of consumer `name` (at the beginning when it
    /// has none). Checkpoints are stored with [`Client::checkpoint`]; the stream does
    /// not store them itself.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if name.is_empty() {
            return self.fail("consumer name is empty".into());
        }
        self.start = Start::Consumer(name);
        self
    }

    /// Only these entities: `schema.table` or bare `table`, `*` wildcards
    /// (`"commerce.*"`). Adds to earlier calls.
    pub fn entities<I, S>(mut self, entities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match entity_list(entities) {
            Ok(list) => self.opts.entities.extend(list),
            Err(e) => return self.fail(e),
        }
        self
    }

    /// Not these entities (same patterns as [`entities`](Self::entities)).
    pub fn exclude_entities<I, S>(mut self, entities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match entity_list(entities) {
            Ok(list) => self.opts.exclude_entities.extend(list),
            Err(e) => return self.fail(e),
        }
        self
    }

    /// Only changes with these operations. Adds to earlier calls.
    pub fn operations<I>(mut self, operations: I) -> Self
    where
        I: IntoIterator<Item = Operation>,
    {
        for op in operations {
            if !self.opts.operations.contains(&op) {
                self.opts.operations.push(op);
            }
        }
        self
    }

    /// The most events the server puts in one batch (1..=10000; server default 1000).
    /// [`ChangeStream::next_batch`] never returns more.
    pub fn batch_size(mut self, n: usize) -> Self {
        if n == 0 {
            return self.fail("batch_size must be at least 1".into());
        }
        self.opts.batch_size = Some(n);
        self
    }

    /// How long the server waits to fill a batch before sending a short one (whole
    /// milliseconds, up to 60 s; server default 0: send whatever is ready at once).
    pub fn batch_timeout(mut self, d: Duration) -> Self {
        self.opts.batch_timeout = Some(d);
        self
    }

    /// Whether to reconnect by itself when the connection breaks (default `true`). With
    /// `false`, a broken connection is an error and a server that ends the stream ends
    /// it for the caller too.
    pub fn reconnect(mut self, on: bool) -> Self {
        self.opts.reconnect = on;
        self
    }

    /// Gives up with [`Error::GaveUp`] after this many failed reconnection attempts in a
    /// row (default: never gives up).
    pub fn max_reconnect_attempts(mut self, n: u32) -> Self {
        self.opts.max_reconnect_attempts = Some(n.max(1));
        self
    }

    /// Treats the connection as dead when nothing, not even a heartbeat, arrives for this
    /// long (default 45 s; the server sends a heartbeat every ~10 s while idle).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        if d.is_zero() {
            return self.fail("idle_timeout must be more than zero".into());
        }
        self.opts.idle_timeout = d;
        self
    }

    /// Delay before the first reconnection attempt, doubled after each failure up to
    /// `max` (defaults 100 ms and 5 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.opts.backoff_initial = initial;
        self.opts.backoff_max = max.max(initial);
        self
    }

    /// Opens the stream: checks the arguments, resolves "now" to an lsn (one
    /// `GET /v1/status`), sends `GET /v1/changes` and waits for the answer's headers.
    /// Fails (without retrying) when the server cannot be reached or rejects the
    /// parameters.
    pub async fn start(self) -> Result<ChangeStream> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.epoch.is_some() && !matches!(self.start, Start::Lsn(_)) {
            return Err(Error::InvalidArgument(
                "log_epoch() goes with from_lsn() or after_lsn(): it says which epoch that lsn belongs to"
                    .into(),
            ));
        }
        let start = match self.start {
            // Pin "now" to a position so that a reconnect before the first event neither
            // misses what was committed meanwhile nor depends on when it happens.
            Start::Now => Start::Lsn(self.client.status().await?.current_lsn + 1),
            other => other,
        };
        let mut stream = ChangeStream {
            client: self.client,
            start,
            backoff: self.opts.backoff_initial,
            opts: self.opts,
            resume_at: None,
            epoch: self.epoch,
            epoch_start: None,
            last_received: None,
            last_delivered: None,
            conn: None,
            queue: VecDeque::new(),
            pending: VecDeque::new(),
            ended: false,
            reconnects: 0,
        };
        stream.conn = Some(open(&stream.client, stream.url(), stream.opts.idle_timeout).await?);
        Ok(stream)
    }
}

impl IntoFuture for ChangeStreamBuilder {
    type Output = Result<ChangeStream>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<ChangeStream>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

fn entity_list<I, S>(entities: I) -> std::result::Result<Vec<String>, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    entities
        .into_iter()
        .map(|e| {
            let e: String = e.into();
            let t = e.trim();
            if t.is_empty() || t.contains(',') {
                Err(format!(
                    "entity pattern `{e}`: give one non-empty `schema.table` or `table` per item"
                ))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Insert => "insert",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Truncate => "truncate",
        Operation::Read => "read",
    }
}

/// Sends `GET /v1/changes` and checks the answer's status and type; the answer's head
/// must come within `idle`.
async fn open(client: &Client, url: Url, idle: Duration) -> Result<Conn> {
    let send = client
        .request(Method::GET, url, "application/x-ndjson")
        .send();
    let resp = tokio::time::timeout(idle, send)
        .await
        .map_err(|_| Error::Idle(idle))?
        .map_err(Error::transport)?;
    let resp = ok_or_error(resp).await?;
    if let Some(ct) = resp.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        if !ct.contains("ndjson") && !ct.starts_with("application/json") {
            return Err(Error::Protocol(format!(
                "/v1/changes answered with content type `{ct}`, not application/x-ndjson"
            )));
        }
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let epoch = header("spillway-log-epoch");
    let epoch_start = header("spillway-log-epoch-start").and_then(|v| v.parse().ok());
    Ok(Conn {
        body: Box::pin(resp.bytes_stream()),
        buf: Vec::new(),
        epoch,
        epoch_start,
    })
}

type Body = Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One open `GET /v1/changes` response.
struct Conn {
    body: Body,
    /// Bytes of an incomplete line.
    buf: Vec<u8>,
    /// The server's log epoch when this response began (`Spillway-Log-Epoch`); taken
    /// over by the stream with the first line (see `ChangeStream::line`).
    epoch: Option<String>,
    /// That epoch's first lsn (`Spillway-Log-Epoch-Start`).
    epoch_start: Option<u64>,
}

/// What the stream has ready for the caller, in order.
enum Entry {
    /// A batch as the server flushed it (or the rest of one).
    Batch(VecDeque<StreamItem>),
    /// An error to report at this point (a line that does not parse; with reconnect
    /// off, the reason the connection ended).
    Failed(Error),
}

/// An open change stream: typed items in lsn order, resumed automatically after a broken
/// connection. Made by [`ChangeStreamBuilder`]. See the [crate docs](crate) for the
/// reconnection semantics.
///
/// [`next`](Self::next) and [`next_batch`](Self::next_batch) are cancellation safe: a
/// call dropped before it returns (in `tokio::select!`, under a timeout) loses nothing.
pub struct ChangeStream {
    client: Client,
    /// The original start (with "now" resolved to an lsn).
    start: Start,
    opts: Options,
    /// The lsn to ask for when reconnecting; `None`: ask for `start` again.
    resume_at: Option<u64>,
    /// The log epoch `resume_at` belongs to (sent as `epoch=`, so a log that handed
    /// those lsns out again moves the stream back instead of skipping).
    epoch: Option<String>,
    /// The first lsn of `epoch`, when known.
    epoch_start: Option<u64>,
    /// The lsn of the last event received (delivered or queued).
    last_received: Option<u64>,
    /// The lsn of the last event handed to the caller.
    last_delivered: Option<u64>,
    conn: Option<Conn>,
    queue: VecDeque<Entry>,
    /// Complete events of the batch being received.
    pending: VecDeque<StreamItem>,
    backoff: Duration,
    ended: bool,
    reconnects: u64,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream")
            .field("url", &self.client.url())
            .field("start", &self.start)
            .field("last_lsn", &self.last_delivered)
            .field("resume_at", &self.resume_at)
            .field("connected", &self.conn.is_some())
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl ChangeStream {
    /// The next item; `Ok(None)` only when the stream has ended for good, which happens
    /// only with [`reconnect(false)`](ChangeStreamBuilder::reconnect). Waits as long as
    /// it takes (use `tokio::time::timeout` for a deadline).
    ///
    /// An `Err` is either final for this call (the server rejected a reconnection, e.g.
    /// 401; [`Error::GaveUp`]) — calling again tries again — or a line that does not
    /// parse ([`Error::Decode`]), after which the stream goes on with the next line.
    pub async fn next(&mut self) -> Result<Option<StreamItem>> {
        loop {
            match self.queue.front_mut() {
                Some(Entry::Batch(batch)) => {
                    let item = batch.pop_front();
                    if batch.is_empty() {
                        self.queue.pop_front();
                    }
                    if let Some(item) = item {
                        if let Some(lsn) = item.lsn() {
                            self.last_delivered = Some(lsn);
                        }
                        return Ok(Some(item));
                    }
                }
                Some(Entry::Failed(_)) => {
                    if let Some(Entry::Failed(e)) = self.queue.pop_front() {
                        return Err(e);
                    }
                }
                None if self.ended => return Ok(None),
                None => self.fill().await?,
            }
        }
    }

    /// The next batch: the events the server flushed together (at most
    /// [`batch_size`](ChangeStreamBuilder::batch_size); if [`next`](Self::next) already
    /// took some, the rest). A [`StreamItem::RequeryRequired`] is always alone in its
    /// batch. Empty only when the stream has ended for good (see [`next`](Self::next)).
    ///
    /// Batch boundaries are those of the server's writes as far as HTTP preserves them: a
    /// batch never holds events of two server batches, but a large server batch can
    /// arrive as two.
    pub async fn next_batch(&mut self) -> Result<Vec<StreamItem>> {
        loop {
            match self.queue.pop_front() {
                Some(Entry::Batch(batch)) => {
                    if batch.is_empty() {
                        continue;
                    }
                    let batch: Vec<StreamItem> = batch.into();
                    if let Some(lsn) = batch.iter().rev().find_map(StreamItem::lsn) {
                        self.last_delivered = Some(lsn);
                    }
                    return Ok(batch);
                }
                Some(Entry::Failed(e)) => return Err(e),
                None if self.ended => return Ok(Vec::new()),
                None => self.fill().await?,
            }
        }
    }

    /// The lsn of the last event handed out by [`next`](Self::next) or
    /// [`next_batch`](Self::next_batch) (`None` before the first). Store it as a
    /// checkpoint once the event is processed.
    pub fn last_lsn(&self) -> Option<u64> {
        self.last_delivered
    }

    /// The server's log epoch the stream's position belongs to (`None` before the
    /// first line, or from a server without epochs). Store it with a checkpoint and
    /// pass it back with [`ChangeStreamBuilder::log_epoch`].
    pub fn log_epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// How many times the stream has reconnected.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The client the stream was made with (for checkpoints).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The `/v1/changes` URL for the current position.
    fn url(&self) -> Url {
        let mut url = self.client.endpoint(&["v1", "changes"]);
        {
            let mut q = url.query_pairs_mut();
            match (self.resume_at, &self.start) {
                (Some(lsn), _) => {
                    q.append_pair("from_lsn", &lsn.to_string());
                    if let Some(epoch) = &self.epoch {
                        q.append_pair("epoch", epoch);
                    }
                    &mut q
                }
                (None, &Start::Lsn(lsn)) => {
                    q.append_pair("from_lsn", &lsn.to_string());
                    if let Some(epoch) = &self.epoch {
                        q.append_pair("epoch", epoch);
                    }
                    &mut q
                }
                (None, Start::Timestamp(us)) => q.append_pair("from_timestamp", &us.to_string()),
                (None, Start::Beginning) => q.append_pair("from", "beginning"),
                (None, Start::Now) => q.append_pair("from", "now"),
                (None, Start::Consumer(name)) => q.append_pair("consumer", name),
            };
            let o = &self.opts;
            if !o.entities.is_empty() {
                q.append_pair("entities", &o.entities.join(","));
            }
            if !o.exclude_entities.is_empty() {
                q.append_pair("exclude_entities", &o.exclude_entities.join(","));
            }
            if !o.operations.is_empty() {
                let ops: Vec<&str> = o.operations.iter().map(|op| operation_name(*op)).collect();
                q.append_pair("operations", &ops.join(","));
            }
            if let Some(n) = o.batch_size {
                q.append_pair("batch_size", &n.to_string());
            }
            if let Some(t) = o.batch_timeout {
                q.append_pair("batch_timeout_ms", &t.as_millis().to_string());
            }
        }
        url
    }

    /// Reads until something is queued or the stream has ended.
    async fn fill(&mut self) -> Result<()> {
        while self.queue.is_empty() && !self.ended {
            let Some(conn) = self.conn.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let idle = self.opts.idle_timeout;
            match tokio::time::timeout(idle, conn.body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    self.backoff = self.opts.backoff_initial;
                    conn.buf.extend_from_slice(&chunk);
                    let mut buf = std::mem::take(&mut conn.buf);
                    self.parse_lines(&mut buf);
                    if let Some(conn) = self.conn.as_mut() {
                        conn.buf = buf;
                    }
                }
                Ok(Some(Err(e))) => self.lost(Some(Error::transport(e))),
                Ok(None) => self.lost(None),
                Err(_elapsed) => self.lost(Some(Error::Idle(idle))),
            }
        }
        Ok(())
    }

    /// The connection is gone: keep the complete events, drop a partial line.
    fn lost(&mut self, why: Option<Error>) {
        self.conn = None;
        self.flush_pending();
        if !self.opts.reconnect {
            if let Some(e) = why {
                self.queue.push_back(Entry::Failed(e));
            }
            self.ended = true;
        }
    }

    /// Reconnects at the resume position, with backoff, until it works, the server
    /// rejects the request (4xx) or the attempts run out.
    async fn reconnect(&mut self) -> Result<()> {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
            match open(&self.client, self.url(), self.opts.idle_timeout).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    failures += 1;
                    if self
                        .opts
                        .max_reconnect_attempts
                        .is_some_and(|max| failures >= max)
                    {
                        return Err(Error::GaveUp {
                            attempts: failures,
                            last: Box::new(e),
                        });
                    }
                }
            }
        }
    }

    /// Takes the complete lines out of `buf`. A server batch ends where a chunk ends at a
    /// line boundary.
    fn parse_lines(&mut self, buf: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            self.line(&buf[start..start + pos]);
            start += pos + 1;
        }
        buf.drain(..start);
        if buf.is_empty() {
            self.flush_pending();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // What this connection sends is in the server's current epoch — but only
        // from its first line on: when the server moved our position back (the
        // log handed our lsns out again), that line is the requery saying so, and
        // a connection lost before it must ask again with the old epoch.
        if let Some(conn) = self.conn.as_mut() {
            if let Some(epoch) = conn.epoch.take() {
                self.epoch = Some(epoch);
                self.epoch_start = conn.epoch_start;
            }
        }
        let item = match Event::parse(line) {
            Err(e) => {
                self.flush_pending();
                self.queue.push_back(Entry::Failed(Error::decode(line, e)));
                return;
            }
            Ok(Event::Heartbeat(_)) => return,
            Ok(Event::RequeryRequired(spillway_core::RequeryRequired {
                requested_lsn,
                oldest_lsn,
                log_epoch,
                ..
            })) => {
                // A gap the log itself records (at `requested_lsn`) begins an
                // epoch: positions from here on belong to it — unless it is an
                // old one, before the epoch this connection is in.
                if let Some(e) = log_epoch {
                    if self.epoch_start.is_none_or(|start| requested_lsn >= start) {
                        self.epoch = Some(e);
                        self.epoch_start = Some(requested_lsn);
                    }
                }
                self.flush_pending();
                self.queue.push_back(Entry::Batch(VecDeque::from([
                    StreamItem::RequeryRequired {
                        requested_lsn,
                        oldest_lsn,
                    },
                ])));
                self.resume_at = Some(oldest_lsn);
                // The stream goes on at `oldest_lsn`; when the log was
                // repaired or restored (`ahead_of_log`), those lsns may be at
                // or below what this stream received before: they are new
                // events, never duplicates to drop.
                self.last_received = oldest_lsn.checked_sub(1).filter(|l| *l > 0);
                return;
            }
            Ok(Event::Change(c)) => StreamItem::Change(c),
            Ok(Event::SchemaChange(s)) => StreamItem::SchemaChange(s),
            Ok(Event::Message(m)) => StreamItem::Message(m),
        };
        if let Some(lsn) = item.lsn() {
            if self.last_received.is_some_and(|last| lsn <= last) {
                return; // already received before a reconnect
            }
            self.last_received = Some(lsn);
            self.resume_at = Some(lsn + 1);
        }
        self.pending.push_back(item);
        if self.pending.len() >= self.opts.batch_size.unwrap_or(DEFAULT_BATCH_SIZE) {
            self.flush_pending();
        }
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            self.queue
                .push_back(Entry::Batch(std::mem::take(&mut self.pending)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_763_683_200_123_456);
        assert_eq!(Timestamp::from(t).as_micros(), 1_763_683_200_123_456);
        let before = UNIX_EPOCH - Duration::from_micros(5);
        assert_eq!(Timestamp::from(before).as_micros(), -5);
        assert_eq!(Timestamp::from(7i64), Timestamp::from_micros(7));
    }

    #[test]
    fn decode_errors_are_one_short_line() {
        let line = format!("{{\"type\":\"change\",\"x\":\"{}\n", "é".repeat(500));
        let err = serde_json::from_str::<Event>(&line).unwrap_err();
        let e = Error::decode(line.as_bytes(), err);
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.chars().count() < 400, "{text}");
    }
}
