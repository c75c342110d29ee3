//! `micro run`: development mode. Builds and runs the service crates (the packages with a
//! binary) of a workspace, prints their output line by line behind their names, rebuilds and
//! restarts a service when its sources change, and stops them all on Ctrl-C.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use micro::{Error, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a change waits for the changes that come with it (an editor writes several files).
const SETTLE: Duration = Duration::from_millis(300);
/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// The longest line of a service's output printed whole.
const LINE_LIMIT: usize = 64 * 1024;

/// What `run` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Crate or workspace directories (default: the current directory's workspace)
    paths: Vec<PathBuf>,
    /// Where the API gateway (and its web dashboard) in front of the services listens
    #[arg(long, env = "MICRO_GATEWAY_ADDRESS", default_value = "127.0.0.1:8080")]
    pub(crate) gateway_address: String,
    /// Run the services without the API gateway
    #[arg(long)]
    pub(crate) no_gateway: bool,
}

/// One service: a package's binary.
#[derive(Debug, Clone)]
struct Target {
    /// The package name, which prefixes its output.
    name: String,
    bin: String,
    manifest: PathBuf,
    /// The package's directory, watched for changes.
    dir: PathBuf,
    /// Where cargo puts its build.
    target_dir: PathBuf,
}

/// Runs the services until Ctrl-C (or SIGTERM). `env` is passed to every service (the
/// `MICRO_*` settings given to `micro` itself).
pub(crate) async fn run(args: RunArgs, env: Vec<(&'static str, String)>) -> Result<()> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths
    };
    let mut targets = Vec::new();
    for path in &paths {
        targets.extend(discover(path).await?);
    }
    if targets.is_empty() {
        return Err(invalid(format!(
            "no crate with a binary in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Listening for Ctrl-C and SIGTERM from here on: a signal during the first builds still
    // stops what has started.
    let (stopping, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        micro::shutdown_signal().await;
        let _ = stopping.send(true);
    });
    let (changed, mut changes) = mpsc::channel(64);
    let _watcher = watch(&targets, changed)?;
    let mut children: Vec<Option<Child>> = Vec::new();
    for target in &targets {
        let started = tokio::select! {
            child = start(target, &env) => child,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        children.push(started);
        if *stop.borrow() {
            break;
        }
    }
    while !*stop.borrow() {
        let first = tokio::select! {
            first = changes.recv() => first,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let Some(first) = first else { break };
        let mut touched = BTreeSet::from([first]);
        tokio::time::sleep(SETTLE).await;
        while let Ok(more) = changes.try_recv() {
            touched.insert(more);
        }
        for i in touched {
            let target = &targets[i];
            say(&target.name, "sources changed: rebuilding");
            let before = built_at(target);
            let built = tokio::select! {
                built = build(target) => built,
                _ = stop.wait_for(|stopped| *stopped) => break,
            };
            if !built {
                say(&target.name, "the build failed: the running version stays");
            } else if built_at(target) == before && children.get(i).is_some_and(Option::is_some) {
                say(&target.name, "the binary did not change: not restarted");
            } else {
                if let Some(child) = children.get_mut(i).and_then(Option::take) {
                    stop_child(&target.name, child).await;
                }
                if let Some(slot) = children.get_mut(i) {
                    *slot = spawn(target, &env);
                }
            }
        }
    }
    for (target, child) in targets.iter().zip(children) {
        if let Some(child) = child {
            stop_child(&target.name, child).await;
        }
    }
    Ok(())
}

/// When the target's binary was last written, if it exists.
fn built_at(target: &Target) -> Option<std::time::SystemTime> {
    std::fs::metadata(binary(target))
        .and_then(|m| m.modified())
        .ok()
}

fn binary(target: &Target) -> PathBuf {
    target.target_dir.join("debug").join(&target.bin)
}

fn invalid(detail: String) -> Error {
    Error::bad_request("micro.run", detail)
}

fn say(name: &str, what: &str) {
    print_line(name, &format!("micro: {what}"));
}

/// Prints `[name] text`. A closed standard output (the reader went away) is not worth a panic
/// while services are being stopped.
fn print_line(name: &str, text: &str) {
    use std::io::Write as _;

    let _ = writeln!(std::io::stdout().lock(), "[{name}] {text}");
}

/// The packages with a binary target under `path` (a crate, or a workspace's members).
async fn discover(path: &Path) -> Result<Vec<Target>> {
    let manifest = path.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(invalid(format!("{} has no Cargo.toml", path.display())));
    }
    let out = Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| invalid(format!("cannot run cargo metadata: {e}")))?;
    if !out.status.success() {
        return Err(invalid(format!(
            "cargo metadata failed for {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| invalid(format!("unreadable cargo metadata: {e}")))?;
    let target_dir = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    let wanted =
        std::fs::canonicalize(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let mut found = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let Some(manifest) = package["manifest_path"].as_str().map(PathBuf::from) else {
            continue;
        };
        let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        // A crate's own directory names that crate; a workspace root names every member.
        let root = meta["workspace_root"].as_str().map(Path::new);
        if dir != wanted && root != Some(wanted.as_path()) {
            continue;
        }
        let name = package["name"].as_str().unwrap_or_default().to_string();
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if let (true, Some(bin)) = (is_bin, target["name"].as_str()) {
                found.push(Target {
                    name: name.clone(),
                    bin: bin.to_string(),
                    manifest: manifest.clone(),
                    dir: dir.clone(),
                    target_dir: target_dir.clone(),
                });
            }
        }
    }
    Ok(found)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The files cargo builds a crate from, under its directory: what is watched.
const INPUTS: [&str; 4] = ["src", "proto", "build.rs", "Cargo.toml"];

/// Watches the inputs of every target's crate ([`INPUTS`]); sends the index of each target
/// whose crate changed. Hidden files and editors' backups do not count.
fn watch(targets: &[Target], changed: mpsc::Sender<usize>) -> Result<notify::RecommendedWatcher> {
    let dirs: Vec<PathBuf> = targets.iter().map(|t| t.dir.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
                continue;
            }
            let input =
                |dir: &PathBuf| INPUTS.iter().any(|input| path.starts_with(dir.join(input)));
            // Every binary of the crate the file belongs to; a full queue already holds it.
            for (i, _) in dirs.iter().enumerate().filter(|(_, dir)| input(dir)) {
                let _ = changed.try_send(i);
            }
        }
    })
    .map_err(|e| invalid(format!("cannot watch the sources: {e}")))?;
    // The crate's directory itself without descending (editors replace `Cargo.toml` and
    // `build.rs` rather than write them in place), and the source directories whole.
    let mut watched = BTreeSet::new();
    for target in targets {
        let dirs = [
            (target.dir.clone(), notify::RecursiveMode::NonRecursive),
            (target.dir.join("src"), notify::RecursiveMode::Recursive),
            (target.dir.join("proto"), notify::RecursiveMode::Recursive),
        ];
        for (path, mode) in dirs {
            if path.is_dir() && watched.insert(path.clone()) {
                notify::Watcher::watch(&mut watcher, &path, mode)
                    .map_err(|e| invalid(format!("cannot watch {}: {e}", path.display())))?;
            }
        }
    }
    Ok(watcher)
}

/// Builds a target; its compiler output is printed behind its name when the build fails.
async fn build(target: &Target) -> bool {
    let out = Command::new(cargo())
        .args(["build", "--bin", &target.bin, "--manifest-path"])
        .arg(&target.manifest)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                print_line(&target.name, line);
            }
            false
        }
        Err(e) => {
            say(&target.name, &format!("cannot run cargo build: {e}"));
            false
        }
    }
}

/// Builds and starts a target; `None` when it does not build or start.
async fn start(target: &Target, env: &[(&'static str, String)]) -> Option<Child> {
    say(&target.name, "building");
    if !build(target).await {
        say(
            &target.name,
            "the build failed: fix it and save, it is rebuilt then",
        );
        return None;
    }
    spawn(target, env)
}

/// Starts the built binary with its output forwarded line by line behind its name.
fn spawn(target: &Target, env: &[(&'static str, String)]) -> Option<Child> {
    let exe = binary(target);
    let mut command = Command::new(&exe);
    command
        .current_dir(&target.dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            say(
                &target.name,
                &format!("cannot start {}: {e}", exe.display()),
            );
            return None;
        }
    };
    say(
        &target.name,
        &format!("started (pid {})", child.id().unwrap_or_default()),
    );
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(target.name.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(target.name.clone(), err));
    }
    Some(child)
}

/// Prints every line of `from` behind `[name]`; a line longer than [`LINE_LIMIT`] is split.
async fn forward(name: String, from: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines)
            .take(LINE_LIMIT as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                print_line(&name, text.trim_end_matches(['\r', '\n']));
            }
        }
    }
}

/// SIGTERM (the service deregisters and drains), then SIGKILL after [`STOP_WAIT`].
async fn stop_child(name: &str, mut child: Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(STOP_WAIT, child.wait()).await {
        Ok(Ok(status)) => say(name, &format!("stopped ({status})")),
        _ => {
            let _ = child.kill().await;
            say(
                name,
                &format!("killed: it did not stop within {STOP_WAIT:?}"),
            );
        }
    }
}
