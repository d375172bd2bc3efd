//! Change streams: [`ChangeStreamBuilder`] (where to start, what to receive) and
//! [`ChangeStream`] (row changes, or every item; batches; automatic resume).
//!
//! The stream's state lives in `Inner`, driven by one boxed future at a time that owns
//! it; [`ChangeStream`] keeps that future across calls, which is what makes every
//! method cancellation safe and lets it implement [`futures_util::Stream`].

use crate::client::{ok_or_error, Client};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use spillway_core::pattern::TablePattern;
use spillway_core::query::{parse_epoch, ChangesQuery, Start, DEFAULT_BATCH_SIZE};
use spillway_core::{ChangeEvent, Event, MessageEvent, Operation, SchemaChangeEvent};
use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[derive(Debug, Clone)]
struct Options {
    entities: Vec<TablePattern>,
    exclude_entities: Vec<TablePattern>,
    operations: Vec<Operation>,
    batch_size: Option<usize>,
    batch_timeout: Option<Duration>,
    reconnect: bool,
    max_reconnect_attempts: Option<u32>,
    idle_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    /// End the stream once everything committed when it opened was read.
    until_caught_up: bool,
}

impl Client {
    /// Starts building a change stream; finish with `.await` (or
    /// [`ChangeStreamBuilder::start`]). See the [crate docs](crate) for the semantics.
    pub fn stream_changes(&self) -> ChangeStreamBuilder {
        ChangeStreamBuilder::new(self.clone())
    }
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
                until_caught_up: false,
            },
            error: None,
        }
    }

    fn fail(mut self, message: String) -> Self {
        self.error.get_or_insert(Error::InvalidArgument(message));
        self
    }

    /// Starts at lsn `lsn`, inclusive. Lsns start at 1, so `from_lsn(0)` (a consumer
    /// with no checkpoint yet, as reference 004 writes it) starts at lsn 1: the first
    /// there ever was — if retention has removed it, the stream says so with a requery.
    pub fn from_lsn(mut self, lsn: u64) -> Self {
        self.start = Start::Lsn(lsn.max(1));
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

    /// Reads everything committed up to the moment the stream opens, then ends:
    /// [`next`](ChangeStream::next) returns `Ok(None)` once the stream has passed that
    /// point (reference 004's audit-log loop, an export, a test). With filters, the
    /// lsns the filter skips count as passed: the server says how far it has read. The
    /// last batch may hold events committed after the stream opened.
    pub fn until_caught_up(mut self) -> Self {
        self.opts.until_caught_up = true;
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
        let needs_status = self.start == Start::Now || self.opts.until_caught_up;
        let current = if needs_status {
            Some(self.client.status().await?.current_lsn)
        } else {
            None
        };
        let start = match (self.start, current) {
            // Pin "now" to a position so that a reconnect before the first event neither
            // misses what was committed meanwhile nor depends on when it happens.
            (Start::Now, Some(current)) => Start::Lsn(current + 1),
            (other, _) => other,
        };
        let client = self.client.clone();
        let mut inner = Inner {
            client: self.client,
            start,
            backoff: self.opts.backoff_initial,
            opts: self.opts,
            resume_at: None,
            epoch: self.epoch,
            epoch_start: None,
            last_received: None,
            end_at: None,
            server_current: None,
            conn: None,
            queue: VecDeque::new(),
            pending: VecDeque::new(),
            ended: false,
            reconnects: 0,
        };
        if inner.opts.until_caught_up {
            inner.end_at = current;
        }
        inner.conn = Some(open(&inner.client, inner.url(), inner.opts.idle_timeout).await?);
        Ok(ChangeStream {
            state: std::sync::Mutex::new(State {
                view: inner.view(),
                inner: Some(Box::new(inner)),
                fut: None,
                waiters: Vec::new(),
                ready: VecDeque::new(),
                last_delivered: None,
                error: None,
            }),
            client,
        })
    }
}

