//! A private ZooKeeper for tests: a free loopback port, a temporary data directory, stopped
//! when dropped (or, for [`ZookeeperServer::shared`], when the test process exits).
//!
//! It runs Debian's ZooKeeper (`apt-get install zookeeper`, or `zookeeperd`): the jar
//! `/usr/share/java/zookeeper.jar` (or `MICRO_TEST_ZOOKEEPER_JAR`) with `java`, main class
//! `org.apache.zookeeper.server.ZooKeeperServerMain` and a minimal `zoo.cfg` that binds
//! `127.0.0.1` only and turns the admin server off. When it is not installed, tests skip with a
//! message, or fail when `MICRO_TEST_REQUIRE_SERVICES=1` (as CI sets it).
//!
//! ```no_run
//! use micro_registry_zookeeper::testing::ZookeeperServer;
//! use micro_registry_zookeeper::ZookeeperRegistry;
//!
//! # fn run() -> micro_core::Result<()> {
//! let Some(zk) = ZookeeperServer::shared() else { return Ok(()) }; // skipped, and said why
//! let registry = ZookeeperRegistry::new(zk.options())?;
//! # Ok(())
//! # }
//! ```
//!
//! The server runs under a small `sh` wrapper that holds the read end of a pipe from the test
//! process: when the test process ends, however it ends, the pipe closes and the wrapper stops
//! the server, so no ZooKeeper outlives its tests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::ZookeeperOptions;

/// The ZooKeeper jar, when it is not Debian's `/usr/share/java/zookeeper.jar`.
pub const ZOOKEEPER_JAR_ENV: &str = "MICRO_TEST_ZOOKEEPER_JAR";

/// Debian's jar; its manifest names the jars it needs.
const DEBIAN_JAR: &str = "/usr/share/java/zookeeper.jar";

/// How long the server may take to serve sessions after being started.
const STARTUP: Duration = Duration::from_secs(60);

/// How long the server may take to exit after being told to.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// Starts `$2...` and stops it when standard input closes; removes `$1` (if not empty) once it
/// has exited. Background jobs of a non-interactive shell read /dev/null, hence the copy of
/// standard input on descriptor 3.
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

/// One ZooKeeper process on loopback, with its port and data directory.
#[derive(Debug)]
pub struct ZookeeperServer {
    port: u16,
    /// Holds `zoo.cfg`, `data/` and `zookeeper.log`.
    root: PathBuf,
    /// Removes `root` on drop; `None` for the shared server, whose wrapper removes it.
    _owned_dir: Option<tempfile::TempDir>,
    process: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// Dropping it stops the server.
    stdin: Option<ChildStdin>,
}

/// Whether tests must fail, rather than skip, when ZooKeeper is missing
/// (`MICRO_TEST_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

impl ZookeeperServer {
    /// The ZooKeeper jar: `MICRO_TEST_ZOOKEEPER_JAR` when set (`None` if it is not a file),
    /// else Debian's; `None` also when there is no `java` to run it.
    pub fn jar() -> Option<PathBuf> {
        let jar = match std::env::var_os(ZOOKEEPER_JAR_ENV).filter(|p| !p.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(DEBIAN_JAR),
        };
        let java = Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (jar.is_file() && java).then_some(jar)
    }

    /// Starts a new ZooKeeper, owned by the caller and stopped when dropped.
    pub fn start() -> io::Result<ZookeeperServer> {
        Self::launch(false)
    }

