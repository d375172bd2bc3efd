//! The `s3` sink's [`Sink`] implementation (behaviour in the crate docs).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutOptions, PutPayload};
use spillway_core::encoding::utc_date;
use spillway_sinks::{Sink, SinkError, SinkRecord};

use crate::config::{Location, S3SinkConfig};

fn fatal(m: impl std::fmt::Display) -> SinkError {
    SinkError::Fatal(format!("s3 sink: {m}"))
}

fn transient(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Transient(format!("s3 sink: {what}: {e}"))
}

/// Store errors by consequence: refused credentials and missing buckets
/// need an operator; everything else (network, 5xx, throttling) is retried.
fn store_error(what: &str, e: object_store::Error) -> SinkError {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => fatal(format!(
            "{what}: {e}; check the credentials and the bucket policy"
        )),
        object_store::Error::NotFound { .. } => {
            fatal(format!("{what}: {e}; does the bucket exist?"))
        }
        other => {
            // The S3 client reports refusals as generic errors: read the code.
            let text = other.to_string();
            let refused = [
                "403 Forbidden",
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
            ]
            .iter()
            .any(|c| text.contains(c));
            if refused {
                fatal(format!("{what}: the store refused the request ({text}); check the credentials and the bucket policy"))
            } else if text.contains("<Code>NoSuchBucket</Code>") {
                fatal(format!(
                    "{what}: the bucket does not exist ({text}); create it first"
                ))
            } else {
                transient(what, text)
            }
        }
    }
}

/// Path characters that would change the layout become `_`.
fn segment(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect()
}

/// The object name (relative to the URL's prefix) for records of `entity`
/// committed on `timestamp_us`'s date, covering lsns `first..=last`.
pub fn object_name(
    entity: Option<&str>,
    timestamp_us: i64,
    first: u64,
    last: u64,
    gzip: bool,
) -> String {
    let dir = match entity {
        Some(e) => {
            let (schema, table) = e.split_once('.').unwrap_or(("", e));
            format!("{}/{}", segment(schema), segment(table))
        }
        None => "_control".to_owned(),
    };
    let ext = if gzip { "jsonl.gz" } else { "jsonl" };
    format!(
        "{dir}/date={}/{first:020}-{last:020}.{ext}",
        utc_date(timestamp_us)
    )
}

/// Records of one object: table (`None`: control) and commit date.
type GroupKey = (Option<String>, String);

