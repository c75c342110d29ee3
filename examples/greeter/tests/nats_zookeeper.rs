//! `greeter-client` finds `greeter-server` in another process through the NATS registry (the
//! machine's nats-server) and the ZooKeeper registry (a private ZooKeeper).

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use micro_registry_zookeeper::testing::ZookeeperServer;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn with_registry<'c>(cmd: &'c mut Command, registry: &str, address: &str) -> &'c mut Command {
    cmd.env("MICRO_REGISTRY", registry)
        .env("MICRO_REGISTRY_ADDRESS", address)
        .env_remove("MICRO_TRANSPORT")
        .env_remove("MICRO_SERVER_ADDRESS")
}

/// Starts a server on `registry` and calls it from a client process until it answers (it may
/// still be registering), for at most 30 s.
fn server_is_found(registry: &str, address: &str) {
    let name = format!("greeter-{registry}-test-{}", std::process::id());
    let _server = Server(
        with_registry(
            &mut Command::new(env!("CARGO_BIN_EXE_greeter-server")),
            registry,
            address,
        )
        .args(["--server_name", &name, "--server_address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start greeter-server"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = with_registry(
            &mut Command::new(env!("CARGO_BIN_EXE_greeter-client")),
            registry,
            address,
        )
        .args(["--name", "John", "--service", &name])
        .output()
        .expect("run greeter-client");
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Hello John");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "greeter-client never found greeter-server over {registry}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_client_process_finds_a_server_process_over_nats() {
    let address = "127.0.0.1:4222";
    let up = address
        .parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !up {
        let why = format!("no NATS at {address} (scripts/test.sh starts it)");
        assert!(
            !micro_conformance::services_required(),
            "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    server_is_found("nats", address);
}

#[test]
fn a_client_process_finds_a_server_process_over_zookeeper() {
    let Some(zk) = ZookeeperServer::start_or_skip() else {
        return;
    };
    server_is_found("zookeeper", &zk.address());
}
