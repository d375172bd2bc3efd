//! Throwaway servers for tests, the demo and the benchmark: a real PostgreSQL cluster
//! (initdb into a temporary directory, a free port on loopback, `wal_level = logical`),
//! removed when dropped.
//!
//! Binaries: `SPILLWAY_PG_BIN` (a directory holding `initdb` and `postgres`) when set,
//! otherwise the newest `/usr/lib/postgresql/*/bin`. When running as root the server runs
//! as the `postgres` user (PostgreSQL refuses to run as root).

pub mod pki;
pub mod services;

use spillway_postgres::{ConnectConfig, PgConnection, PgError};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How clients authenticate against the throwaway cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No password (local tests).
    Trust,
    /// SCRAM-SHA-256 with this password for the `postgres` role.
    Scram(String),
    /// MD5 with this password for the `postgres` role.
    Md5(String),
}

/// Options for [`PgCluster::start`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Directory with `initdb`/`postgres`; `None` = discover.
    pub bin_dir: Option<PathBuf>,
    /// Authentication method.
    pub auth: Auth,
    /// Serve TLS with a self-signed certificate (needs `openssl` on PATH).
    pub tls: bool,
    /// `wal_level` (tests of the preflight use `replica`).
    pub wal_level: String,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            bin_dir: None,
            auth: Auth::Trust,
            tls: false,
            wal_level: "logical".into(),
            extra_conf: Vec::new(),
        }
    }
}

/// A running throwaway PostgreSQL.
pub struct PgCluster {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// The server's binaries.
    pub bin_dir: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    password: Option<String>,
}

/// Errors of the harness, as strings: tests just fail with them.
pub type KitResult<T> = Result<T, String>;

/// The directory with PostgreSQL's server binaries.
pub fn find_pg_bin() -> KitResult<PathBuf> {
    if let Ok(dir) = std::env::var("SPILLWAY_PG_BIN") {
        let p = PathBuf::from(dir);
        if p.join("initdb").exists() {
            return Ok(p);
        }
        return Err(format!("SPILLWAY_PG_BIN={} holds no initdb", p.display()));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "postgresql server not installed; run `make deps` (apt-get install postgresql)"
                .to_string()
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb; run `make deps`".to_string())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres"))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

