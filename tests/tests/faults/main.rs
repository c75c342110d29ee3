//! The fault injection suite: what a service, its callers and its registry go through on a bad
//! day (a registry partitioned away, peers killed or stopped under load, floods of idle and
//! slow connections), each with the guarantee a user relies on checked, and its figures printed
//! on one line as `FAULT-RESULT <name> <key=value ...>` for RELIABILITY.md.
//!
//! Faults are made by `micro_conformance::fault::FaultProxy` between clients and servers, and
//! by killing processes this test started: peers run in child processes (this same test
//! binary, run again with `MICRO_FAULT_CHILD` set, which only the child tests below act on).

mod brokers;
mod idle;
mod kafka;
mod nats;
mod netns;
mod peers;
mod rabbitmq;
mod registry;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that makes this test binary a child process of the suite: its value names
/// the role (`greeter`, `idle-clients`).
const CHILD_ENV: &str = "MICRO_FAULT_CHILD";

/// The bound on every wait of the suite.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where result lines are also appended, when set (the test harness keeps a passing test's
/// output to itself unless run with `--nocapture`).
const RESULTS_ENV: &str = "MICRO_FAULT_RESULTS";

/// Prints one result line in the suite's format (and appends it to `MICRO_FAULT_RESULTS`).
fn report(name: &str, figures: &[(&str, String)]) {
    let figures: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let line = format!("FAULT-RESULT {name} {}", figures.join(" "));
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(RESULTS_ENV).filter(|p| !p.is_empty()) {
        use std::io::Write as _;
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            panic!("appending to {RESULTS_ENV}={}: {e}", path.to_string_lossy());
        }
    }
}

/// Sends the framework's log lines (`RUST_LOG`, `info` by default) to the test's captured
/// output, so a failing fault test shows the reconnects and resubscribes that led to it.
fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Only the first call installs it; the others find it there.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

/// A child process of the suite, killed (SIGKILL) when dropped if it is still running; its
/// standard output arrives line by line on [`ChildProcess::lines`].
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Runs this test binary again as `role`, running only the child test `test`, with `env`.
    fn spawn(role: &str, test: &str, env: &[(&str, String)]) -> ChildProcess {
        Self::spawn_under(&[], role, test, env)
    }

    /// As [`ChildProcess::spawn`], run by the command `under` (`ip netns exec <name>`), which
    /// must exec the test binary in place, so that the child's pid is the test binary's.
    fn spawn_under(under: &[&str], role: &str, test: &str, env: &[(&str, String)]) -> ChildProcess {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = match under.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {role} child: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess { child, lines }
    }

    /// The rest of the first line that starts with `prefix`, waiting at most `limit`.
    fn line(&self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // The harness may have begun the line (`test name ... `).
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].trim().to_string();
                    }
                }
                Err(e) => panic!("no line {prefix:?} from the child within {limit:?}: {e}"),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`KILL`, `TERM`) to this child, and to nothing else.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the child to exit, at most `limit`.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child {} did not exit within {limit:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Raises this process's open-file limit to `wanted` (or as far as the hard limit allows,
/// raising that too when privileged); returns the limit now in force.
fn raise_fd_limit(wanted: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let current = now.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let hard = now.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(wanted),
        maximum: Some(hard.max(wanted)),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return wanted;
    }
    let to_hard = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    if setrlimit(Resource::Nofile, to_hard).is_ok() {
        return hard;
    }
    current
}
