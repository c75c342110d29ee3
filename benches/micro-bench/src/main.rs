//! The benchmark program of Micro for Rust: each Micro path measured next to the raw library
//! underneath it, in one run, with the ratios printed.
//!
//! # Running it
//!
//! ```text
//! cargo run --release -p micro-bench                  # full run (2-3 minutes), rewrites BENCHMARKS.md
//! cargo run --release -p micro-bench -- --quick       # smoke run (well under a minute), writes nothing
//! cargo run --release -p micro-bench -- --only selector,registry
//! cargo run --release -p micro-bench -- --only gateway
//! cargo run --release -p micro-bench -- --quick --out /tmp/bench.md
//! cargo run --release -p micro-bench --features mimalloc -- --out /tmp/bench-mimalloc.md
//! ```
//!
//! The full run prints the report and writes it to `BENCHMARKS.md` at the repository root (or
//! to `--out PATH`); it writes nothing when anything failed or was skipped, so the committed
//! record is always complete. `--quick` runs fewer and shorter cases and writes only when
//! given `--out`, and so do runs narrowed with `--only`, `--brokers` or `--messages`.
//! `--no-write` prints without writing.
//!
//! Backends: RabbitMQ on `127.0.0.1:5672` (guest/guest), NATS on `127.0.0.1:4222`, the `etcd`
//! binary (a private etcd is started); Kafka is librdkafka's in-process mock cluster. In
//! `--quick` mode a backend that is not reachable is reported as skipped and does not fail
//! the run, unless `MICRO_TEST_REQUIRE_SERVICES=1`. The exit status is 0 only when everything
//! that could run ran without error; the numbers are never checked against the targets (the
//! targets are goals, printed with whether they were met).
//!
//! # What is measured
//!
//! - **RPC echo** ([`rpc`]): a unary echo of 128 B and 4 KiB payloads at concurrency 1, 16
//!   and 128: raw tonic (the baseline), Micro over the grpc transport, Micro over the http
//!   transport with protobuf and with JSON. Each row runs in a child process of this binary
//!   (server and client on one multi-thread tokio runtime with a worker per core, on
//!   loopback), which reports requests/s, p50, p99 and its peak RSS (`VmHWM`).
//! - **API gateway** ([`gateway`]): an HTTP/1.1 keep-alive client (hyper's, then `wrk` when it
//!   is installed) posting `{"name":..}` to the greeter through micro-gateway
//!   (`/api/greeter/Greeter.Hello`), against the same client posting to the greeter's mucp
//!   endpoint directly: requests/s, p50, p99 and the gateway/direct ratios.
//! - **Allocations** ([`allocs`]): heap blocks allocated per unary echo (128 B), counted by
//!   dhat in a child process per stack: raw tonic, Micro over grpc, Micro over http+protobuf.
//! - **Brokers** ([`brokers`]): publish and consume N messages of 256 B (100 000; 5 000 in
//!   quick mode), timed from the first publish until the subscriber has all N: raw rdkafka vs
//!   micro-broker-kafka on the mock cluster, raw lapin vs micro-broker-rabbitmq, raw async-nats
//!   vs micro-broker-nats, raw hyper POSTs vs micro-broker-http.
//! - **Selector** ([`selector`]): `RegistrySelector::select` + `pick` (and `mark`) per second
//!   and per call, for each strategy, over 10, 100 and 1000 nodes.
//! - **Registry propagation** ([`registry`]): on a private etcd, the time from `register` or
//!   `deregister` to a watching `RegistrySelector` applying the change, p50 and p99.
//!
//! # Full and quick
//!
//! | | full | `--quick` |
//! |---|---|---|
//! | RPC rows | 2 payloads x 3 concurrencies x 4 stacks, 0.3 s warm-up + 1.5 s each, two passes | 128 B, concurrency 16, 4 stacks, 0.2 s + 0.5 s, one pass |
//! | gateway | 2 routes x 3 runs, 0.3 s + 2 s each; wrk 2 x 3 s per route | 1 run, 0.2 s + 0.5 s; wrk 1 s |
//! | allocation counts | 2 000 calls per stack | 200 |
//! | broker messages | 100 000 per run, 2-5 rounds of raw then Micro | 5 000, one round |
//! | selector | 5 rounds of 60 ms per case | 5 rounds of 10 ms |
//! | registry changes | 100 registrations + 100 deregistrations | 10 + 10 |
//!
//! Other work on the machine only ever slows a run down, so where a case runs several times
//! the fastest run is reported, and raw and Micro take turns so that a slow moment does not
//! fall on one side only. The report ends with `FINDINGS.md` (next to this crate's
//! `Cargo.toml`): what profiling found, kept with the program so every regenerated report
//! carries it.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The system allocator, except in the children that count allocations (see `allocs`).
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static ALLOCATOR: allocs::Switch = allocs::Switch;

