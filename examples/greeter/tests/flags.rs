//! Every greeter program answers `--help` (with Micro's settings) and `--version`, and a
//! misspelt flag is a usage error rather than a server started on the defaults.

use std::path::Path;

use micro_conformance::program::answers_help_and_version;

#[test]
fn greeter_server() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_greeter-server")),
        "greeter-server",
        true,
    );
}

#[test]
fn greeter_client() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_greeter-client")),
        "greeter-client",
        true,
    );
}

#[test]
fn quickstart() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_quickstart")),
        "quickstart",
        true,
    );
}

/// The line a server logs once it serves names the service, its address and every plugin it
/// runs on, so that a misconfiguration shows at once.
#[test]
fn the_startup_line_names_the_address_and_every_plugin() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let mut server = Command::new(env!("CARGO_BIN_EXE_greeter-server"))
        .args(["--registry", "memory", "--broker", "memory"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start greeter-server");
    let stderr = server.stderr.take().expect("stderr");
    let (lines, found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(" serving ") && lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = found.recv_timeout(std::time::Duration::from_secs(60));
    let _ = server.kill();
    let _ = server.wait();
    let line = line.expect("a serving line within 60 s");
    for part in [
        "service=greeter",
        "address=\"127.0.0.1:",
        "transport=\"http\"",
        "registry=\"memory\"",
        "broker=\"memory\"",
        "codec=application/protobuf",
    ] {
        assert!(line.contains(part), "{part} missing from {line:?}");
    }
}
