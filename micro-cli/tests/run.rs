//! `micro run` on a two-service workspace made by `micro new`, on the default stack (mDNS on
//! loopback): both services start and log behind their names, a source change restarts only
//! the service it belongs to, and SIGINT stops both, which deregister.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro::core::Registry;

/// Both first builds, on a cold machine, end within this.
const BUILD_BOUND: Duration = Duration::from_secs(400);
/// Every other wait ends within this.
const BOUND: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two services, named after this process so that no other test's services answer.
fn names() -> [String; 2] {
    let pid = std::process::id();
    [format!("run-alpha-{pid}"), format!("run-beta-{pid}")]
}

/// The ids of `name`'s nodes, sorted; empty when it is not registered.
async fn nodes(registry: &Arc<dyn Registry>, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .get_service(name)
        .await
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.nodes.into_iter().map(|n| n.id))
        .collect();
    ids.sort();
    ids
}

/// Polls until `check` holds for the registry, or panics after `bound` saying `what`.
async fn until<F>(
    registry: &Arc<dyn Registry>,
    bound: Duration,
    what: &str,
    check: F,
) -> (Vec<String>, Vec<String>)
where
    F: Fn(&[String], &[String]) -> bool,
{
    let deadline = Instant::now() + bound;
    loop {
        let [a, b] = names();
        let (alpha, beta) = (nodes(registry, &a).await, nodes(registry, &b).await);
        if check(&alpha, &beta) {
            return (alpha, beta);
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {bound:?}: alpha {alpha:?}, beta {beta:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_builds_restarts_on_change_and_stops_cleanly() -> Result<(), Box<dyn std::error::Error>>
{
    let checkout = workspace();
    let root = tempfile::tempdir()?;
    let [alpha_name, beta_name] = names();
    for name in [&alpha_name, &beta_name] {
        let made = Command::new(env!("CARGO_BIN_EXE_micro"))
            .args(["new", name, "--micro-path"])
            .arg(&checkout)
            .arg("--dir")
            .arg(root.path())
            .output()?;
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    std::fs::write(
        root.path().join("Cargo.toml"),
        format!("[workspace]\nmembers = [{alpha_name:?}, {beta_name:?}]\nresolver = \"2\"\n"),
    )?;
    std::fs::copy(checkout.join("Cargo.lock"), root.path().join("Cargo.lock"))?;

    let mut child = common::micro(&["run", "--gateway-address", "127.0.0.1:0"])
        .current_dir(root.path())
        .env(
            "CARGO_TARGET_DIR",
            checkout.join("target").join("new-services"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let output = child.stdout.take().ok_or("no stdout")?;
    let mut running = Running(child);
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Ok(mut seen) = seen.lock() {
                seen.push(line);
            }
        }
    });

    let registry = micro::plugins::registry("mdns", None)?;
    let (alpha, beta) = until(
        &registry,
        BUILD_BOUND,
        "both services registering",
        |a, b| a.len() == 1 && b.len() == 1,
    )
    .await;

    // The gateway in front of them lists them.
    let printed = lines.lock().map_err(|e| e.to_string())?.clone();
    let gateway = printed
        .iter()
        .find_map(|l| l.strip_prefix("[gateway] micro: serving "))
        .ok_or_else(|| format!("no gateway line in:\n{}", printed.join("\n")))?
        .to_string();
    let listed = Command::new("curl")
        .args(["-s", "--max-time", "20", &format!("{gateway}/services")])
        .output()?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&format!("\"{alpha_name}\"")), "{listed}");

    // Changing alpha's source restarts alpha (a new node id) and leaves beta alone.
    let lib = root.path().join(&alpha_name).join("src/lib.rs");
    let mut source = std::fs::read_to_string(&lib)?;
    source.push_str("\n/// Changed while running.\npub const CHANGED: bool = true;\n");
    std::fs::write(&lib, source)?;
    let (alpha_after, beta_after) = until(&registry, BOUND, "alpha's restart", |a, _| {
        a.len() == 1 && a != alpha.as_slice()
    })
    .await;
    assert_ne!(alpha_after, alpha);
    assert_eq!(beta_after, beta, "beta was restarted by a change to alpha");

    let printed = lines.lock().map_err(|e| e.to_string())?.clone();
    for expected in [
        format!("[{alpha_name}] "),
        format!("[{beta_name}] "),
        format!("[{alpha_name}] micro: sources changed: rebuilding"),
    ] {
        assert!(
            printed.iter().any(|l| l.starts_with(&expected)),
            "no line starting with {expected:?} in:\n{}",
            printed.join("\n")
        );
    }
    assert!(
        !printed
            .iter()
            .any(|l| l.starts_with(&format!("[{beta_name}] micro: sources changed"))),
        "beta was rebuilt:\n{}",
        printed.join("\n")
    );

    // SIGINT, as Ctrl-C sends it: both stop and deregister, and micro run exits cleanly.
    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()?
        .success());
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = running.0.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "micro run did not stop within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "micro run exited with {status}");
    let (alpha, beta) = until(&registry, BOUND, "both deregistering", |a, b| {
        a.is_empty() && b.is_empty()
    })
    .await;
    assert!(alpha.is_empty() && beta.is_empty());
    Ok(())
}