mod allocs;
mod brokers;
mod gateway;
mod h2load;
mod proto;
mod registry;
mod report;
mod rpc;
mod selector;
mod stats;

use std::path::PathBuf;

use clap::Parser;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use report::{Report, Section};

/// How much to run: the full benchmark or the quick smoke run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `--quick`.
    pub(crate) quick: bool,
    /// Whether an unreachable backend fails the run (always in the full run; in quick mode
    /// with `MICRO_TEST_REQUIRE_SERVICES=1`).
    pub(crate) require_services: bool,
    /// RPC: payload sizes in bytes.
    pub(crate) payloads: Vec<usize>,
    /// RPC: callers in flight at once.
    pub(crate) concurrencies: Vec<usize>,
    /// RPC: how long each row runs before measuring.
    pub(crate) rpc_warmup: Duration,
    /// RPC: how long each row is measured.
    pub(crate) rpc_measure: Duration,
    /// RPC: how many times each row runs (its fastest run counts).
    pub(crate) rpc_passes: u32,
    /// Brokers: messages per run.
    pub(crate) messages: usize,
    /// Brokers: which to run ([`brokers::NAMES`]).
    pub(crate) brokers: Vec<String>,
    /// Selector: how long each case is measured.
    pub(crate) selector_time: Duration,
    /// Registry: registrations (and as many deregistrations) timed.
    pub(crate) changes: usize,
}

impl Settings {
    fn new(quick: bool) -> Self {
        let require = std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        if quick {
            Settings {
                quick,
                require_services: require,
                payloads: vec![128],
                concurrencies: vec![16],
                rpc_warmup: Duration::from_millis(200),
                rpc_measure: Duration::from_millis(500),
                rpc_passes: 1,
                messages: 5_000,
                brokers: all_brokers(),
                selector_time: Duration::from_millis(50),
                changes: 10,
            }
        } else {
            Settings {
                quick,
                require_services: true,
                payloads: vec![128, 4096],
                concurrencies: vec![1, 16, 128],
                rpc_warmup: Duration::from_millis(300),
                rpc_measure: Duration::from_millis(1500),
                rpc_passes: 2,
                messages: 100_000,
                brokers: all_brokers(),
                selector_time: Duration::from_millis(300),
                changes: 100,
            }
        }
    }
}

fn all_brokers() -> Vec<String> {
    brokers::NAMES.iter().map(|s| s.to_string()).collect()
}

/// Where the report goes.
#[derive(Debug)]
enum Output {
    /// Print only.
    None,
    /// Print and write to this file.
    File(PathBuf),
}

const SECTIONS: [&str; 7] = [
    "rpc", "h2load", "gateway", "allocs", "brokers", "selector", "registry",
];

