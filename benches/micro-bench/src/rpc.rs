//! RPC echo: raw tonic (the baseline) against Micro over the grpc transport and over the http
//! transport (protobuf and JSON), for each payload size and concurrency.
//!
//! Each row runs in a child process of this binary (`micro-bench --rpc-row ...`), so that its
//! peak RSS (`VmHWM` in `/proc/self/status`, read when the row ends) is its own. In the child,
//! the server and the client share one multi-thread tokio runtime with a worker per core and
//! talk over loopback. `concurrency` tasks call in a loop, each waiting for its reply before
//! the next call; every call made after the warm-up and finished before the end is timed.
//! Every stack sends the same bytes and checks the echo's length.

use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::broker::MemoryBroker;
use micro::core::Registry;
use micro::registry::MemoryRegistry;
use serde::{Deserialize, Serialize};

use crate::proto::{micro_echo, tonic_echo};
use crate::report::{Section, Table, Target};
use crate::stats::{self, quantile};
use crate::Settings;

/// The first argument that makes this binary run one RPC row.
pub(crate) const CHILD_FLAG: &str = "--rpc-row";

/// What carries the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stack {
    /// tonic's generated client and server, nothing else: the baseline.
    Tonic,
    /// Micro's generated client and handler, `MICRO_TRANSPORT=grpc`.
    MicroGrpc,
    /// Micro over the default http transport, protobuf codec.
    MicroHttpProto,
    /// Micro over the http transport, JSON codec.
    MicroHttpJson,
}

/// Every stack, the baseline first.
const STACKS: [Stack; 4] = [
    Stack::Tonic,
    Stack::MicroGrpc,
    Stack::MicroHttpProto,
    Stack::MicroHttpJson,
];

impl Stack {
    /// The name on the command line of a child.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Stack::Tonic => "tonic",
            Stack::MicroGrpc => "micro-grpc",
            Stack::MicroHttpProto => "micro-http-proto",
            Stack::MicroHttpJson => "micro-http-json",
        }
    }

    /// The name in the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Stack::Tonic => "raw tonic (baseline)",
            Stack::MicroGrpc => "Micro, grpc transport",
            Stack::MicroHttpProto => "Micro, http transport, protobuf",
            Stack::MicroHttpJson => "Micro, http transport, JSON",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        STACKS.into_iter().find(|k| k.arg() == s)
    }
}

/// What a child reports, as one JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
struct RowResult {
    /// Calls timed (made after the warm-up, finished before the end).
    requests: u64,
    /// The measured span.
    seconds: f64,
    /// Median latency.
    p50_ns: u64,
    /// 99th percentile latency.
    p99_ns: u64,
    /// Calls that failed or came back wrong (warm-up included).
    errors: u64,
    /// The first of those errors.
    first_error: Option<String>,
    /// Peak resident set size of the child (`VmHWM`).
    peak_kib: u64,
    /// Resident set size when the child started, before any server or client existed.
    base_kib: u64,
}

