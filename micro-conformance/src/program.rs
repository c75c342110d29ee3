//! What every program of the project owes its users on the command line: `--help` that lists
//! Micro's settings and their `MICRO_*` variables, `--version`, and a usage error (exit status
//! 2, never a running server) for a flag it does not know.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a program may take to answer `--help` or refuse a flag.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `exe args` to its end, killing it (and failing) past [`LIMIT`]: a program that starts
/// serving instead of answering never ends by itself.
fn run(exe: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let pid = child.id();
    let (done, finished) = mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(mut s) = stdout {
            let _ = s.read_to_end(&mut out);
        }
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut err);
        }
        let status = child.wait();
        let _ = done.send(status.map(|status| Output {
            status,
            stdout: out,
            stderr: err,
        }));
    });
    match finished.recv_timeout(LIMIT) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {}: {e}", exe.display())),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{} {args:?} did not end within {LIMIT:?}", exe.display());
        }
    }
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
