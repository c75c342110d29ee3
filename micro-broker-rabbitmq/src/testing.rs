//! A private RabbitMQ node for tests that stop, restart or break their broker, so that the
//! machine's shared RabbitMQ (which other tests use at the same time) is never touched.
//!
//! [`RabbitNode::start`] runs `rabbitmq-server` as a node of its own, `rabbit-test-<pid>-<n>@localhost`,
//! on free loopback ports (AMQP and Erlang distribution), with its database, logs and Erlang
//! cookie in a temporary directory and no plugins (the management plugin off), and waits until
//! `rabbitmqctl await_startup` would succeed. [`RabbitNode::ctl`] runs `rabbitmqctl` against
//! it (`stop_app`, `start_app`, `close_all_connections`, ...). The node is stopped when
//! dropped.
//!
//! ```no_run
//! use micro_broker_rabbitmq::testing::RabbitNode;
//! use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
//!
//! # fn run() -> micro_core::Result<()> {
//! let Some(node) = RabbitNode::start_or_skip() else { return Ok(()) }; // skipped, said why
//! let broker = RabbitBroker::new(RabbitOptions::from_address(&node.url()))?;
//! node.ctl(&["stop_app"]).expect("the app stops");
//! node.ctl(&["start_app"]).expect("the app starts");
//! # Ok(())
//! # }
//! ```
//!
//! The node runs under a small `sh` wrapper that reads a pipe from the test process: when the
//! test process ends, however it ends, the pipe closes and the wrapper stops the node, so no
//! node outlives its tests. It needs the `rabbitmq-server` package (its scripts in
//! `/usr/lib/rabbitmq/bin`, or `MICRO_TEST_RABBITMQ_BIN`); Erlang takes a few seconds to start.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The directory holding `rabbitmq-server` and `rabbitmqctl`, when it is not
/// `/usr/lib/rabbitmq/bin`. (Debian's `/usr/sbin` scripts switch to the `rabbitmq` user when
/// run as root, who cannot write the test's temporary directory; these run as the caller.)
pub const RABBITMQ_BIN_ENV: &str = "MICRO_TEST_RABBITMQ_BIN";

/// How long the node may take to start (Erlang boots, then RabbitMQ's boot steps).
const STARTUP: Duration = Duration::from_secs(90);

/// How long one `rabbitmqctl` command may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the node may take to exit after being told to.
const SHUTDOWN: Duration = Duration::from_secs(30);

