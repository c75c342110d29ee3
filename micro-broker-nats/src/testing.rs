//! NATS for tests: the machine's running server, or a private one that a test may stop and
//! start again.
//!
//! [`running_server`] finds the NATS every test shares (`127.0.0.1:4222`, or
//! `MICRO_TEST_NATS_ADDRESS`). [`NatsServer`] starts a private `nats-server -js` on a free
//! loopback port with a temporary store directory, for tests that kill it. Both skip the test
//! with a message when NATS is missing, or fail when `MICRO_TEST_REQUIRE_SERVICES=1` (as CI
//! sets it).
//!
//! ```no_run
//! use micro_broker_nats::testing::NatsServer;
//! use micro_broker_nats::NatsBroker;
//!
//! # fn run() -> micro_core::Result<()> {
//! let Some(nats) = NatsServer::start_or_skip() else { return Ok(()) }; // skipped, said why
//! let broker = NatsBroker::new(nats.options())?;
//! nats.restart().expect("nats-server is back");
//! nats.kill().expect("nats-server killed with SIGKILL, as a crash would");
//! nats.start_again().expect("nats-server recovered its store");
//! # Ok(())
//! # }
//! ```
//!
//! A private server runs under a small `sh` wrapper that reads a pipe from the test process:
//! when the test process ends, however it ends, the pipe closes and the wrapper stops
//! nats-server, so no server outlives its tests.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{JetStreamOptions, NatsOptions};

/// The nats-server binary, when it is not `nats-server` on `PATH`, in `/usr/sbin` or
/// `/usr/bin`.
pub const NATS_BIN_ENV: &str = "MICRO_TEST_NATS_SERVER";

/// The shared NATS of the tests, when it is not `127.0.0.1:4222`.
pub const NATS_ADDRESS_ENV: &str = "MICRO_TEST_NATS_ADDRESS";

/// How the shared NATS is started when it is missing.
pub const HOW_TO_START: &str = "start it with `nats-server -a 127.0.0.1 -p 4222 -js -sd \
     /var/lib/nats-server` (Debian package nats-server; scripts/test.sh does this)";

/// How long nats-server may take to listen after being started (JetStream recovers its
/// streams first).
const STARTUP: Duration = Duration::from_secs(20);

/// How long nats-server may take to exit after being told to.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// Starts the command in `$@` and stops it (SIGTERM: a clean JetStream shutdown) when standard
/// input closes. Background jobs of a non-interactive shell read /dev/null, hence the copy of
/// standard input on descriptor 3.
const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
( cat <&3 >/dev/null; kill "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
"#;

/// Whether tests must fail, rather than skip, when NATS is missing
/// (`MICRO_TEST_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Skips (after saying why on stderr) or, when services are required, panics.
fn skip(why: &str) {
    assert!(
        !services_required(),
        "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
    );
    eprintln!("SKIPPED: {why}");
}

/// The address of the NATS all tests share (`MICRO_TEST_NATS_ADDRESS`, else
/// `127.0.0.1:4222`) when it accepts connections; else `None` after saying why, or a panic
/// when services are required.
pub fn running_server() -> Option<String> {
    let address = std::env::var(NATS_ADDRESS_ENV)
        .ok()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:4222".to_string());
    let host_port = address
        .trim()
        .trim_start_matches("nats://")
        .trim_end_matches('/');
    let reachable = host_port
        .parse::<SocketAddr>()
        .ok()
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        Some(address)
    } else {
        skip(&format!(
            "NATS is not reachable at {address}: {HOW_TO_START}"
        ));
        None
    }
}

/// A private nats-server with JetStream on loopback: its port and store directory stay the
/// same across [`NatsServer::stop`] and [`NatsServer::start_again`].
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// Holds `store/` and `nats.log`; removed on drop.
    dir: tempfile::TempDir,
    process: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// Dropping it stops nats-server.
    stdin: Option<ChildStdin>,
    /// nats-server's own process (the wrapper's child), from its pid file.
    pid: u32,
}

