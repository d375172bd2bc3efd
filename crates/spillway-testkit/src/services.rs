//! Real brokers and object stores for tests and the benchmark: each is a
//! child process on a free loopback port with its data in a temporary
//! directory, stopped (and its data removed) on drop. `stop` + `start_again`
//! simulate an outage: the same port and the same data come back.
//!
//! Binaries are found, in order, from an environment variable
//! (`SPILLWAY_NATS_SERVER`, `SPILLWAY_TANSU`, `SPILLWAY_S3S_FS`), the
//! workspace's `.tools/` (what `make deps-services` installs), the cache
//! (`$SPILLWAY_TOOL_CACHE/bin`, default `~/.cache/spillway/tools/bin`) (slow `cargo install` builds are kept
//! there across clones), and `PATH`. A missing binary fails the test with the
//! make target that installs it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, send_signal, KitResult};

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Finds a service binary: `$env`, then the given workspace-relative
/// paths, then the tool cache, then `PATH`.
pub fn find_tool(name: &str, env: &str, workspace_paths: &[&str]) -> KitResult<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!("{env}={} is not a file", p.display()));
    }
    let root = workspace_root();
    let mut candidates: Vec<PathBuf> = workspace_paths.iter().map(|p| root.join(p)).collect();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(
            PathBuf::from(home)
                .join(".cache/spillway/tools/bin")
                .join(name),
        );
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!("`{name}` not found (set {env}, or run `make deps-services` to install it)")
    })
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) -> KitResult<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited ({status}) before listening on {port}: {}",
                tail(log)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not listen on {port} within 60 s: {}",
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a log file (for error messages).
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A server process started from a command line, restartable on the same
/// port with the same data directory.
pub struct Service {
    what: &'static str,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Extra ports that must listen before it counts as started.
    wait_ports: Vec<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Service {
    /// Starts `program args` (with `envs`), logging to `<dir>/server.log`,
    /// and waits until `port` (and every one of `wait_ports`) accepts
    /// connections. `{dir}` in an argument or an environment value is the
    /// service's temporary directory.
    pub fn start(
        what: &'static str,
        program: PathBuf,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        port: u16,
        wait_ports: Vec<u16>,
        dir: tempfile::TempDir,
    ) -> KitResult<Service> {
        let d = dir.path().display().to_string();
        let args = args.into_iter().map(|a| a.replace("{dir}", &d)).collect();
        let envs = envs
            .into_iter()
            .map(|(k, v)| (k, v.replace("{dir}", &d)))
            .collect();
        let mut s = Service {
            what,
            program,
            args,
            envs,
            port,
            wait_ports,
            dir,
            child: None,
        };
        s.start_again()?;
        Ok(s)
    }

    /// The temporary directory (data, `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far (last lines).
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"))
    }

    /// Starts the process again (after [`Service::stop`]) on the same port
    /// and data, and waits until it listens.
    pub fn start_again(&mut self) -> KitResult<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: cannot open its log: {e}", self.what))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("{}: log: {e}", self.what))?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} ({}): {e}",
                    self.what,
                    self.program.display()
                )
            })?;
        for port in std::iter::once(self.port).chain(self.wait_ports.clone()) {
            if let Err(e) = wait_for_port(port, &mut child, self.what, &log_path) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp(prefix: &str) -> KitResult<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))
}

/// A NATS server with JetStream (`nats-server -js`), storage in its
/// temporary directory.
pub struct NatsServer {
    /// The process.
    pub service: Service,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free port.
    pub fn start() -> KitResult<NatsServer> {
        NatsServer::start_with_args(&[])
    }

    /// Starts `nats-server -js` on a free port with extra arguments (e.g.
    /// `--auth TOKEN`).
    pub fn start_with_args(extra: &[&str]) -> KitResult<NatsServer> {
        let bin = find_tool(
            "nats-server",
            "SPILLWAY_NATS_SERVER",
            &[".tools/nats/bin/nats-server"],
        )?;
        let port = free_port();
        let args = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-sd",
            "{dir}/js",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let service = Service::start(
            "nats-server",
            bin,
            args,
            Vec::new(),
            port,
            Vec::new(),
            temp("spillway-nats-")?,
        )?;
        Ok(NatsServer { service })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.service.port)
    }
}

/// One message of a JetStream stream, as read back by [`read_jetstream`].
#[derive(Debug, Clone)]
pub struct JetStreamMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// The `Nats-Msg-Id` header ("" if none).
    pub msg_id: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Every message of `stream` on the server at `url`, in stream order
/// (empty if the stream does not exist yet).
pub async fn read_jetstream(url: &str, stream: &str) -> KitResult<Vec<JetStreamMessage>> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let Ok(mut s) = js.get_stream(stream).await else {
        return Ok(Vec::new());
    };
    let state = s
        .info()
        .await
        .map_err(|e| format!("stream info: {e}"))?
        .state
        .clone();
    let mut out = Vec::new();
    for sequence in state.first_sequence.max(1)..=state.last_sequence {
        let Ok(m) = s.get_raw_message(sequence).await else {
            continue; // deleted
        };
        let msg_id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(JetStreamMessage {
            sequence,
            subject: m.subject.to_string(),
            msg_id,
            payload: m.payload.to_vec(),
        });
    }
    Ok(out)
}

