//! A private etcd for tests: free loopback ports, a temporary data directory, stopped when
//! dropped (or, for [`EtcdServer::shared`], when the test process exits).
//!
//! It runs the `etcd` binary of Debian's `etcd-server` package (`apt-get install etcd-server`),
//! found on `PATH`, in `/usr/bin` or at `MICRO_TEST_ETCD`. When there is none, tests skip with a
//! message, or fail when `MICRO_TEST_REQUIRE_SERVICES=1` (as CI sets it).
//!
//! ```no_run
//! use micro_registry_etcd::testing::EtcdServer;
//! use micro_registry_etcd::EtcdRegistry;
//!
//! # fn run() -> micro_core::Result<()> {
//! let Some(etcd) = EtcdServer::shared() else { return Ok(()) }; // skipped, and said why
//! let registry = EtcdRegistry::new(etcd.options())?;
//! # Ok(())
//! # }
//! ```
//!
//! Everything listens on 127.0.0.1 only. etcd is started through a small `sh` wrapper that
//! holds the read end of a pipe from the test process: when the test process ends, however it
//! ends, the pipe closes and the wrapper stops etcd, so no etcd outlives its tests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::EtcdOptions;

/// The path of the etcd binary, when it is not `etcd` on `PATH` or `/usr/bin/etcd`.
pub const ETCD_BIN_ENV: &str = "MICRO_TEST_ETCD";

/// How long etcd may take to answer its health check after being started.
const STARTUP: Duration = Duration::from_secs(30);

/// How long etcd may take to exit after being told to.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// Starts etcd (`$2...`) and stops it when standard input closes; removes `$1` (if not empty)
/// once etcd has exited. Background jobs of a non-interactive shell read /dev/null, hence the
/// copy of standard input on descriptor 3.
const WRAPPER: &str = r#"cleanup=$1; shift
exec 3<&0
"$@" </dev/null &
pid=$!
( cat <&3 >/dev/null; kill "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
status=$?
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
exit $status
"#;

/// TLS on etcd's client port. Every file is PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// etcd's certificate (`--cert-file`); it should name `127.0.0.1` or the domain clients use.
    pub cert_file: PathBuf,
    /// Its key (`--key-file`).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (`--client-cert-auth`).
    pub client_ca_file: Option<PathBuf>,
}

/// One etcd process on loopback, with its ports and data directory.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    /// Holds `data/` and `etcd.log`.
    root: PathBuf,
    /// Removes `root` on drop; `None` for the shared server, whose wrapper removes it.
    owned_dir: Option<tempfile::TempDir>,
    tls: Option<ServerTls>,
    /// Its member name and the `--initial-cluster` it starts in (its own peer URL alone, when
    /// it is not part of an [`EtcdCluster`]).
    name: String,
    initial_cluster: Option<String>,
    process: Mutex<Option<Running>>,
}

/// Several etcd members on loopback forming one cluster, each stopped when dropped: for tests
/// of a member that loses its leader.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each is healthy (the cluster has a leader).
    pub fn start(size: usize) -> io::Result<EtcdCluster> {
        let binary = Self::binary_or_fail()?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let dir = tempfile::Builder::new().prefix("micro-etcd-").tempdir()?;
            let [client_port, peer_port, metrics_port] = free_ports()?;
            members.push(EtcdServer {
                binary: binary.clone(),
                client_port,
                peer_port,
                metrics_port,
                root: dir.path().to_path_buf(),
                owned_dir: Some(dir),
                tls: None,
                name: format!("m{i}"),
                initial_cluster: None,
                process: Mutex::new(None),
            });
        }
        let cluster: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let cluster = cluster.join(",");
        for m in &mut members {
            m.initial_cluster = Some(cluster.clone());
        }
        // No member is healthy before a quorum runs: start them all, then wait for each.
        for m in &members {
            m.spawn(false)?;
        }
        for m in &members {
            m.wait_healthy()?;
        }
        Ok(EtcdCluster { members })
    }

    /// The members, in the order they were started.
    pub fn members(&self) -> &[EtcdServer] {
        &self.members
    }

    /// A new cluster, or `None` (after saying why) when etcd is not installed and tests may
    /// skip. Panics when etcd is required but missing, or when the cluster does not start.
    pub fn start_or_skip(size: usize) -> Option<EtcdCluster> {
        EtcdServer::present_or_skip()?;
        match Self::start(size) {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!("starting a private etcd cluster of {size}: {e}"),
        }
    }

    fn binary_or_fail() -> io::Result<PathBuf> {
        EtcdServer::binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "etcd is not installed (apt-get install etcd-server)",
            )
        })
    }
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// Dropping it stops etcd.
    stdin: Option<ChildStdin>,
}