/// The `s3` sink.
pub struct S3Sink {
    config: S3SinkConfig,
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the store ("" for none).
    prefix: String,
    /// Set after a start or a failed attempt: the next batch may replay
    /// objects that exist already (see the crate docs).
    check_existing: bool,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl S3Sink {
    /// Validates `config` and builds the store client (nothing is sent).
    pub fn new(config: &S3SinkConfig) -> Result<S3Sink, SinkError> {
        config.validate()?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match config.location()? {
            Location::S3 { bucket, prefix } => {
                // Few, short client-side retries: the sink runtime retries
                // forever with its own backoff and shows the state meanwhile.
                let retry = object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: std::time::Duration::from_secs(15),
                    ..Default::default()
                };
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false)
                    .with_retry(retry);
                if let Some(r) = &config.region {
                    b = b.with_region(r);
                } else if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    b = b.with_region("us-east-1");
                }
                if let Some(e) = &config.endpoint {
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                if let (Some(k), Some(s)) = (&config.access_key_id, &config.secret_access_key) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
                if let Some(t) = &config.session_token {
                    b = b.with_token(t);
                }
                let store = b
                    .build()
                    .map_err(|e| fatal(format!("invalid S3 settings: {e}")))?;
                (Arc::new(store), prefix)
            }
            Location::File { dir } => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    fatal(format!("cannot create directory {}: {e}", dir.display()))
                })?;
                // fsync each object (and its directory) before `put` returns.
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| fatal(format!("{}: {e}", dir.display())))?
                    .with_fsync(true);
                (Arc::new(store), String::new())
            }
        };
        Ok(S3Sink {
            config: config.clone(),
            store,
            prefix,
            check_existing: true,
        })
    }

    /// The store (for reading back).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The full key of `name`.
    pub fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Every object under the URL's prefix, by name (relative to the
    /// prefix), with its content (gunzipped): for tests and checks by hand.
    pub async fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, SinkError> {
        let mut names = Vec::new();
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let at = if dir.is_empty() {
                None
            } else {
                Some(self.key(&dir))
            };
            let at = match (&at, self.prefix.is_empty()) {
                (None, false) => Some(ObjectPath::from(self.prefix.as_str())),
                _ => at,
            };
            let listing = self
                .store
                .list_with_delimiter(at.as_ref())
                .await
                .map_err(|e| store_error("listing", e))?;
            let strip = |p: &ObjectPath| {
                let s = p.to_string();
                match self.prefix.is_empty() {
                    true => s,
                    false => s
                        .strip_prefix(&format!("{}/", self.prefix))
                        .unwrap_or(&s)
                        .to_owned(),
                }
            };
            dirs.extend(listing.common_prefixes.iter().map(strip));
            names.extend(listing.objects.iter().map(|o| strip(&o.location)));
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let bytes = self
                .store
                .get_opts(&self.key(&name), object_store::GetOptions::default())
                .await
                .map_err(|e| store_error(&format!("reading {name}"), e))?
                .bytes()
                .await
                .map_err(|e| store_error(&format!("reading {name}"), e))?;
            let content = if name.ends_with(".gz") {
                let mut plain = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&bytes[..]),
                    &mut plain,
                )
                .map_err(|e| fatal(format!("{name}: not gzip: {e}")))?;
                plain
            } else {
                bytes.to_vec()
            };
            out.push((name, content));
        }
        Ok(out)
    }

    /// Names of the objects in `dir` (relative to the prefix), by first lsn.
    async fn existing(&self, dir: &str) -> Result<BTreeMap<u64, u64>, SinkError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.key(dir)))
            .await
            .map_err(|e| store_error(&format!("listing {dir}"), e))?;
        let mut out = BTreeMap::new();
        for o in listing.objects {
            let Some(name) = o.location.filename() else {
                continue;
            };
            let stem = name.split('.').next().unwrap_or("");
            if let Some((a, b)) = stem.split_once('-') {
                if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                    out.insert(a, b);
                }
            }
        }
        Ok(out)
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        // Group by (entity, date), keeping log order inside each group.
        let mut groups: Vec<(GroupKey, Vec<&SinkRecord>)> = Vec::new();
        let mut index: HashMap<GroupKey, usize> = HashMap::new();
        for r in batch {
            let key = (r.entity.clone(), utc_date(r.timestamp_us));
            let i = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(r);
        }
        let mut listings: HashMap<String, BTreeMap<u64, u64>> = HashMap::new();
        let mut overlapped = false;
        for ((entity, _), records) in &groups {
            let mut rest: &[&SinkRecord] = records;
            while let Some(first) = rest.first() {
                let mut cut = rest.len();
                if self.check_existing {
                    let name = object_name(
                        entity.as_deref(),
                        first.timestamp_us,
                        first.lsn,
                        first.lsn,
                        false,
                    );
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
                    if !listings.contains_key(&dir) {
                        let found = self.existing(&dir).await?;
                        listings.insert(dir.clone(), found);
                    }
                    let listing = listings.get(&dir);
                    // An object written before holds this lsn: its events are
                    // stored already (a replay) — skip them, keep its name.
                    let holder = listing
                        .and_then(|l| l.range(..=first.lsn).next_back())
                        .filter(|(_, &last)| last >= first.lsn);
                    if let Some((_, &last)) = holder {
                        let skip = rest.iter().position(|r| r.lsn > last).unwrap_or(rest.len());
                        rest = &rest[skip..];
                        overlapped = true;
                        continue;
                    }
                    // Never write across the start of an existing object.
                    if let Some((&next, _)) = listing.and_then(|l| l.range(first.lsn + 1..).next())
                    {
                        cut = rest
                            .iter()
                            .position(|r| r.lsn >= next)
                            .unwrap_or(rest.len());
                    }
                }
                let (chunk, tail) = rest.split_at(cut.max(1));
                self.put(entity.as_deref(), chunk).await?;
                rest = tail;
            }
        }
        // Past the replayed range once a batch overlapped nothing.
        self.check_existing = overlapped;
        Ok(())
    }

    async fn put(&self, entity: Option<&str>, records: &[&SinkRecord]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        let name = object_name(
            entity,
            first.timestamp_us,
            first.lsn,
            last.lsn,
            self.config.gzip,
        );
        let mut body = Vec::with_capacity(records.iter().map(|r| r.value.len() + 1).sum());
        for r in records {
            body.extend_from_slice(&r.value);
            body.push(b'\n');
        }
        if self.config.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&body)
                .and_then(|()| gz.finish())
                .map(|b| body = b)
                .map_err(|e| fatal(format!("gzip: {e}")))?;
        }
        let key = self.key(&name);
        self.store
            .put_opts(&key, PutPayload::from(body), PutOptions::default())
            .await
            .map_err(|e| store_error(&format!("writing {key}"), e))?;
        tracing::debug!(object = %key, records = records.len(), "s3 object written");
        Ok(())
    }
}

impl Sink for S3Sink {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn deliver(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        match self.write(batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.check_existing = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_763_683_200_000_000), "2025-11-21");
        assert_eq!(utc_date(951_782_400_000_000), "2000-02-29");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(
            object_name(Some("commerce.users"), 1_763_683_200_000_000, 5, 17, false),
            "commerce/users/date=2025-11-21/00000000000000000005-00000000000000000017.jsonl"
        );
        assert_eq!(
            object_name(None, 0, 1, 1, true),
            "_control/date=1970-01-01/00000000000000000001-00000000000000000001.jsonl.gz"
        );
        assert_eq!(
            object_name(Some("a/b.c/d"), 0, 1, 2, false),
            "a_b/c_d/date=1970-01-01/00000000000000000001-00000000000000000002.jsonl"
        );
    }

    #[test]
    fn bad_config_is_one_line() {
        for (url, want) in [
            ("http://x/y", "not s3://"),
            ("s3://A_B/x", "bucket"),
            ("file://relative/x", "absolute"),
        ] {
            let e = S3Sink::new(&S3SinkConfig::new(url))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{e}");
        }
        let mut c = S3SinkConfig::new("s3://bucket/p");
        c.access_key_id = Some("k".into());
        assert!(S3Sink::new(&c).unwrap_err().to_string().contains("both"));
        c.secret_access_key = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
