//! The README's first service is this crate, file for file, and it works as the README says:
//! the server answers the client, and the event the client publishes reaches the server's
//! subscriber, on the default stack with nothing set up.
//!
//! std only: a dev-dependency would put a line in Cargo.toml that the README does not show.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every file of the crate but its tests.
const FILES: &[&str] = &[
    "Cargo.toml",
    "build.rs",
    "proto/hello.proto",
    "src/lib.rs",
    "src/bin/server.rs",
    "src/bin/client.rs",
];

/// How long the server may take to be found, and the event to arrive.
const BOUND: Duration = Duration::from_secs(30);

/// The README's fenced blocks that start with a line naming a file of this crate
/// (`// examples/hello/build.rs`, `# examples/hello/Cargo.toml`), by that file.
fn shown_in_readme() -> Vec<(String, String)> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("read README.md");
    let mut shown = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut block, line.starts_with("```")) {
            (None, true) => block = Some(Vec::new()),
            (Some(lines), true) => {
                let first = lines.first().copied().unwrap_or_default();
                let named = first
                    .trim_start_matches(['/', '#'])
                    .trim()
                    .strip_prefix("examples/hello/");
                if let Some(path) = named {
                    shown.push((path.to_string(), lines.join("\n") + "\n"));
                }
                block = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {}
        }
    }
    shown
}

#[test]
fn the_readme_shows_every_file_as_it_is() {
    let shown = shown_in_readme();
    for file in FILES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).expect("read the crate's file");
        let in_readme: Vec<&String> = shown
            .iter()
            .filter(|(p, _)| p == file)
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            in_readme.len(),
            1,
            "README.md shows {file} {} times",
            in_readme.len()
        );
        assert_eq!(
            in_readme[0], &text,
            "README.md's {file} differs from the file"
        );
    }
    for (path, _) in &shown {
        assert!(
            FILES.contains(&path.as_str()),
            "README.md shows examples/hello/{path}, which is not in the crate"
        );
    }
}

/// The default stack whatever the caller's environment says (mDNS stays on loopback).
fn program(exe: &str) -> Command {
    let mut command = Command::new(exe);
    for var in [
        "MICRO_REGISTRY",
        "MICRO_REGISTRY_ADDRESS",
        "MICRO_BROKER",
        "MICRO_BROKER_ADDRESS",
        "MICRO_TRANSPORT",
        "MICRO_SERVER_ADDRESS",
        "MICRO_SERVER_NAME",
        "MICRO_MDNS_INTERFACE",
    ] {
        command.env_remove(var);
    }
    command
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_client_calls_the_server_and_its_event_reaches_the_subscriber() {
    let mut server = Server(
        program(env!("CARGO_BIN_EXE_server"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server"),
    );
    let (lines, printed) = mpsc::channel();
    let stdout = server.0.stdout.take().expect("the server's stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });

    // The server may still be announcing itself: the client runs until it finds it.
    let deadline = Instant::now() + BOUND;
    let reply = loop {
        let out = program(env!("CARGO_BIN_EXE_client"))
            .output()
            .expect("run the client");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the client never reached the server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert_eq!(reply, "Hello John");

    let line = printed
        .recv_timeout(BOUND)
        .expect("the subscriber printed nothing");
    assert_eq!(line, "John was greeted");

    // SIGTERM: the server deregisters and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let deadline = Instant::now() + BOUND;
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("wait for the server") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn both_programs_answer_help_and_version() {
    for exe in [env!("CARGO_BIN_EXE_server"), env!("CARGO_BIN_EXE_client")] {
        let help = program(exe).arg("--help").output().expect("run --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{help:?}");
        assert!(
            text.contains("--registry") && text.contains("MICRO_REGISTRY"),
            "{text}"
        );
        let version = program(exe)
            .arg("--version")
            .output()
            .expect("run --version");
        assert!(version.status.success(), "{version:?}");
        assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
        let typo = program(exe)
            .arg("--registy")
            .output()
            .expect("run with a typo");
        assert_eq!(typo.status.code(), Some(2), "{typo:?}");
    }
}
