//! What every program of the project owes its users on the command line: `--help` that lists
//! Micro's settings and their `MICRO_*` variables, `--version`, and a usage error (exit status
//! 2, never a running server) for a flag it does not know.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a program may take to answer `--help` or refuse a flag.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `command` to its end with `input` on its standard input and its output captured;
/// kills it and panics past `limit` (a program that serves when it should answer never ends
/// by itself).
pub fn output_within(mut command: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("writing to {command:?}: {e}"));
    }
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {command:?}: {e}")),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not end within {limit:?}");
        }
    }
}

fn run(exe: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(exe);
    command.args(args);
    output_within(command, None, LIMIT)
}

/// Checks `--help` (listing Micro's flags and their variables when `micro_flags`), `--version`
/// (`<name> <version>`), and that an unknown flag is a usage error.
pub fn answers_help_and_version(exe: &Path, name: &str, micro_flags: bool) {
    let help = run(exe, &["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{name} --help failed: {help:?}");
    assert!(text.contains("Usage:"), "{name} --help:\n{text}");
    if micro_flags {
        for expected in [
            "--registry",
            "MICRO_REGISTRY",
            "--transport",
            "MICRO_TLS_CERT",
        ] {
            assert!(
                text.contains(expected),
                "{name} --help lacks {expected}:\n{text}"
            );
        }
    }

    let version = run(exe, &["--version"]);
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success(),
        "{name} --version failed: {version:?}"
    );
    assert!(
        text.starts_with(&format!("{name} ")),
        "{name} --version: {text}"
    );

    let typo = run(exe, &["--registy", "etcd"]);
    let text = String::from_utf8_lossy(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{name} --registy: {typo:?}");
    assert!(text.contains("--registy"), "{name} --registy:\n{text}");
}