/// Starts the command in `$@` and stops it (SIGTERM, on which `rabbitmq-server` stops the node
/// cleanly) when standard input closes. Background jobs of a non-interactive shell read
/// /dev/null, hence the copy of standard input on descriptor 3.
const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
( cat <&3 >/dev/null; kill "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
"#;

/// Whether tests must fail, rather than skip, when RabbitMQ is missing
/// (`MICRO_TEST_REQUIRE_SERVICES=1`).
fn services_required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// A private RabbitMQ node on loopback; stopped when dropped.
#[derive(Debug)]
pub struct RabbitNode {
    bin: PathBuf,
    name: String,
    port: u16,
    /// Holds the database, the logs, the cookie (`home/`) and the pid file; removed on drop.
    dir: tempfile::TempDir,
    process: Mutex<Option<Running>>,
    startup: Duration,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// Dropping it stops the node.
    stdin: Option<ChildStdin>,
}

impl RabbitNode {
    /// The directory of RabbitMQ's scripts: `MICRO_TEST_RABBITMQ_BIN`, else
    /// `/usr/lib/rabbitmq/bin` when it holds `rabbitmq-server`.
    pub fn bin_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(RABBITMQ_BIN_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        let dir = PathBuf::from("/usr/lib/rabbitmq/bin");
        dir.join("rabbitmq-server").is_file().then_some(dir)
    }

    /// Starts a private node and waits until RabbitMQ runs on it.
    pub fn start() -> io::Result<RabbitNode> {
        let bin = Self::bin_dir().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "rabbitmq-server is not installed (apt-get install rabbitmq-server, or set \
                     {RABBITMQ_BIN_ENV} to the directory of rabbitmq-server and rabbitmqctl)"
                ),
            )
        })?;
        static NODES: AtomicUsize = AtomicUsize::new(0);
        let mut failures = Vec::new();
        // A port picked as free may be taken before the node binds it; then try others.
        for _ in 0..3 {
            let n = NODES.fetch_add(1, Ordering::Relaxed);
            let mut node = RabbitNode {
                bin: bin.clone(),
                name: format!("rabbit-test-{}-{n}@localhost", std::process::id()),
                port: free_port()?,
                dir: tempfile::Builder::new().prefix("micro-rabbit-").tempdir()?,
                process: Mutex::new(None),
                startup: Duration::ZERO,
            };
            let dist_port = loop {
                let p = free_port()?;
                if p != node.port {
                    break p;
                }
            };
            let started = Instant::now();
            match node.launch(dist_port) {
                Ok(()) => {
                    node.startup = started.elapsed();
                    return Ok(node);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(io::Error::other(failures.join("\n---\n")))
    }

    /// A private node, or `None` (after saying why) when RabbitMQ is not installed and tests
    /// may skip. Panics when it is required but missing, or when it does not start.
    pub fn start_or_skip() -> Option<RabbitNode> {
        if Self::bin_dir().is_none() {
            let why = format!(
                "rabbitmq-server is not installed: install Debian's rabbitmq-server package \
                 or set {RABBITMQ_BIN_ENV}"
            );
            assert!(
                !services_required(),
                "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        }
        match Self::start() {
            Ok(node) => Some(node),
            Err(e) => panic!("starting a private RabbitMQ node: {e}"),
        }
    }

    /// The node's name, for `rabbitmqctl -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:<port>`, where it speaks AMQP.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address())
    }

    /// How long the node took to start, from launch until RabbitMQ ran.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Whether the node accepts AMQP connections.
    pub fn is_listening(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }

    /// The end of the node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.name));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns its output; an error when it fails or
    /// takes longer than a minute.
    pub fn ctl(&self, args: &[&str]) -> io::Result<String> {
        let mut command = Command::new(self.bin.join("rabbitmqctl"));
        self.environment(&mut command);
        command
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let deadline = Instant::now() + CTL_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "rabbitmqctl -n {} {args:?} did not finish within {CTL_TIMEOUT:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(io::Error::other(format!(
                "rabbitmqctl -n {} {args:?} failed ({}): {stdout}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// The node's environment, for its scripts.
    fn environment(&self, command: &mut Command) {
        let dir = self.dir.path();
        command
            .current_dir(dir)
            // The Erlang cookie lives in $HOME: the node's own, shared with rabbitmqctl.
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            // Nothing from the machine's configuration: no plugins (so no management plugin
            // and its port), no config files, no rabbitmq-env.conf.
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"));
    }

    /// Launches the node with its distribution on `dist_port` and waits until RabbitMQ runs.
    fn launch(&self, dist_port: u16) -> io::Result<()> {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("home"))?;
        for empty in ["enabled_plugins", "rabbitmq-env.conf"] {
            std::fs::write(dir.join(empty), "")?;
        }
        let mut command = Command::new("sh");
        self.environment(&mut command);
        command
            .arg("-c")
            .arg(WRAPPER)
            .arg("rabbitmq-wrapper")
            .arg(self.bin.join("rabbitmq-server"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(std::fs::File::create(dir.join("stdout.log"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?));
        let mut wrapper = command.spawn()?;
        let stdin = wrapper.stdin.take();
        *self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Running { wrapper, stdin });
        // `rabbitmqctl wait` waits for the pid file, the node's distribution, then the app.
        let pid_file = dir.join("pid");
        let deadline = Instant::now() + STARTUP;
        loop {
            let waited = self.ctl(&[
                "wait",
                "--timeout",
                &STARTUP.as_secs().to_string(),
                &pid_file.to_string_lossy(),
            ]);
            if waited.is_ok() && self.is_listening() {
                return Ok(());
            }
            let exited = self
                .process
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_mut()
                .map(|r| r.wrapper.try_wait())
                .transpose()?
                .flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let why = match (exited, waited) {
                    (Some(status), _) => format!("exited ({status})"),
                    (None, Err(e)) => format!("did not start within {STARTUP:?}: {e}"),
                    (None, Ok(_)) => format!("did not listen within {STARTUP:?}"),
                };
                self.stop();
                return Err(io::Error::other(format!(
                    "RabbitMQ node {} on port {} {why}\n{}\n{}",
                    self.name,
                    self.port,
                    self.log_tail(),
                    tail(&dir.join("stdout.log"))
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node: `rabbitmqctl stop`, then SIGTERM to `rabbitmq-server` (through the
    /// wrapper), then SIGKILL to the wrapper and to the node's Erlang VM (the pid in its pid
    /// file) if it is still running after 30 s. Waits until the wrapper has exited.
    fn stop(&self) {
        let running = self
            .process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(mut running) = running else {
            return;
        };
        if matches!(running.wrapper.try_wait(), Ok(None)) {
            let _ = self.ctl(&["stop"]);
        }
        drop(running.stdin.take());
        let deadline = Instant::now() + SHUTDOWN;
        while matches!(running.wrapper.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = writeln!(
                    io::stderr(),
                    "RabbitMQ node {} did not stop within {SHUTDOWN:?}: killing it",
                    self.name
                );
                // The Erlang VM this node started, named by its pid file.
                let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap_or_default();
                if let Ok(pid) = pid.trim().parse::<u32>() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                let _ = running.wrapper.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = running.wrapper.wait();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