    /// A new ZooKeeper, or `None` (after saying why on stderr) when it is not installed and
    /// tests may skip. Panics when it is required but missing, or when it does not start.
    pub fn start_or_skip() -> Option<ZookeeperServer> {
        Self::present_or_skip()?;
        match Self::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("starting a private ZooKeeper: {e}"),
        }
    }

    /// The ZooKeeper shared by every test of this process, started on first use; `None` (after
    /// saying why) when it is not installed and tests may skip. Panics when it is required but
    /// missing, or when it does not start.
    pub fn shared() -> Option<&'static ZookeeperServer> {
        static SHARED: OnceLock<Option<ZookeeperServer>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Self::present_or_skip()?;
                match Self::launch(true) {
                    Ok(server) => Some(server),
                    Err(e) => panic!("starting the shared private ZooKeeper: {e}"),
                }
            })
            .as_ref()
    }

    fn present_or_skip() -> Option<PathBuf> {
        let found = Self::jar();
        if found.is_none() {
            let why = format!(
                "ZooKeeper is not installed: install Debian's zookeeper package (apt-get install \
                 zookeeperd, which brings Java) or set {ZOOKEEPER_JAR_ENV} to zookeeper.jar"
            );
            assert!(
                !services_required(),
                "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
            );
            eprintln!("SKIPPED: {why}");
        }
        found
    }

    fn launch(shared: bool) -> io::Result<ZookeeperServer> {
        let jar = Self::jar().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "ZooKeeper or Java is not installed",
            )
        })?;
        let mut failures = Vec::new();
        // A port picked as free may be taken before the server binds it; then try another.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("micro-zookeeper-")
                .tempdir()?;
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let (root, owned) = if shared {
                (dir.keep(), None)
            } else {
                (dir.path().to_path_buf(), Some(dir))
            };
            let server = ZookeeperServer {
                port,
                root,
                _owned_dir: owned,
                process: Mutex::new(None),
            };
            match server.run(&jar, shared) {
                Ok(()) => return Ok(server),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(io::Error::other(failures.join("\n---\n")))
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Registry options for this server, with short timeouts so that tests are quick.
    pub fn options(&self) -> ZookeeperOptions {
        let mut opts = ZookeeperOptions::from_address(&self.address());
        opts.session_timeout = Duration::from_secs(4);
        opts.request_timeout = Duration::from_secs(3);
        opts
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("zookeeper.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the server serves sessions: its `srvr` answer names its mode (`ruok` says
    /// `imok` as soon as it listens, before it takes sessions).
    pub fn is_healthy(&self) -> bool {
        let ask = || -> io::Result<String> {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"srvr")?;
            let mut answer = String::new();
            stream.take(4096).read_to_string(&mut answer)?;
            Ok(answer)
        };
        ask().is_ok_and(|a| a.contains("Mode: standalone"))
    }

    /// Stops the server and waits until it has exited. Stopping a stopped server does nothing.
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

    /// Writes `zoo.cfg`, spawns the server through the wrapper and waits until it serves.
    fn run(&self, jar: &std::path::Path, remove_root_at_exit: bool) -> io::Result<()> {
        let data = self.root.join("data");
        std::fs::create_dir_all(&data)?;
        let config = self.root.join("zoo.cfg");
        // Short ticks so that sessions of a few seconds are allowed; loopback only; no admin
        // HTTP server (it would listen on 8080 of every interface).
        std::fs::write(
            &config,
            format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n\
                 4lw.commands.whitelist=srvr\n",
                data.display(),
                self.port
            ),
        )?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.root.join("zookeeper.log"))?;
        let cleanup = if remove_root_at_exit {
            self.root.display().to_string()
        } else {
            String::new()
        };
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("micro-zookeeper-wrapper")
            .arg(cleanup)
            .arg("java")
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp"])
            .arg(jar)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let stdin = wrapper.stdin.take();
        *self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Running { wrapper, stdin });

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
                    "ZooKeeper exited ({status}) while starting on {}; its log:\n{tail}",
                    self.address(),
                )));
            }
            if Instant::now() > deadline {
                let tail = self.log_tail();
                self.stop();
                return Err(io::Error::other(format!(
                    "ZooKeeper did not answer on {} within {STARTUP:?}; its log:\n{tail}",
                    self.address()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ZookeeperServer {
    fn drop(&mut self) {
        self.stop();
    }
}