impl IntoFuture for ChangeStreamBuilder {
    type Output = Result<ChangeStream>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<ChangeStream>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

fn entity_list<I, S>(entities: I) -> std::result::Result<Vec<TablePattern>, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    entities
        .into_iter()
        .map(|e| {
            let e: String = e.into();
            TablePattern::parse(e.trim()).map_err(|bad| format!("entities: {bad}"))
        })
        .collect()
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

/// One element of a received batch: an item, or how far the server had read the log
/// when it sent a heartbeat (everything up to there was sent or filtered out).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // items are the common case; boxing each would cost more
enum Piece {
    Item(StreamItem),
    Scanned(u64),
}

/// What the stream has ready for the caller, in order.
enum Entry {
    /// A batch as the server flushed it (or the rest of one).
    Batch(VecDeque<Piece>),
    /// An error to report at this point (a line that does not parse; with reconnect
    /// off, the reason the connection ended).
    Failed(Error),
}

/// The state of a change stream (see the module docs).
struct Inner {
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
    /// The lsn of the last event received, or the last position a heartbeat said was
    /// read (delivered or queued).
    last_received: Option<u64>,
    /// With `until_caught_up`: the log's last lsn when the stream opened.
    end_at: Option<u64>,
    /// The log's last committed lsn, as the last heartbeat said.
    server_current: Option<u64>,
    conn: Option<Conn>,
    queue: VecDeque<Entry>,
    /// Complete events of the batch being received.
    pending: VecDeque<Piece>,
    backoff: Duration,
    ended: bool,
    reconnects: u64,
}

/// What [`ChangeStream`]'s accessors report, copied out of `Inner` after every call.
#[derive(Debug, Clone, Default)]
struct View {
    epoch: Option<String>,
    reconnects: u64,
    server_current: Option<u64>,
    url: String,
}

impl Inner {
    fn view(&self) -> View {
        View {
            epoch: self.epoch.clone(),
            reconnects: self.reconnects,
            server_current: self.server_current,
            url: self.client.url().to_string(),
        }
    }

    /// The last lsn this stream has passed: received, or skipped by the server's filter.
    fn position(&self) -> Option<u64> {
        self.last_received.or(match self.start {
            Start::Lsn(l) => l.checked_sub(1),
            _ => None,
        })
    }

    fn caught_up(&self) -> bool {
        self.end_at
            .is_some_and(|end| self.position().unwrap_or(0) >= end)
    }

    /// The next batch as received (or the error in its place); `None` once the stream
    /// has ended for good.
    async fn next_pieces(&mut self) -> Result<Option<VecDeque<Piece>>> {
        loop {
            match self.queue.pop_front() {
                Some(Entry::Batch(batch)) => {
                    if !batch.is_empty() {
                        return Ok(Some(batch));
                    }
                }
                Some(Entry::Failed(e)) => return Err(e),
                // Caught up only once nothing received is held back: complete lines of
                // a chunk that ended mid-line wait in `pending`.
                None if self.ended || (self.caught_up() && self.pending.is_empty()) => {
                    return Ok(None)
                }
                None => self.fill().await?,
            }
        }
    }

    /// The `/v1/changes` query for the current position.
    fn query(&self) -> ChangesQuery {
        let start = match self.resume_at {
            Some(lsn) => Start::Lsn(lsn),
            None => self.start.clone(),
        };
        let epoch = match start {
            Start::Lsn(_) => self.epoch.as_deref().and_then(parse_epoch),
            _ => None,
        };
        let o = &self.opts;
        ChangesQuery {
            start,
            epoch,
            entities: o.entities.clone(),
            exclude_entities: o.exclude_entities.clone(),
            operations: (!o.operations.is_empty()).then(|| o.operations.clone()),
            batch_size: o.batch_size,
            batch_timeout_ms: o
                .batch_timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            // Reading to the end: the server's heartbeat says at once where it is.
            heartbeat_ms: o.until_caught_up.then_some(100),
        }
    }