/// A Kafka-protocol broker: `tansu broker` with in-memory storage (its
/// data does not survive a restart: outages are simulated with
/// [`Tansu::pause`] / [`Tansu::resume`], which keep it).
pub struct Tansu {
    /// The broker process.
    pub service: Service,
    /// The TLS terminator in front of it, for [`Tansu::start_tls`].
    pub tls: Option<Service>,
    /// The address clients bootstrap from (`127.0.0.1:<port>`).
    pub bootstrap: String,
    paused: bool,
}

fn tansu_bin() -> KitResult<PathBuf> {
    find_tool("tansu", "SPILLWAY_TANSU", &[".tools/bin/tansu"])
}

impl Tansu {
    /// Starts a broker on a free port.
    pub fn start() -> KitResult<Tansu> {
        let port = free_port();
        let service = Tansu::broker(port, port)?;
        Ok(Tansu {
            service,
            tls: None,
            bootstrap: format!("127.0.0.1:{port}"),
            paused: false,
        })
    }

    /// Starts a broker reachable only through TLS with client-certificate
    /// checking: `stunnel` on a free port, with `pki`'s server certificate,
    /// accepts clients whose certificate the CA signed and forwards to the
    /// broker, which advertises the stunnel port.
    pub fn start_tls(pki: &crate::pki::TestPki) -> KitResult<Tansu> {
        let plain = free_port();
        let tls_port = free_port();
        let service = Tansu::broker(plain, tls_port)?;
        let dir = temp("spillway-stunnel-")?;
        let conf = dir.path().join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\nsyslog = no\ndebug = 4\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                pki.server_cert.display(),
                pki.server_key.display(),
                pki.ca_cert.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let stunnel = find_tool("stunnel4", "SPILLWAY_STUNNEL", &[])
            .or_else(|_| find_tool("stunnel", "SPILLWAY_STUNNEL", &[]))
            .map_err(|_| {
                "stunnel not found (apt-get install stunnel4, or `make deps-services`)".to_string()
            })?;
        let tls = Service::start(
            "stunnel",
            stunnel,
            vec![conf.display().to_string()],
            Vec::new(),
            tls_port,
            Vec::new(),
            dir,
        )?;
        Ok(Tansu {
            service,
            tls: Some(tls),
            bootstrap: format!("127.0.0.1:{tls_port}"),
            paused: false,
        })
    }

    fn broker(port: u16, advertised: u16) -> KitResult<Service> {
        let args = vec![
            "broker".to_string(),
            "--listener-url".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url".into(),
            format!("tcp://127.0.0.1:{advertised}"),
            "--storage-engine".into(),
            "memory://tansu/".into(),
        ];
        Service::start(
            "tansu",
            tansu_bin()?,
            args,
            vec![("RUST_LOG".into(), "warn".into())],
            port,
            Vec::new(),
            temp("spillway-tansu-")?,
        )
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered, like a broker that hangs or a network partition.
    pub fn pause(&mut self) {
        if let Some(pid) = self.service.pid() {
            send_signal(pid, "STOP");
            self.paused = true;
        }
    }

    /// Resumes a paused broker (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(pid) = self.service.pid() {
            send_signal(pid, "CONT");
            self.paused = false;
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
    }
}

/// An S3-compatible server (`s3s-fs`, which checks request signatures)
/// storing into its temporary directory; a bucket is a directory there.
pub struct S3Server {
    /// The process.
    pub service: Service,
    /// Access key id clients must sign with.
    pub access_key: String,
    /// Secret key clients must sign with.
    pub secret_key: String,
}

impl S3Server {
    /// Starts `s3s-fs` on a free port with the bucket `bucket`.
    pub fn start(bucket: &str) -> KitResult<S3Server> {
        let bin = find_tool("s3s-fs", "SPILLWAY_S3S_FS", &[".tools/bin/s3s-fs"])?;
        let port = free_port();
        let dir = temp("spillway-s3-")?;
        std::fs::create_dir_all(dir.path().join("data").join(bucket))
            .map_err(|e| format!("create bucket directory: {e}"))?;
        let (access_key, secret_key) = (
            "spillway-test".to_string(),
            "spillway-test-secret".to_string(),
        );
        let args = vec![
            "--host".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--access-key".into(),
            access_key.clone(),
            "--secret-key".into(),
            secret_key.clone(),
            "{dir}/data".into(),
        ];
        let service = Service::start("s3s-fs", bin, args, Vec::new(), port, Vec::new(), dir)?;
        Ok(S3Server {
            service,
            access_key,
            secret_key,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.service.port)
    }
}