impl RowResult {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs every row, each in a child process, and builds the section.
pub(crate) fn run(settings: &Settings) -> Section {
    let mut section = Section::new(
        "RPC echo",
        format!(
            "A unary echo (`echo.Echo/Call`, a `bytes` payload sent and returned) on loopback. \
             Raw tonic is the baseline: tonic's own generated client and server from the same \
             `echo.proto`. The Micro rows use the client and handler `micro-build` generates, \
             a `MemoryRegistry` and the `RegistrySelector` (random), on the grpc transport, or \
             on the http transport (mucp over HTTP/1.1 keep-alive) with the protobuf or the \
             JSON codec. Each row runs in its own child process: server and client on one \
             multi-thread tokio runtime with a worker per core. `concurrency` tasks each call \
             in a loop, one call in flight each; after a {:.1} s warm-up every call is timed for \
             {:.1} s. Throughput counts the calls finished in that span; p50/p99 are their \
             latencies. Every row runs {} time(s), in separate passes over all rows, and \
             its fastest run is reported. Peak RSS is the child's `VmHWM` (whole process: binary, runtime, \
             server, client and the latency samples). The ratios divide by the raw tonic row \
             of the same payload and concurrency: throughput (higher is better) and p99 \
             (lower is better).",
            settings.rpc_warmup.as_secs_f64(),
            settings.rpc_measure.as_secs_f64(),
            settings.rpc_passes
        ),
    );
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            section.failed("RPC echo", format!("cannot find this program's path: {e}"));
            return section;
        }
    };
    let mut table = Table::new(&[
        "stack",
        "payload",
        "concurrency",
        "requests/s",
        "p50",
        "p99",
        "peak RSS",
        "throughput vs tonic",
        "p99 vs tonic",
    ]);
    // Every row runs once per pass, the passes one after the other, so that a slow moment of
    // the machine hits one run of a row rather than the row; each row keeps its fastest run.
    let cases: Vec<(usize, usize, Stack)> = settings
        .payloads
        .iter()
        .flat_map(|&p| {
            settings
                .concurrencies
                .iter()
                .flat_map(move |&c| STACKS.map(|s| (p, c, s)))
        })
        .collect();
    let mut results: Vec<Result<RowResult, String>> =
        cases.iter().map(|_| Err("not run".to_string())).collect();
    for pass in 1..=settings.rpc_passes {
        for (i, &(payload, concurrency, stack)) in cases.iter().enumerate() {
            if pass > 1 && results[i].is_err() {
                continue;
            }
            eprintln!(
                "micro-bench: rpc {}, {}, concurrency {concurrency}, pass {pass}",
                stack.label(),
                stats::bytes(payload)
            );
            let run = match run_child(&exe, stack, payload, concurrency, settings) {
                Ok(r) if r.errors == 0 && r.requests > 0 => Ok(r),
                Ok(r) => Err(format!(
                    "{} failed call(s), the first: {}",
                    r.errors,
                    r.first_error.as_deref().unwrap_or("no call finished")
                )),
                Err(why) => Err(why),
            };
            results[i] = match (std::mem::replace(&mut results[i], Err(String::new())), run) {
                (_, Err(why)) => Err(why),
                (Ok(old), Ok(new)) if old.rate() >= new.rate() => Ok(old),
                (_, Ok(new)) => Ok(new),
            };
        }
    }

    // (stack, throughput ratio, p99 ratio, case) for the targets.
    let mut ratios: Vec<(Stack, f64, f64, String)> = Vec::new();
    let mut bases = Vec::new();
    let mut baseline: Option<&RowResult> = None;
    for (&(payload, concurrency, stack), result) in cases.iter().zip(&results) {
        if stack == Stack::Tonic {
            baseline = None;
        }
        let r = match result {
            Ok(r) => r,
            Err(why) => {
                let case = format!(
                    "{}, {}, concurrency {concurrency}",
                    stack.label(),
                    stats::bytes(payload)
                );
                section.failed(&case, why);
                table.row(failed_row(stack, payload, concurrency));
                continue;
            }
        };
        bases.push(r.base_kib);
        let (tput, p99) = match baseline {
            Some(b) => (
                stats::ratio(r.rate(), b.rate()),
                stats::ratio(r.p99_ns as f64, b.p99_ns as f64),
            ),
            None if stack == Stack::Tonic => ("1.00x".into(), "1.00x".into()),
            None => ("n/a".into(), "n/a".into()),
        };
        if let (Some(b), false) = (baseline, stack == Stack::Tonic) {
            if b.rate() > 0.0 && b.p99_ns > 0 {
                ratios.push((
                    stack,
                    r.rate() / b.rate(),
                    r.p99_ns as f64 / b.p99_ns as f64,
                    format!("{}, concurrency {concurrency}", stats::bytes(payload)),
                ));
            }
        }
        table.row(vec![
            stack.label().to_string(),
            stats::bytes(payload),
            concurrency.to_string(),
            stats::count(r.rate()),
            stats::latency(Duration::from_nanos(r.p50_ns)),
            stats::latency(Duration::from_nanos(r.p99_ns)),
            stats::mib(r.peak_kib),
            tput,
            p99,
        ]);
        if stack == Stack::Tonic {
            baseline = Some(r);
        }
    }
    if let Some(min) = bases.iter().min() {
        section.method.push_str(&format!(
            " A child's RSS before it starts any server or client is about {}.",
            stats::mib(*min)
        ));
    }
    section.tables.push(table);
    section.targets = targets(&ratios);
    section
}

