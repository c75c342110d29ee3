//! `micro new` makes crates that build and pass their own tests as made: one plain, one with
//! `--pubsub`, both on this checkout (`--micro-path`). They build in a target directory of
//! their own under this workspace's, with this workspace's `Cargo.lock`, so that versions
//! match what the workspace was tested with and later runs reuse the build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn micro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_micro"))
        .args(args)
        .output()
        .expect("run micro")
}

/// `cargo <args>` in `dir`, its output shown when it fails.
fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Output {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn new_services_build_and_pass_their_tests() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let checkout = workspace();
    let target = checkout.join("target").join("new-services");
    for (name, extra) in [("demo", None), ("demo-events", Some("--pubsub"))] {
        let mut args = vec!["new", name, "--micro-path"];
        let checkout_arg = checkout.display().to_string();
        let dir_arg = root.path().display().to_string();
        args.push(&checkout_arg);
        args.extend(["--dir", &dir_arg]);
        args.extend(extra);
        let made = micro(&args);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let dir = root.path().join(name);
        for file in [
            "Cargo.toml",
            "build.rs",
            "src/lib.rs",
            "src/main.rs",
            "tests/service.rs",
            "README.md",
        ] {
            assert!(dir.join(file).is_file(), "{name}: no {file}");
        }
        let package = name.replace('-', "_");
        assert!(dir.join(format!("proto/{package}.proto")).is_file());
        std::fs::copy(checkout.join("Cargo.lock"), dir.join("Cargo.lock"))
            .expect("copy Cargo.lock");

        let tested = cargo(&dir, &target, &["test", "--quiet"]);
        let report = String::from_utf8_lossy(&tested.stdout);
        assert!(
            report.contains("test result: ok. 1 passed"),
            "{name}: {report}"
        );

        // The server it made answers --help with Micro's settings.
        let help = Command::new(target.join("debug").join(name))
            .arg("--help")
            .output()
            .expect("run the new server");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("--registry") && help.contains("MICRO_REGISTRY"),
            "{help}"
        );
    }

    // Making it twice is refused, and so is a name that cannot be a crate.
    let again = micro(&["new", "demo", "--dir", &root.path().display().to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = micro(&[
        "new",
        "Bad Name",
        "--dir",
        &root.path().display().to_string(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
}