/// Benchmarks every Micro path next to the raw library beneath it, in one run, and prints the
/// ratios; the full run rewrites BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Backends: RabbitMQ on 127.0.0.1:5672, NATS on 127.0.0.1:4222, \
the etcd binary (a private etcd is started), h2load (nghttp2-client), wrk (optional: the gateway \
section runs without it); MICRO_TEST_REQUIRE_SERVICES=1 \
makes a missing backend fail a --quick run. MICRO_BENCH_DHAT_FILE=PATH keeps dhat's profile of an \
allocation count (--allocs-row STACK CALLS)."
)]
struct Args {
    /// Fewer and shorter cases (under a minute); writes nothing unless --out is given
    #[arg(long)]
    quick: bool,
    /// Write the report here (default for the full run: BENCHMARKS.md at the repository root)
    #[arg(long, value_name = "PATH", conflicts_with = "no_write")]
    out: Option<PathBuf>,
    /// Print the report only
    #[arg(long)]
    no_write: bool,
    /// Run only these sections
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SECTIONS))]
    only: Vec<String>,
    /// Run only these brokers (for profiling one; the report is then incomplete)
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(brokers::NAMES))]
    brokers: Option<Vec<String>>,
    /// Messages per broker run (100000; 5000 with --quick)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some(rpc::CHILD_FLAG) {
        // One RPC row, in a child process of the parent run (see `rpc`).
        return rpc::child_main(&raw[1..]);
    }
    if raw.first().map(String::as_str) == Some(allocs::CHILD_FLAG) {
        // One stack's allocation count, in a child process (see `allocs`).
        return allocs::child_main(&raw[1..]);
    }
    let args = Args::parse();
    let only: Vec<String> = if args.only.is_empty() {
        SECTIONS.iter().map(|s| s.to_string()).collect()
    } else {
        args.only
    };
    let (quick, out, no_write, brokers_only) = (args.quick, args.out, args.no_write, args.brokers);
    let messages = args
        .messages
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    // Only a complete full run replaces BENCHMARKS.md; anything less goes where --out says.
    let partial = only.len() < SECTIONS.len() || brokers_only.is_some() || messages.is_some();
    let output = match (no_write, out, quick || partial) {
        (true, _, _) => Output::None,
        (false, Some(path), _) => Output::File(path),
        (false, None, true) => Output::None,
        (false, None, false) => Output::File(default_report_path()),
    };
    let mut settings = Settings::new(quick);
    if let Some(n) = messages {
        settings.messages = n;
    }
    if let Some(names) = brokers_only {
        settings.brokers = names;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("micro-bench: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut report = Report::new(&settings);
    let wants = |name: &str| only.iter().any(|s| s == name);
    if wants("rpc") {
        report.push(announce(rpc::run(&settings)));
    }
    if wants("h2load") {
        report.push(announce(h2load::run(&settings)));
    }
    if wants("gateway") {
        report.push(announce(runtime.block_on(gateway::run(&settings))));
    }
    if wants("allocs") {
        report.push(announce(allocs::run(&settings)));
    }
    if wants("brokers") {
        report.push(announce(runtime.block_on(brokers::run(&settings))));
    }
    if wants("selector") {
        report.push(announce(runtime.block_on(selector::run(&settings))));
    }
    if wants("registry") {
        report.push(announce(runtime.block_on(registry::run(&settings))));
    }
    report.finish(started.elapsed());

    let text = report.markdown();
    println!("{text}");
    let verdict = report.verdict(&settings);
    match (&output, &verdict) {
        (Output::File(path), Ok(())) => match std::fs::write(path, &text) {
            Ok(()) => eprintln!("micro-bench: wrote {}", path.display()),
            Err(e) => {
                eprintln!("micro-bench: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (Output::File(path), Err(_)) => {
            eprintln!(
                "micro-bench: not writing {} (the run is incomplete)",
                path.display()
            )
        }
        (Output::None, _) => {}
    }
    // Background tasks (brokers' consumers, the selector's watch) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("micro-bench: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Says on stderr that a section is done, so a long run shows its progress.
fn announce(section: Section) -> Section {
    eprintln!("micro-bench: {} done", section.title);
    section
}

/// `BENCHMARKS.md` at the repository root (two levels above this crate).
fn default_report_path() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .unwrap_or(crate_dir)
        .join("BENCHMARKS.md")
}