    /// The `/v1/changes` URL for the current position.
    fn url(&self) -> Url {
        let mut url = self.client.endpoint(&["v1", "changes"]);
        url.set_query(Some(&self.query().to_query_string()));
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
            Ok(Event::Heartbeat(hb)) => {
                self.server_current = Some(hb.current_lsn);
                // Everything up to `scanned_lsn` was sent before this line or left out
                // by the filter: the position moves on (and a reconnect need not read
                // those records again).
                if let Some(scanned) = hb.scanned_lsn {
                    if self.position().is_none_or(|p| scanned > p) {
                        self.last_received = Some(scanned);
                        self.resume_at = Some(scanned + 1);
                        self.pending.push_back(Piece::Scanned(scanned));
                        self.flush_pending();
                    }
                }
                return;
            }
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
                self.queue
                    .push_back(Entry::Batch(VecDeque::from([Piece::Item(
                        StreamItem::RequeryRequired {
                            requested_lsn,
                            oldest_lsn,
                        },
                    )])));
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
        self.pending.push_back(Piece::Item(item));
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

type PiecesFuture =
    Pin<Box<dyn Future<Output = (Box<Inner>, Result<Option<VecDeque<Piece>>>)> + Send>>;

/// An open change stream, in lsn order, resumed automatically after a broken
/// connection. Made by [`ChangeStreamBuilder`]. See the [crate docs](crate) for the
/// reconnection semantics.
///
/// Two levels, as reference 004 reads them:
///
/// - **Row changes**: [`next`](Self::next), [`next_batch`](Self::next_batch), the
///   [`futures_util::Stream`] impl and blocking iteration ([`Changes`]) yield
///   [`ChangeEvent`]s only. When events are missing (`requery_required`: retention
///   trimmed them, the log was repaired…) they return [`Error::RequeryRequired`]
///   instead — an outcome a `?` cannot drop by accident; the stream goes on at its
///   `oldest_lsn` with the next call.
/// - **Every item**: [`next_item`](Self::next_item) and
///   [`next_item_batch`](Self::next_item_batch) also yield schema changes, logical
///   messages and the requery as a [`StreamItem`].
///
/// Every method is cancellation safe: a call dropped before it returns (in
/// `tokio::select!`, under a timeout) loses nothing; the next call goes on with it.
///
/// The methods take `&self` (reference 004 calls `next_batch` on a `let stream`); the
/// stream is meant for one consumer, but calls from several tasks are safe: each item
/// goes to one of them.
pub struct ChangeStream {
    state: std::sync::Mutex<State>,
    client: Client,
}

/// The consumer side of a stream: the future that owns `Inner` while it reads, and what
/// it read that was not handed out yet.
struct State {
    /// `None` while `fut` owns it.
    inner: Option<Box<Inner>>,
    fut: Option<PiecesFuture>,
    /// Tasks waiting on `fut` besides the one that polled it last.
    waiters: Vec<std::task::Waker>,
    /// Pieces received and not handed out yet.
    ready: VecDeque<Piece>,
    /// The lsn of the last event handed out, or of the last position the server said it
    /// had read past it.
    last_delivered: Option<u64>,
    view: View,
    /// Why the blocking iterator stopped.
    error: Option<Error>,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("ChangeStream")
            .field("url", &st.view.url)
            .field("last_lsn", &st.last_delivered)
            .field("log_epoch", &st.view.epoch)
            .field("reconnects", &st.view.reconnects)
            .finish_non_exhaustive()
    }
}

impl State {
    fn poll_pieces(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<VecDeque<Piece>>>> {
        if self.fut.is_none() {
            let Some(mut inner) = self.inner.take() else {
                return Poll::Ready(Ok(None));
            };
            self.fut = Some(Box::pin(async move {
                let r = inner.next_pieces().await;
                (inner, r)
            }));
        }
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        let Poll::Ready((inner, result)) = fut.as_mut().poll(cx) else {
            if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                self.waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        };
        self.fut = None;
        for w in self.waiters.drain(..) {
            w.wake();
        }
        self.view = inner.view();
        self.inner = Some(inner);
        Poll::Ready(result)
    }

    /// Hands out the next item of `ready`, moving the position past heartbeats.
    fn pop_item(&mut self) -> Option<StreamItem> {
        while let Some(piece) = self.ready.pop_front() {
            match piece {
                // `Inner` emits these only beyond its position.
                Piece::Scanned(lsn) => self.last_delivered = Some(lsn),
                Piece::Item(item) => {
                    if let Some(lsn) = item.lsn() {
                        self.last_delivered = Some(lsn);
                    }
                    // After a requery the position is just before where the stream goes
                    // on (maybe below what was handed out before: a rewound log).
                    if let StreamItem::RequeryRequired { oldest_lsn, .. } = &item {
                        self.last_delivered = oldest_lsn.checked_sub(1);
                    }
                    return Some(item);
                }
            }
        }
        None
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<StreamItem>>> {
        loop {
            if let Some(item) = self.pop_item() {
                return Poll::Ready(Ok(Some(item)));
            }
            match self.poll_pieces(cx) {
                Poll::Ready(Ok(Some(batch))) => self.ready.extend(batch),
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_item_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Vec<StreamItem>>>> {
        loop {
            let mut batch = Vec::new();
            while let Some(item) = self.pop_item() {
                batch.push(item);
            }
            if !batch.is_empty() {
                return Poll::Ready(Ok(Some(batch)));
            }
            match self.poll_pieces(cx) {
                Poll::Ready(Ok(Some(pieces))) => self.ready.extend(pieces),
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<ChangeEvent>>> {
        loop {
            match self.poll_item(cx) {
                Poll::Ready(Ok(Some(StreamItem::Change(c)))) => return Poll::Ready(Ok(Some(c))),
                Poll::Ready(Ok(Some(StreamItem::SchemaChange(_) | StreamItem::Message(_)))) => {}
                Poll::Ready(Ok(Some(StreamItem::RequeryRequired {
                    requested_lsn,
                    oldest_lsn,
                }))) => {
                    return Poll::Ready(Err(Error::RequeryRequired {
                        requested_lsn,
                        oldest_lsn,
                    }))
                }
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ChangeStream {
    /// The next row change; `Ok(None)` only when the stream has ended for good: with
    /// [`until_caught_up`](ChangeStreamBuilder::until_caught_up) once it has read that
    /// far, or with [`reconnect(false)`](ChangeStreamBuilder::reconnect) when the
    /// connection ends. Schema changes and logical messages are passed over (see
    /// [`next_item`](Self::next_item)). Waits as long as it takes (use
    /// `tokio::time::timeout` for a deadline).
    ///
    /// # Errors
    /// [`Error::RequeryRequired`] when events are missing before the next one: rebuild
    /// from the source tables, then call again (the stream continues at `oldest_lsn`).
    /// [`Error::Decode`] for a line that does not parse (the stream goes on after it).
    /// Otherwise an error final for this call (the server rejected a reconnection, e.g.
    /// 401; [`Error::GaveUp`]); calling again tries again.
    pub async fn next(&self) -> Result<Option<ChangeEvent>> {
        std::future::poll_fn(|cx| self.lock().poll_change(cx)).await
    }

    /// The next batch of row changes: those the server flushed together (at most
    /// [`batch_size`](ChangeStreamBuilder::batch_size); if [`next`](Self::next) already
    /// took some, the rest), never empty; `None` when the stream has ended for good.
    ///
    /// # Errors
    /// As [`next`](Self::next); a requery is never in a batch with changes.
    pub async fn next_batch(&self) -> Result<Option<Vec<ChangeEvent>>> {
        loop {
            let Some(items) = self.next_item_batch().await? else {
                return Ok(None);
            };
            let mut changes = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    StreamItem::Change(c) => changes.push(c),
                    StreamItem::SchemaChange(_) | StreamItem::Message(_) => {}
                    StreamItem::RequeryRequired {
                        requested_lsn,
                        oldest_lsn,
                    } => {
                        return Err(Error::RequeryRequired {
                            requested_lsn,
                            oldest_lsn,
                        })
                    }
                }
            }
            if !changes.is_empty() {
                return Ok(Some(changes));
            }
        }
    }

    /// The next item of any kind (row change, schema change, logical message, or the
    /// [`StreamItem::RequeryRequired`] saying events are missing); `Ok(None)` when the
    /// stream has ended for good (see [`next`](Self::next)).
    ///
    /// # Errors
    /// As [`next`](Self::next), except that a requery is an item here.
    pub async fn next_item(&self) -> Result<Option<StreamItem>> {
        std::future::poll_fn(|cx| self.lock().poll_item(cx)).await
    }

    /// The next batch of items of any kind as the server flushed it (see
    /// [`next_batch`](Self::next_batch)); a [`StreamItem::RequeryRequired`] is always
    /// alone in its batch. Batch boundaries are those of the server's writes as far as
    /// HTTP preserves them: a batch never holds events of two server batches, but a
    /// large server batch can arrive as two.
    ///
    /// # Errors
    /// As [`next_item`](Self::next_item).
    pub async fn next_item_batch(&self) -> Result<Option<Vec<StreamItem>>> {
        std::future::poll_fn(|cx| self.lock().poll_item_batch(cx)).await
    }

    /// How far the stream has got: the lsn of the last event handed out, or further when
    /// the server said that everything up to a later lsn was left out by the filter
    /// (its heartbeats carry that). Store it as a checkpoint once what came before is
    /// processed; `current_lsn() - last_lsn()` is 0 when a consumer is caught up, filtered
    /// or not. `None` before anything was handed out.
    pub fn last_lsn(&self) -> Option<u64> {
        self.lock().last_delivered
    }

    /// The log's last committed lsn as the server's last heartbeat said (`None` before
    /// one came).
    pub fn server_current_lsn(&self) -> Option<u64> {
        self.lock().view.server_current
    }

    /// The server's log epoch the stream's position belongs to (`None` before the
    /// first line, or from a server without epochs). Store it with a checkpoint and
    /// pass it back with [`ChangeStreamBuilder::log_epoch`].
    pub fn log_epoch(&self) -> Option<String> {
        self.lock().view.epoch.clone()
    }

    /// How many times the stream has reconnected.
    pub fn reconnects(&self) -> u64 {
        self.lock().view.reconnects
    }

    /// The client the stream was made with (for checkpoints).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Why the blocking iteration ([`Changes`]) stopped early (a requery, a final
    /// error), if it did. Iterate with `for change in &stream` to be able to ask
    /// afterwards.
    pub fn take_error(&self) -> Option<Error> {
        self.lock().error.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic cannot leave `State` half-changed in a way that matters: take it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl futures_util::Stream for ChangeStream {
    type Item = Result<ChangeEvent>;

    /// Row changes as [`ChangeStream::next`] yields them; `None` when it returns
    /// `Ok(None)`.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.lock().poll_change(cx).map(Result::transpose)
    }
}

impl ChangeStream {
    /// One step of the blocking iterator (see [`Changes`]).
    fn blocking_next(&self) -> Option<ChangeEvent> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if self.lock().error.is_some() {
            return None;
        }
        let handle = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => h,
            _ => {
                self.lock().error = Some(Error::InvalidArgument(
                    "blocking iteration over a ChangeStream needs a multi-threaded tokio runtime; use `while let Some(change) = stream.next().await?` instead".into(),
                ));
                return None;
            }
        };
        let result = tokio::task::block_in_place(|| {
            handle.block_on(std::future::poll_fn(|cx| self.lock().poll_change(cx)))
        });
        match result {
            Ok(change) => change,
            Err(e) => {
                self.lock().error = Some(e);
                None
            }
        }
    }
}

/// Blocking iteration over row changes: `for change in stream` (as reference 004 writes
/// it), or `for change in &stream` to ask [`ChangeStream::take_error`] afterwards.
///
/// Each step blocks the thread it runs on (`block_in_place`), so it needs a
/// multi-threaded tokio runtime; on any other it stops at once with an error. It stops at
/// the first requery ([`Error::RequeryRequired`]) or final error, which
/// [`Changes::take_error`] / [`ChangeStream::take_error`] then return. Inside async code
/// the async [`ChangeStream::next`] is the better choice: it reports both in place.
#[derive(Debug)]
pub struct Changes<S> {
    stream: S,
}

impl<S: std::borrow::Borrow<ChangeStream>> Changes<S> {
    /// Why the iteration stopped early, if it did.
    pub fn take_error(&mut self) -> Option<Error> {
        self.stream.borrow().take_error()
    }
}

impl<S: std::borrow::Borrow<ChangeStream>> Iterator for Changes<S> {
    type Item = ChangeEvent;

    fn next(&mut self) -> Option<ChangeEvent> {
        self.stream.borrow().blocking_next()
    }
}

impl IntoIterator for ChangeStream {
    type Item = ChangeEvent;
    type IntoIter = Changes<ChangeStream>;

    fn into_iter(self) -> Self::IntoIter {
        Changes { stream: self }
    }
}

impl<'a> IntoIterator for &'a mut ChangeStream {
    type Item = ChangeEvent;
    type IntoIter = Changes<&'a ChangeStream>;

    fn into_iter(self) -> Self::IntoIter {
        Changes { stream: self }
    }
}

impl<'a> IntoIterator for &'a ChangeStream {
    type Item = ChangeEvent;
    type IntoIter = Changes<&'a ChangeStream>;

    fn into_iter(self) -> Self::IntoIter {
        Changes { stream: self }
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