/// Whether tests must fail, rather than skip, when etcd is missing
/// (`MICRO_TEST_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

impl EtcdServer {
    /// The etcd binary: `MICRO_TEST_ETCD` when set (`None` if it is not a file), else `etcd`
    /// on `PATH`, else `/usr/bin/etcd`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(ETCD_BIN_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path)).filter(|p| p.is_file());
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    }

    /// Starts a new etcd, owned by the caller and stopped when dropped.
    pub fn start() -> io::Result<EtcdServer> {
        Self::launch(None, false)
    }

    /// Starts a new etcd that serves TLS on its client port.
    pub fn start_tls(tls: ServerTls) -> io::Result<EtcdServer> {
        Self::launch(Some(tls), false)
    }

    /// A new etcd, or `None` (after saying why on stderr) when etcd is not installed and tests
    /// may skip. Panics when etcd is required but missing, or when it does not start.
    pub fn start_or_skip() -> Option<EtcdServer> {
        Self::present_or_skip()?;
        match Self::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("starting a private etcd: {e}"),
        }
    }

    /// The etcd shared by every test of this process, started on first use; `None` (after
    /// saying why) when etcd is not installed and tests may skip. Panics when etcd is required
    /// but missing, or when it does not start. It cannot be stopped or restarted: tests that
    /// do that start their own.
    pub fn shared() -> Option<&'static EtcdServer> {
        static SHARED: OnceLock<Option<EtcdServer>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Self::present_or_skip()?;
                match Self::launch(None, true) {
                    Ok(server) => Some(server),
                    Err(e) => panic!("starting the shared private etcd: {e}"),
                }
            })
            .as_ref()
    }

    fn present_or_skip() -> Option<PathBuf> {
        let found = Self::binary();
        if found.is_none() {
            let why = format!(
                "etcd is not installed: install Debian's etcd-server package \
                 (apt-get install etcd-server) or set {ETCD_BIN_ENV} to the etcd binary{}",
                std::env::var(ETCD_BIN_ENV)
                    .map(|p| format!(" ({ETCD_BIN_ENV}={p} is not a file)"))
                    .unwrap_or_default()
            );
            assert!(
                !services_required(),
                "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
            );
            eprintln!("SKIPPED: {why}");
        }
        found
    }

    fn launch(tls: Option<ServerTls>, shared: bool) -> io::Result<EtcdServer> {
        let binary = Self::binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "etcd is not installed (apt-get install etcd-server)",
            )
        })?;
        let mut failures = Vec::new();
        // A port picked as free may be taken before etcd binds it; then try other ports.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("micro-etcd-").tempdir()?;
            let [client_port, peer_port, metrics_port] = free_ports()?;
            let (root, owned_dir) = if shared {
                (dir.keep(), None)
            } else {
                (dir.path().to_path_buf(), Some(dir))
            };
            let server = EtcdServer {
                binary: binary.clone(),
                client_port,
                peer_port,
                metrics_port,
                root,
                owned_dir,
                tls: tls.clone(),
                name: "t".into(),
                initial_cluster: None,
                process: Mutex::new(None),
            };
            match server.run(shared) {
                Ok(()) => return Ok(server),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(io::Error::other(failures.join("\n---\n")))
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client URL: `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address())
    }

    /// Registry options for this etcd, with short timeouts so that outage tests are quick.
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions::from_address(&self.endpoint())
            .with_dial_timeout(Duration::from_secs(2))
            .with_request_timeout(Duration::from_secs(3))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether etcd answers its health check.
    pub fn is_healthy(&self) -> bool {
        healthy(SocketAddr::from(([127, 0, 0, 1], self.metrics_port)))
    }

    /// Stops etcd and waits until it has exited (its ports are then closed). Stopping a
    /// stopped server does nothing.
    pub fn stop(&self) {
        let running = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut running) = running {
            drop(running.stdin.take());
            let deadline = Instant::now() + SHUTDOWN;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = running.wrapper.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = running.wrapper.kill();
            let _ = running.wrapper.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory, after [`stop`](Self::stop),
    /// and waits until it answers.
    pub fn restart(&self) -> io::Result<()> {
        if self.owned_dir.is_none() {
            return Err(io::Error::other(
                "the shared etcd cannot be restarted: start an own one with EtcdServer::start",
            ));
        }
        self.stop();
        self.run(false)
    }

    /// Spawns etcd through the wrapper and waits for its health check.
    fn run(&self, remove_root_at_exit: bool) -> io::Result<()> {
        self.spawn(remove_root_at_exit)?;
        self.wait_healthy()
    }

    /// Spawns etcd through the wrapper.
    fn spawn(&self, remove_root_at_exit: bool) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.root.join("etcd.log"))?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer_url}", self.name));
        let mut args: Vec<String> = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url.clone(),
            "--initial-cluster".into(),
            initial_cluster,
            // Plain-HTTP /health, whether or not the client port speaks TLS.
            "--listen-metrics-urls".into(),
            format!("http://127.0.0.1:{}", self.metrics_port),
        ];
        if let Some(tls) = &self.tls {
            args.extend([
                "--cert-file".into(),
                tls.cert_file.display().to_string(),
                "--key-file".into(),
                tls.key_file.display().to_string(),
            ]);
            if let Some(ca) = &tls.client_ca_file {
                args.extend([
                    "--client-cert-auth".into(),
                    "--trusted-ca-file".into(),
                    ca.display().to_string(),
                ]);
            }
        }
        let cleanup = if remove_root_at_exit {
            self.root.display().to_string()
        } else {
            String::new()
        };
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("micro-etcd-wrapper")
            .arg(cleanup)
            .arg(&self.binary)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let stdin = wrapper.stdin.take();
        *self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Running { wrapper, stdin });
        Ok(())
    }

    /// Waits until etcd answers its health check (it has a leader), or says why not.
    fn wait_healthy(&self) -> io::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self.is_healthy() {
                return Ok(());
            }
            let exited = {
                let mut process = self
                    .process
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match process.as_mut().map(|r| r.wrapper.try_wait()) {
                    Some(Ok(Some(status))) => Some(status.to_string()),
                    _ => None,
                }
            };
            if let Some(status) = exited {
                let tail = self.log_tail();
                self.stop();
                return Err(io::Error::other(format!(
                    "etcd ({}) exited ({status}) while starting on {}; its log:\n{tail}",
                    self.binary.display(),
                    self.address(),
                )));
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                self.stop();
                return Err(io::Error::other(format!(
                    "etcd did not become healthy on {} within {STARTUP:?}; its log:\n{tail}",
                    self.address()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three distinct free ports on loopback (all held until all are picked).
fn free_ports() -> io::Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Whether etcd's `/health` at `addr` says it is healthy (it has a leader).
fn healthy(addr: SocketAddr) -> bool {
    let ask = || -> io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    ask().is_ok_and(|a| a.contains(r#""health":"true""#))
}