fn failed_row(stack: Stack, payload: usize, concurrency: usize) -> Vec<String> {
    let mut row = vec![
        stack.label().to_string(),
        stats::bytes(payload),
        concurrency.to_string(),
        "failed".to_string(),
    ];
    row.resize(9, "-".to_string());
    row
}

/// The RPC goals, each judged on its worst case.
fn targets(ratios: &[(Stack, f64, f64, String)]) -> Vec<Target> {
    let worst = |stack: Stack, pick: fn(&(Stack, f64, f64, String)) -> f64, max: bool| {
        let mut it = ratios.iter().filter(|r| r.0 == stack);
        let first = it.next()?;
        let w = it.fold(first, |w, r| {
            let better = if max {
                pick(r) > pick(w)
            } else {
                pick(r) < pick(w)
            };
            if better {
                r
            } else {
                w
            }
        });
        Some((pick(w), w.3.clone()))
    };
    let judge = |goal: &str, found: Option<(f64, String)>, ok: fn(f64) -> bool| match found {
        Some((value, case)) => Target {
            goal: goal.to_string(),
            measured: format!("{value:.2}x at worst ({case})"),
            met: Some(ok(value)),
        },
        None => Target {
            goal: goal.to_string(),
            measured: "not measured".to_string(),
            met: None,
        },
    };
    vec![
        judge(
            "Micro grpc throughput >= 0.9x raw tonic",
            worst(Stack::MicroGrpc, |r| r.1, false),
            |v| v >= 0.9,
        ),
        judge(
            "Micro grpc p99 <= 1.2x raw tonic",
            worst(Stack::MicroGrpc, |r| r.2, true),
            |v| v <= 1.2,
        ),
        judge(
            "Micro http+protobuf throughput >= 1.1x raw tonic",
            worst(Stack::MicroHttpProto, |r| r.1, false),
            |v| v >= 1.1,
        ),
    ]
}

/// Runs one row in a child process and reads its result.
fn run_child(
    exe: &std::path::Path,
    stack: Stack,
    payload: usize,
    concurrency: usize,
    settings: &Settings,
) -> Result<RowResult, String> {
    child_result(
        exe,
        &[
            CHILD_FLAG.to_string(),
            stack.arg().to_string(),
            payload.to_string(),
            concurrency.to_string(),
            settings.rpc_warmup.as_millis().to_string(),
            settings.rpc_measure.as_millis().to_string(),
        ],
    )
}

/// Runs this program as a child with `args` and reads the JSON line it ends its output with
/// (the RPC rows' and the allocation counts' children).
pub(crate) fn child_result<T: serde::de::DeserializeOwned>(
    exe: &std::path::Path,
    args: &[String],
) -> Result<T, String> {
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the child exited with {}: {}",
            output.status,
            stdout.trim()
        ));
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unreadable child result {line:?}: {e}"))
}

