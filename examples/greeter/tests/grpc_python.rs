//! A standard gRPC client calls a Micro service: `greeter-server` runs with
//! `MICRO_TRANSPORT=grpc`, and `grpc_client.py` (grpcio, stubs generated from greeter.proto by
//! grpc_tools) calls every RPC kind and the standard health service; `reflection_client.py`
//! (grpcio-reflection) finds, describes and calls the greeter from server reflection alone.
//!
//! Needs `python3` with `grpcio`, `grpcio-tools`, `grpcio-health-checking` and
//! `grpcio-reflection` (`python3 -m pip install grpcio grpcio-tools grpcio-health-checking
//! grpcio-reflection`). Without them the tests say why and pass, unless
//! `MICRO_TEST_REQUIRE_SERVICES=1`, where they fail.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the Python client may take in all (it bounds each of its own waits too).
const CLIENT_LIMIT: Duration = Duration::from_secs(90);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Why Python cannot run the client, if it cannot.
fn python_missing() -> Option<String> {
    let check = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2_grpc, grpc_reflection.v1alpha",
        ])
        .output();
    match check {
        Err(e) => Some(format!("python3 cannot run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 lacks grpcio, grpcio-tools, grpcio-health-checking or grpcio-reflection ({}); \
             install them with `python3 -m pip install grpcio grpcio-tools \
             grpcio-health-checking grpcio-reflection`",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[test]
fn grpcio_calls_the_greeter_on_the_grpc_transport() {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    python_against_the_greeter("grpc_client.py", &[proto.as_os_str()]);
}

#[test]
fn grpcio_reflection_describes_and_calls_the_greeter() {
    python_against_the_greeter("reflection_client.py", &[]);
}

/// Runs `tests/<script> <address> <args>` against a `greeter-server` on the grpc transport;
/// the script must print `ok`.
fn python_against_the_greeter(script: &str, args: &[&std::ffi::OsStr]) {
    if let Some(why) = python_missing() {
        assert!(!required(), "MICRO_TEST_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipping {script}: {why}");
        return;
    }
    let address = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_greeter-server"));
    for var in [
        "MICRO_REGISTRY_ADDRESS",
        "MICRO_MDNS_INTERFACE",
        "MICRO_TLS_CERT",
        "MICRO_TLS_KEY",
        "MICRO_TLS_CA",
        "MICRO_GRPC_REFLECTION",
    ] {
        server.env_remove(var);
    }
    let _server = Server(
        server
            .env("MICRO_TRANSPORT", "grpc")
            .env("MICRO_REGISTRY", "memory")
            .env("MICRO_SERVER_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start greeter-server"),
    );

    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let client = Command::new("python3")
        .arg(here.join("tests").join(script))
        .arg(&address)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python client");
    let pid = client.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(client.wait_with_output());
    });
    let output = match finished.recv_timeout(CLIENT_LIMIT) {
        Ok(output) => output.expect("the Python client's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{script} did not finish within {CLIENT_LIMIT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