impl PgCluster {
    /// initdb + start; waits until the server accepts connections.
    pub fn start(opts: PgOptions) -> KitResult<PgCluster> {
        let bin_dir = match opts.bin_dir.clone() {
            Some(b) => b,
            None => find_pg_bin()?,
        };
        let run_as = if is_root() {
            Some(postgres_ids().ok_or("running as root but there is no `postgres` user to run the server as; install postgresql (make deps)")?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("spillway-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).ok();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown: {e}"))?;
        }
        let data = dir.path().join("data");
        let password = match &opts.auth {
            Auth::Trust => None,
            Auth::Scram(p) | Auth::Md5(p) => Some(p.clone()),
        };
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(match &opts.auth {
                Auth::Trust => "--auth=trust",
                Auth::Scram(_) => "--auth=scram-sha-256",
                Auth::Md5(_) => "--auth=md5",
            });
        if let Some(pw) = &password {
            let pwfile = dir.path().join("pwfile");
            std::fs::write(&pwfile, pw).map_err(|e| e.to_string())?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).ok();
            }
            initdb.arg(format!("--pwfile={}", pwfile.display()));
        }
        run_quiet(initdb, run_as, "initdb")?;
        let mut conf = vec![
            format!("wal_level = {}", opts.wal_level),
            "max_wal_senders = 20".into(),
            "max_replication_slots = 20".into(),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", dir.path().display()),
            // fsync off keeps throwaway clusters fast; synchronous_commit stays on (the
            // default) so a commit's WAL is flushed — and visible to walsenders — at once.
            "fsync = off".into(),
            "full_page_writes = off".into(),
            "shared_buffers = 128MB".into(),
            "max_connections = 100".into(),
            "logging_collector = off".into(),
            "wal_sender_timeout = 60s".into(),
            "password_encryption = 'scram-sha-256'".into(),
        ];
        if opts.auth == Auth::Md5(password.clone().unwrap_or_default()) {
            conf.push("password_encryption = 'md5'".into());
        }
        if opts.tls {
            make_cert(dir.path(), &data, run_as)?;
            conf.push("ssl = on".into());
        }
        conf.extend(opts.extra_conf.iter().cloned());
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        text.push('\n');
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text).map_err(|e| e.to_string())?;
        if let Auth::Md5(_) = opts.auth {
            // initdb wrote scram-sha-256 only if asked; make both host lines md5
            let hba = data.join("pg_hba.conf");
            let t = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
            std::fs::write(&hba, t.replace("scram-sha-256", "md5")).map_err(|e| e.to_string())?;
        }
        let mut cluster = PgCluster {
            port: 0,
            bin_dir,
            dir,
            child: None,
            run_as,
            password,
        };
        cluster.spawn()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) -> KitResult<()> {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("server.log"))
                .map_err(|e| e.to_string())?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid))
                    .ok();
            }
            let mut cmd = Command::new(self.bin_dir.join("postgres"));
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(port.to_string());
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            if let Some((uid, gid)) = self.run_as {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start postgres: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("postgres exited with {status}: {}", self.server_log_tail());
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && self.ready(port) {
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return Err(format!(
                        "postgres did not start in 30s: {}",
                        self.server_log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(last_err)
    }

    fn ready(&self, port: u16) -> bool {
        let cfg = self.connect_config_for(port, "postgres");
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(_) => return false,
        };
        rt.block_on(async {
            match PgConnection::connect(&cfg, false).await {
                Ok(c) => {
                    c.close().await;
                    true
                }
                Err(_) => false,
            }
        })
    }

    /// The last lines of the server log, for error messages.
    pub fn server_log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn connect_config_for(&self, port: u16, db: &str) -> ConnectConfig {
        let mut c = ConnectConfig::parse(&format!(
            "postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable"
        ))
        .unwrap_or_else(|_| unreachable!("static dsn"));
        c.password = self.password.clone();
        c
    }

    /// A DSN for database `db` (password included when the cluster has one).
    pub fn dsn(&self, db: &str) -> String {
        match &self.password {
            Some(p) => format!(
                "postgres://postgres:{p}@127.0.0.1:{}/{db}?sslmode=disable",
                self.port
            ),
            None => format!(
                "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
                self.port
            ),
        }
    }

    /// Parsed DSN for database `db`.
    pub fn connect_config(&self, db: &str) -> ConnectConfig {
        self.connect_config_for(self.port, db)
    }

    /// Opens a SQL session on database `db`.
    pub async fn connect(&self, db: &str) -> Result<PgConnection, PgError> {
        PgConnection::connect(&self.connect_config(db), false).await
    }

    /// Runs SQL (several statements allowed) on database `db`.
    pub async fn execute(&self, db: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut c = self.connect(db).await?;
        let rows = c.simple_query(sql).await;
        c.close().await;
        rows
    }

    /// Creates database `db`.
    pub async fn create_database(&self, db: &str) -> Result<(), PgError> {
        self.execute(
            "postgres",
            &format!(
                "CREATE DATABASE {}",
                spillway_postgres::wire::quote_ident(db)
            ),
        )
        .await
        .map(|_| ())
    }

    /// Stops the server (fast shutdown) and starts it again on the same port.
    pub fn restart(&mut self) -> KitResult<()> {
        self.stop();
        self.spawn()
    }

    /// Immediate shutdown (`SIGQUIT`: every backend, walsenders included, exits at
    /// once, as in a crash; the next start runs crash recovery), then starts the
    /// server again on the same port.
    pub fn restart_immediate(&mut self) -> KitResult<()> {
        self.stop_with("QUIT");
        self.spawn()
    }

    /// Fast shutdown; waits for the postmaster to exit.
    pub fn stop(&mut self) {
        self.stop_with("INT");
    }

    fn stop_with(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), signal);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The temporary directory (socket, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a signal (`INT`, `TERM`, `KILL`) to a process. std has no signal API and the
/// workspace forbids unsafe code, so this runs `kill`.
pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" line, first field = real uid.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn run_quiet(mut cmd: Command, run_as: Option<(u32, u32)>, what: &str) -> KitResult<()> {
    if let Some((uid, gid)) = run_as {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A throwaway CA (`root.crt` in the temp dir) and a server certificate it signed, for
/// `localhost` and `127.0.0.1`.
fn make_cert(tmp: &Path, data: &Path, run_as: Option<(u32, u32)>) -> KitResult<()> {
    pki::TestPki::create(tmp)?;
    for f in ["server.key", "server.crt"] {
        std::fs::copy(tmp.join(f), data.join(f)).map_err(|e| e.to_string())?;
    }
    let key = data.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).ok();
        std::os::unix::fs::chown(data.join("server.crt"), Some(uid), Some(gid)).ok();
    }
    Ok(())
}
