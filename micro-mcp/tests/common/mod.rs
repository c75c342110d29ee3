//! What the tests share: greeters on one in-memory registry and broker, and the service the
//! MCP server calls them with.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::broker::MemoryBroker;
use micro::registry::MemoryRegistry;
use micro::Service;

/// Services on one in-memory registry and broker, stopped at the end of the test.
pub struct Fleet {
    registry: Arc<MemoryRegistry>,
    broker: Arc<MemoryBroker>,
    services: Vec<Service>,
}

impl Fleet {
    /// A fleet with the greeter running.
    pub async fn with_greeter() -> micro::Result<Fleet> {
        let mut fleet = Fleet {
            registry: Arc::new(MemoryRegistry::new()),
            broker: Arc::new(MemoryBroker::new()),
            services: Vec::new(),
        };
        fleet.start_greeter("greeter").await?;
        Ok(fleet)
    }

    /// A service on the fleet's registry and broker, not started: what the MCP server uses.
    pub fn service(&self, name: &str) -> micro::Result<Service> {
        self.builder(name).build()
    }

    fn builder(&self, name: &str) -> micro::ServiceBuilder {
        Service::builder(name)
            .ignore_env()
            .registry(self.registry.clone())
            .broker(self.broker.clone())
    }

    /// Starts the greeter under the name `name`.
    pub async fn start_greeter(&mut self, name: &str) -> micro::Result<()> {
        let service = self
            .builder(name)
            .handler(greeter_handler(GreeterService))
            .build()?;
        service.start().await?;
        self.services.push(service);
        Ok(())
    }

    /// Stops (and deregisters) every service started.
    pub async fn stop(self) {
        for service in self.services {
            let _ = service.stop().await;
        }
    }
}

/// The Python MCP client (`tests/python/client.py`), its output read line by line on threads
/// of its own so that every wait is bounded; killed if the test ends first.
pub struct PythonClient {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: tokio::sync::oneshot::Receiver<String>,
    printed: Vec<String>,
    deadline: tokio::time::Instant,
}

impl PythonClient {
    /// How long the client may take in all (it bounds each of its own steps too).
    pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

    /// Why Python cannot run the client, if it cannot.
    pub fn missing() -> Option<String> {
        let check = std::process::Command::new("python3")
            .args(["-c", "from mcp import Client"])
            .output();
        match check {
            Err(e) => Some(format!("python3 cannot run: {e}")),
            Ok(out) if !out.status.success() => Some(format!(
                "python3 lacks the mcp package ({}); install it with `python3 -m pip install mcp`",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => None,
        }
    }

    /// Starts `client.py TARGET MODE LATE_TOOL` with extra environment variables.
    pub fn start(
        target: &str,
        mode: &str,
        late_tool: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> std::io::Result<PythonClient> {
        use std::io::{BufRead as _, Read as _};
        use std::process::{Command, Stdio};

        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([target, mode, late_tool])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (lines, lines_out) = tokio::sync::mpsc::unbounded_channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = lines.send(line);
                }
            });
        }
        let (errors, stderr) = tokio::sync::oneshot::channel();
        if let Some(mut pipe) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                let _ = errors.send(text);
            });
        }
        Ok(PythonClient {
            child,
            lines: lines_out,
            stderr,
            printed: Vec::new(),
            deadline: tokio::time::Instant::now() + Self::LIMIT,
        })
    }

    /// The next line the client prints; `None` once it closed its output.
    pub async fn next_line(&mut self) -> Option<String> {
        match tokio::time::timeout_at(self.deadline, self.lines.recv()).await {
            Ok(line) => {
                self.printed.extend(line.clone());
                line
            }
            Err(_) => panic!(
                "the Python client did not finish within {:?}: {:?}",
                Self::LIMIT,
                self.printed
            ),
        }
    }

    /// Waits for the client to end; panics unless it succeeded with `OK` as its last line.
    pub async fn expect_ok(mut self, what: &str) {
        while self.next_line().await.is_some() {}
        let stderr = tokio::time::timeout_at(self.deadline, &mut self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = self.child.wait();
        let ok = status.as_ref().is_ok_and(|s| s.success())
            && self.printed.last().map(String::as_str) == Some("OK");
        assert!(
            ok,
            "the Python client ({what}) failed ({status:?}):\n{}\n{stderr}",
            self.printed.join("\n")
        );
    }
}

impl Drop for PythonClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