/// `micro-bench --rpc-row STACK PAYLOAD CONCURRENCY WARMUP_MS MEASURE_MS`: runs one row and
/// prints its [`RowResult`] as JSON (or the error) on stdout.
pub(crate) fn child_main(args: &[String]) -> ExitCode {
    let base_kib = status_kib("VmRSS");
    let parsed = (|| {
        let [stack, payload, concurrency, warmup, measure] = args else {
            return None;
        };
        Some((
            Stack::parse(stack)?,
            payload.parse::<usize>().ok()?,
            concurrency.parse::<usize>().ok()?.max(1),
            Duration::from_millis(warmup.parse().ok()?),
            Duration::from_millis(measure.parse().ok()?),
        ))
    })();
    let Some((stack, payload, concurrency, warmup, measure)) = parsed else {
        println!("bad arguments {args:?}: want STACK PAYLOAD CONCURRENCY WARMUP_MS MEASURE_MS");
        return ExitCode::from(2);
    };
    // Setup, warm-up and measurement, with room for a slow start; a stuck call cannot hold
    // the row forever.
    let limit = warmup + measure + Duration::from_secs(30);
    child_answer(limit, "the row", async move {
        let mut r = row(stack, payload, concurrency, warmup, measure).await?;
        r.peak_kib = status_kib("VmHWM");
        r.base_kib = base_kib;
        Ok(r)
    })
}

