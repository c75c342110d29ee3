//! Allocations per unary echo, counted by dhat: raw tonic (the baseline) against Micro over
//! the grpc transport and over the http transport with protobuf.
//!
//! Each stack runs in a child process of this binary (`micro-bench --allocs-row ...`) whose
//! global allocator is switched to `dhat::Alloc` before anything else happens; every other
//! process of the run (and every other section) allocates straight from the system allocator.
//! The child starts the stack's server and client in one process, warms up, starts dhat's
//! heap profiler and makes `calls` echo calls one after another: the count is every block
//! allocated in the process (client, server, runtime) during those calls, divided by them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::{Section, Table, Target};
use crate::rpc::{self, Stack};
use crate::{stats, Settings};

/// The first argument that makes this binary run one stack's count.
pub(crate) const CHILD_FLAG: &str = "--allocs-row";

/// The stacks counted, the baseline first.
const STACKS: [Stack; 3] = [Stack::Tonic, Stack::MicroGrpc, Stack::MicroHttpProto];

/// The echo's payload.
const PAYLOAD: usize = 128;

/// Calls made before counting starts (connections, pools and caches warm).
const WARMUP_CALLS: usize = 200;

/// Set once by a counting child, before it allocates anything that outlives the switch: from
/// then on every allocation goes through dhat.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, or dhat's (which wraps the system allocator) in a counting child.
/// A block from one may be freed by the other: dhat ignores blocks it never saw.
#[derive(Debug)]
pub(crate) struct Switch;

// SAFETY: every call is forwarded to an allocator that upholds `GlobalAlloc`'s contract, and
// both hand out and take back blocks of the same system allocator. The one unsafe code of the
// workspace: dhat must be the global allocator of the processes it counts, and only of those.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            dhat::Alloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            dhat::Alloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            dhat::Alloc.realloc(ptr, layout, new_size)
        } else {
            System.realloc(ptr, layout, new_size)
        }
    }
}

/// What a child reports, as one JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Count {
    calls: u64,
    blocks: u64,
    bytes: u64,
}

impl Count {
    fn blocks_per_call(&self) -> f64 {
        self.blocks as f64 / self.calls.max(1) as f64
    }

    fn bytes_per_call(&self) -> f64 {
        self.bytes as f64 / self.calls.max(1) as f64
    }
}

/// Counts each stack in a child process and builds the section.
pub(crate) fn run(settings: &Settings) -> Section {
    let calls = if settings.quick { 200 } else { 2_000 };
    let mut section = Section::new(
        "Allocations per unary echo (dhat)",
        format!(
            "Heap blocks allocated per unary echo of {PAYLOAD} B, client and server in one \
             process, counted by dhat's heap profiler (`dhat::HeapStats::total_blocks`, \
             reallocations included) over {calls} sequential calls after {WARMUP_CALLS} \
             warm-up calls. The stacks are those of the RPC echo section. Only these child \
             processes allocate through dhat; everything else in the run uses the system \
             allocator directly."
        ),
    );
    if cfg!(feature = "mimalloc") {
        section.skipped(
            "allocation counts",
            "dhat wraps the system allocator; build without --features mimalloc to count",
        );
        return section;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            section.failed(
                "allocations",
                format!("cannot find this program's path: {e}"),
            );
            return section;
        }
    };
    let mut table = Table::new(&[
        "stack",
        "allocations per call",
        "bytes allocated per call",
        "allocations vs tonic",
    ]);
    let mut baseline: Option<f64> = None;
    let mut grpc_ratio: Option<f64> = None;
    for stack in STACKS {
        eprintln!("micro-bench: allocations, {}", stack.label());
        let count = match run_child(&exe, stack, calls) {
            Ok(count) => count,
            Err(why) => {
                section.failed(&format!("allocations, {}", stack.label()), why);
                table.row(vec![
                    stack.label().to_string(),
                    "failed".into(),
                    "-".into(),
                    "-".into(),
                ]);
                continue;
            }
        };
        let per_call = count.blocks_per_call();
        let versus = match baseline {
            Some(base) if stack != Stack::Tonic => {
                if stack == Stack::MicroGrpc && base > 0.0 {
                    grpc_ratio = Some(per_call / base);
                }
                stats::ratio(per_call, base)
            }
            _ => "1.00x".to_string(),
        };
        if stack == Stack::Tonic {
            baseline = Some(per_call);
        }
        table.row(vec![
            stack.label().to_string(),
            format!("{per_call:.1}"),
            stats::bytes(count.bytes_per_call().round() as usize),
            versus,
        ]);
    }
    section.tables.push(table);
    section.targets.push(Target {
        goal: "Micro grpc allocations per unary echo <= 1.3x raw tonic".into(),
        measured: grpc_ratio.map_or_else(|| "not measured".into(), |r| format!("{r:.2}x")),
        met: grpc_ratio.map(|r| r <= 1.3),
    });
    section
}

/// Counts one stack in a child process.
fn run_child(exe: &std::path::Path, stack: Stack, calls: usize) -> Result<Count, String> {
    let args = [
        CHILD_FLAG.to_string(),
        stack.arg().to_string(),
        calls.to_string(),
    ];
    rpc::child_result(exe, &args)
}

/// `micro-bench --allocs-row STACK CALLS`: counts one stack and prints its [`Count`] as JSON
/// (or the error) on stdout.
pub(crate) fn child_main(args: &[String]) -> ExitCode {
    COUNTING.store(true, Ordering::Relaxed);
    let parsed = match args {
        [stack, calls] => Stack::parse(stack).zip(calls.parse::<usize>().ok()),
        _ => None,
    };
    let Some((stack, calls)) = parsed else {
        println!("bad arguments {args:?}: want STACK CALLS");
        return ExitCode::from(2);
    };
    rpc::child_answer(Duration::from_secs(120), "the count", count(stack, calls))
}

/// Warms `stack` up, then counts the blocks allocated by `calls` calls.
async fn count(stack: Stack, calls: usize) -> Result<Count, String> {
    let mut caller = rpc::connect(stack, PAYLOAD).await?;
    let body = vec![7u8; PAYLOAD];
    for _ in 0..WARMUP_CALLS {
        caller.call(body.clone()).await?;
    }
    // `MICRO_BENCH_DHAT_FILE=path` keeps dhat's profile of the counted calls (with longer
    // backtraces), for dh_view.html or a script; otherwise four frames are enough to count.
    let profiler = match std::env::var_os("MICRO_BENCH_DHAT_FILE") {
        Some(path) => dhat::Profiler::builder()
            .file_name(path)
            .trim_backtraces(Some(16))
            .build(),
        None => dhat::Profiler::builder()
            .testing()
            .trim_backtraces(Some(4))
            .build(),
    };
    let before = dhat::HeapStats::get();
    for _ in 0..calls {
        let n = caller.call(body.clone()).await?;
        if n != PAYLOAD {
            return Err(format!("the echo of {PAYLOAD} B came back with {n} B"));
        }
    }
    let after = dhat::HeapStats::get();
    drop(profiler);
    // The payload each call clones is the caller's, as in every stack: it is counted too.
    Ok(Count {
        calls: calls as u64,
        blocks: after.total_blocks - before.total_blocks,
        bytes: after.total_bytes - before.total_bytes,
    })
}
