//! Two processes on the default stack (mDNS on loopback, http transport): `greeter-client`
//! finds `greeter-server` with no configuration and gets replies in protobuf and JSON.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clean(cmd: &mut Command) -> &mut Command {
    for var in [
        "MICRO_REGISTRY",
        "MICRO_REGISTRY_ADDRESS",
        "MICRO_TRANSPORT",
        "MICRO_SERVER_ADDRESS",
        "MICRO_MDNS_INTERFACE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn client(args: &[&str]) -> Output {
    clean(&mut Command::new(env!("CARGO_BIN_EXE_greeter-client")))
        .args(args)
        .output()
        .expect("run greeter-client")
}

/// Runs the client until it succeeds (the server may still be announcing itself), for at most
/// 20 s.
fn call_until_found(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = client(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "greeter-client never found greeter-server over mDNS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_client_process_finds_a_server_process_over_mdns() {
    // A service name of our own, so that other greeters on this machine cannot answer.
    let name = format!("greeter-mdns-test-{}", std::process::id());
    let mut server = Server(
        clean(&mut Command::new(env!("CARGO_BIN_EXE_greeter-server")))
            .args(["--server_name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start greeter-server"),
    );

    let proto = call_until_found(&["--name", "John", "--service", &name]);
    assert_eq!(proto, "Hello John");
    let json = call_until_found(&["--name", "Jane", "--json", "--service", &name]);
    assert_eq!(json, "Hello Jane");

    // SIGTERM: the server deregisters (mDNS goodbye) and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = server.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "greeter-server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "greeter-server exited with {exit}");
    let after = client(&["--name", "x", "--service", &name]);
    assert!(!after.status.success(), "a stopped server must not answer");
    let err = String::from_utf8_lossy(&after.stderr);
    assert!(err.contains("404"), "the service is gone from mDNS: {err}");
}