/// The child side of [`child_result`]: runs `work` within `limit` on a multi-thread runtime,
/// prints its result as one JSON line (or the error) and exits, without waiting for servers
/// and connections to wind down.
pub(crate) fn child_answer<T: Serialize>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(format!("{what} did not finish within {limit:?}")))
    });
    let line = result.and_then(|r| {
        serde_json::to_string(&r).map_err(|e| format!("cannot encode the result: {e}"))
    });
    match line {
        Ok(line) => {
            println!("{line}");
            std::process::exit(0);
        }
        Err(e) => {
            println!("{e}");
            std::process::exit(1);
        }
    }
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`); 0 where there is none.
pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Starts the server and client of `stack`, then drives the load.
async fn row(
    stack: Stack,
    payload: usize,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<RowResult, String> {
    let caller = connect(stack, payload).await?;
    Ok(drive(caller, payload, concurrency, warmup, measure).await)
}

/// Starts the server and client of `stack` and makes one call, so that a stack that cannot
/// echo at all fails with its own error.
pub(crate) async fn connect(stack: Stack, payload: usize) -> Result<Caller, String> {
    let mut caller = match stack {
        Stack::Tonic => tonic_pair().await?,
        Stack::MicroGrpc => micro_pair("grpc", None).await?,
        Stack::MicroHttpProto => micro_pair("http", None).await?,
        Stack::MicroHttpJson => micro_pair("http", Some("application/json")).await?,
    };
    let n = caller.call(vec![7; payload]).await?;
    if n != payload {
        return Err(format!("the echo of {payload} B came back with {n} B"));
    }
    Ok(caller)
}

/// One side of a call: the client of a stack.
#[derive(Clone)]
pub(crate) enum Caller {
    Tonic(tonic_echo::echo_client::EchoClient<tonic::transport::Channel>),
    Micro(micro_echo::EchoClient),
}

impl Caller {
    /// Sends `payload`, returns the length of the echo.
    pub(crate) async fn call(&mut self, payload: Vec<u8>) -> Result<usize, String> {
        match self {
            Caller::Tonic(client) => client
                .call(tonic_echo::EchoRequest { payload })
                .await
                .map(|r| r.into_inner().payload.len())
                .map_err(|s| format!("tonic: {s}")),
            Caller::Micro(client) => client
                .call(micro_echo::EchoRequest { payload })
                .await
                .map(|r| r.into_inner().payload.len())
                .map_err(|e| format!("micro: {e}")),
        }
    }
}

/// Calls in a loop from `concurrency` tasks; times the calls of the measured span.
async fn drive(
    caller: Caller,
    payload: usize,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> RowResult {
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let body = vec![7u8; payload];
            // Nanoseconds; u32 holds 4 s, far beyond any call that finishes in the span.
            let mut samples: Vec<u32> = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                match caller.call(body.clone()).await {
                    Ok(n) if n == payload => {}
                    Ok(n) => {
                        errors += 1;
                        first_error
                            .get_or_insert(format!("the echo of {payload} B came back with {n} B"));
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                let t1 = Instant::now();
                if t0 >= from && t1 <= until {
                    samples.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok((samples, e, first)) => {
                all.extend(samples);
                errors += e;
                if first_error.is_none() {
                    first_error = first;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("a caller task panicked: {e}"));
            }
        }
    }
    all.sort_unstable();
    RowResult {
        requests: all.len() as u64,
        seconds: measure.as_secs_f64(),
        p50_ns: u64::from(quantile(&all, 0.50)),
        p99_ns: u64::from(quantile(&all, 0.99)),
        errors,
        first_error,
        peak_kib: 0,
        base_kib: 0,
    }
}

/// tonic's echo server.
#[derive(Debug, Clone, Copy)]
struct TonicEcho;

#[tonic::async_trait]
impl tonic_echo::echo_server::Echo for TonicEcho {
    async fn call(
        &self,
        request: tonic::Request<tonic_echo::EchoRequest>,
    ) -> Result<tonic::Response<tonic_echo::EchoReply>, tonic::Status> {
        Ok(tonic::Response::new(tonic_echo::EchoReply {
            payload: request.into_inner().payload,
        }))
    }
}

/// Starts tonic's server on a loopback port and connects tonic's client to it.
async fn tonic_pair() -> Result<Caller, String> {
    let addr = tonic_server().await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad endpoint: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("tonic cannot connect to {addr}: {e}"))?;
    Ok(Caller::Tonic(tonic_echo::echo_client::EchoClient::new(
        channel,
    )))
}

/// Starts tonic's echo server on a loopback port, for as long as the runtime runs.
pub(crate) async fn tonic_server() -> Result<std::net::SocketAddr, String> {
    use tokio_stream::StreamExt as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    // Micro's transports turn Nagle off on both ends; so does tonic's channel, and so here.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tonic_echo::echo_server::EchoServer::new(TonicEcho))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

/// Micro's echo handler.
#[derive(Debug, Clone, Copy)]
struct MicroEcho;

#[micro::async_trait]
impl micro_echo::Echo for MicroEcho {
    async fn call(
        &self,
        request: micro::Request<micro_echo::EchoRequest>,
    ) -> Result<micro::Response<micro_echo::EchoReply>, micro::Error> {
        Ok(micro::Response::new(micro_echo::EchoReply {
            payload: request.into_inner().payload,
        }))
    }
}

/// Starts a Micro echo service on `transport` and a Micro client (another service on the same
/// in-memory registry) that finds it through its selector.
async fn micro_pair(transport: &str, content_type: Option<&str>) -> Result<Caller, String> {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let transport = micro::plugins::transport(transport).map_err(|e| format!("transport: {e}"))?;
    micro_server(registry.clone(), transport.clone()).await?;
    let caller = micro::Service::builder("bench.caller")
        .ignore_env()
        .registry(registry)
        .transport(transport)
        .broker(Arc::new(MemoryBroker::new()))
        .build()
        .map_err(|e| format!("building the client: {e}"))?;
    let mut client = caller.client();
    if let Some(ct) = content_type {
        client = client.with_content_type(ct);
    }
    Ok(Caller::Micro(micro_echo::EchoClient::new(
        "bench.echo",
        client,
    )))
}

/// Starts a Micro echo service (`bench.echo`) on `transport`, registered in `registry`, for as
/// long as the process lives; returns the address it serves on.
pub(crate) async fn micro_server(
    registry: Arc<dyn Registry>,
    transport: Arc<dyn micro::core::Transport>,
) -> Result<String, String> {
    let server = micro::Service::builder("bench.echo")
        .ignore_env()
        .registry(registry)
        .transport(transport)
        .broker(Arc::new(MemoryBroker::new()))
        .handler(micro_echo::echo_handler(MicroEcho))
        .build()
        .map_err(|e| format!("building the server: {e}"))?;
    server
        .start()
        .await
        .map_err(|e| format!("starting the server: {e}"))?;
    let address = micro::rpc::Server::address(server.server())
        .ok_or_else(|| "the server has no address".to_string())?;
    // The service keeps serving as long as its server lives: leak it for the process's life.
    std::mem::forget(server);
    Ok(address)
}