impl NatsServer {
    /// The nats-server binary: `MICRO_TEST_NATS_SERVER`, else `nats-server` on `PATH`, else in
    /// `/usr/sbin`, `/usr/bin` or `/usr/local/bin`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(NATS_BIN_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default();
        on_path
            .into_iter()
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    }

    /// Starts a private nats-server, stopped when dropped.
    pub fn start() -> io::Result<NatsServer> {
        let binary = Self::binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("nats-server is not installed (apt-get install nats-server, or set {NATS_BIN_ENV})"),
            )
        })?;
        let mut failures = Vec::new();
        // A port picked as free may be taken before nats-server binds it; then try another.
        for _ in 0..3 {
            let server = NatsServer {
                binary: binary.clone(),
                port: free_port()?,
                dir: tempfile::Builder::new().prefix("micro-nats-").tempdir()?,
                process: Mutex::new(None),
            };
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(io::Error::other(failures.join("\n---\n")))
    }

    /// A private nats-server, or `None` (after saying why) when nats-server is not installed
    /// and tests may skip. Panics when it is required but missing, or when it does not start.
    pub fn start_or_skip() -> Option<NatsServer> {
        if Self::binary().is_none() {
            skip(&format!(
                "nats-server is not installed: install Debian's nats-server package \
                 (apt-get install nats-server) or set {NATS_BIN_ENV}"
            ));
            return None;
        }
        match Self::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("starting a private nats-server: {e}"),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Core NATS options for this server, with a short connect timeout.
    pub fn options(&self) -> NatsOptions {
        NatsOptions {
            connect_timeout: Duration::from_secs(2),
            ..NatsOptions::from_address(&format!("nats://{}", self.address()))
        }
    }

    /// JetStream options for this server.
    pub fn jetstream_options(&self, js: JetStreamOptions) -> NatsOptions {
        self.options().with_jetstream(js)
    }

    /// The end of nats-server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether the server accepts connections.
    pub fn is_listening(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }

    /// Stops nats-server (SIGTERM, so JetStream shuts down cleanly) and waits until it has
    /// exited. Stopping a stopped server does nothing.
    pub fn stop(&self) -> io::Result<()> {
        let running = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        self.wait_exit(running)
    }

    /// Kills nats-server with SIGKILL, as a crash or the OOM killer would: no clean JetStream
    /// shutdown, whatever it had not written to its store is lost with it. Waits until it has
    /// exited; [`NatsServer::start_again`] then recovers the store. Killing a stopped server
    /// does nothing.
    pub fn kill(&self) -> io::Result<()> {
        let running = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        // The process this server started; the wrapper's `wait` returns once it is gone.
        let status = Command::new("kill")
            .args(["-KILL", &running.pid.to_string()])
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "kill -KILL {} (nats-server on port {}) failed: {status}",
                running.pid, self.port
            )));
        }
        self.wait_exit(running)
    }

    /// Closes the wrapper's standard input (which stops nats-server if it still runs) and
    /// waits for the wrapper to exit.
    fn wait_exit(&self, mut running: Running) -> io::Result<()> {
        drop(running.stdin.take());
        let deadline = Instant::now() + SHUTDOWN;
        loop {
            if running.wrapper.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Stop waiting for it; the error says so.
                let _ = running.wrapper.kill();
                let _ = running.wrapper.wait();
                return Err(io::Error::other(format!(
                    "nats-server on port {} did not exit within {SHUTDOWN:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts nats-server (again) on the same port and store directory, and waits until it
    /// accepts connections. Starting a running server does nothing.
    pub fn start_again(&self) -> io::Result<()> {
        let mut process = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if process.is_some() {
            return Ok(());
        }
        let port = self.port.to_string();
        let store = self.dir.path().join("store");
        let log = self.dir.path().join("nats.log");
        let pid_file = self.dir.path().join("nats.pid");
        // A killed server leaves its pid file behind: only a new one names the new process.
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("nats-server-wrapper")
            .arg(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .arg("-P")
            .arg(&pid_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = wrapper.stdin.take();
        let deadline = Instant::now() + STARTUP;
        loop {
            // nats-server writes its pid file before it listens.
            let pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            if let (Some(pid), true) = (pid, self.is_listening()) {
                *process = Some(Running {
                    wrapper,
                    stdin,
                    pid,
                });
                return Ok(());
            }
            if let Some(status) = wrapper.try_wait()? {
                return Err(io::Error::other(format!(
                    "nats-server on port {port} exited ({status}):\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() >= deadline {
                drop(stdin);
                let _ = wrapper.kill();
                let _ = wrapper.wait();
                return Err(io::Error::other(format!(
                    "nats-server on port {port} did not listen within {STARTUP:?}:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts nats-server on the same port and store directory.
    pub fn restart(&self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            let _ = writeln!(io::stderr(), "stopping the private nats-server: {e}");
        }
    }
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
