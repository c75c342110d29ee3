//! API gateway: one HTTP/1.1 keep-alive client posting `{"name":"bench"}` to the greeter
//! through micro-gateway (`POST /api/greeter/Greeter.Hello`), against the same client posting
//! the same body to the greeter's own mucp endpoint (`POST /` with Go Micro's headers), in one
//! run, so the ratio is the gateway's cost.
//!
//! The greeter (`examples/greeter`'s handler on the http transport) and the gateway run in
//! this process on loopback, sharing a `MemoryRegistry`. The client is hyper's HTTP/1.1
//! connection API: a fixed number of connections, each driven by one task with one request in
//! flight. When `wrk` is installed it is run against both URLs too, as a client that is
//! neither hyper nor Micro.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use micro::broker::MemoryBroker;
use micro::core::Registry;
use micro::registry::MemoryRegistry;
use micro::Service;
use micro_gateway::{Gateway, GatewayOptions};

use crate::report::{Section, Table, Target};
use crate::stats::{self, quantile};
use crate::Settings;

/// Connections held open by each client, one request in flight on each.
const CONNECTIONS: usize = 16;
/// The request body of every call, and what its reply must contain.
const BODY: &str = r#"{"name":"bench"}"#;
const GREETING: &str = "Hello bench";
/// A request without a reply by then fails the row (nothing here should take a millisecond).
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long past its own `-d` a wrk run may take before it is killed.
const WRK_GRACE: Duration = Duration::from_secs(10);

/// How a row reaches the greeter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The greeter's mucp endpoint: the baseline.
    Direct,
    /// micro-gateway's JSON route in front of it.
    Gateway,
}

/// The baseline first.
const ROUTES: [Route; 2] = [Route::Direct, Route::Gateway];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct: the greeter's mucp endpoint (baseline)",
            Route::Gateway => "through micro-gateway",
        }
    }

    /// The request line's path.
    fn path(self) -> &'static str {
        match self {
            Route::Direct => "/",
            Route::Gateway => "/api/greeter/Greeter.Hello",
        }
    }

    /// Headers besides `Host` and `Content-Type`: the direct call names its service and
    /// endpoint the way a Go Micro client does; the gateway reads them off the path.
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Route::Direct => &[
                ("micro-service", "greeter"),
                ("micro-endpoint", "Greeter.Hello"),
            ],
            Route::Gateway => &[],
        }
    }

    fn short(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Gateway => "gateway",
        }
    }
}

/// How long and how often each client runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: Duration,
    measure: Duration,
    /// Runs per route, alternating between the routes; the fastest counts.
    passes: u32,
    /// wrk's `-d`, whole seconds (wrk takes no smaller unit).
    wrk_seconds: u64,
    wrk_passes: u32,
}

impl Plan {
    fn new(settings: &Settings) -> Self {
        if settings.quick {
            Plan {
                warmup: Duration::from_millis(200),
                measure: Duration::from_millis(500),
                passes: 1,
                wrk_seconds: 1,
                wrk_passes: 1,
            }
        } else {
            Plan {
                warmup: Duration::from_millis(300),
                measure: Duration::from_secs(2),
                passes: 3,
                wrk_seconds: 3,
                wrk_passes: 2,
            }
        }
    }
}

/// One measured run of a route.
#[derive(Debug)]
struct Run {
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The greeter and the gateway in front of it, running until [`Servers::stop`].
struct Servers {
    greeter: Service,
    gateway: Gateway,
    /// The greeter's node address, as registered.
    direct: SocketAddr,
}

impl Servers {
    fn addr(&self, route: Route) -> SocketAddr {
        match route {
            Route::Direct => self.direct,
            Route::Gateway => self.gateway.local_addr(),
        }
    }

    async fn stop(self) {
        // Neither may hold the rest of the run: the measurements are in.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.gateway.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.greeter.stop()).await;
    }
}

/// Runs the section: micro-bench's client on both routes, then wrk when it is installed.
pub(crate) async fn run(settings: &Settings) -> Section {
    let plan = Plan::new(settings);
    let mut section = Section::new(
        "API gateway",
        format!(
            "The greeter (`examples/greeter`'s handler, `Greeter.Hello`) on Micro's default http \
             transport, and micro-gateway (`Gateway::bind` with `GatewayOptions::default()`) in \
             front of it, both in this process on 127.0.0.1 and sharing a `MemoryRegistry`; the \
             gateway calls the greeter through its service's Micro client (the \
             `RegistrySelector`, pooled keep-alive connections). One client, two routes: \
             `POST /` straight to the greeter's node with Go Micro's mucp headers \
             (`Micro-Service: greeter`, `Micro-Endpoint: Greeter.Hello`, `Content-Type: \
             application/json`), the baseline, and `POST /api/greeter/Greeter.Hello` to the \
             gateway; the body is `{BODY}` both ways and every reply must be a `200` without \
             `Micro-Error` that says `{GREETING}`. micro-bench's client is hyper's HTTP/1.1 \
             connection API: {CONNECTIONS} keep-alive connections, each driven by one task with \
             one request in flight, on the run's multi-thread tokio runtime (a worker per \
             core, shared with both servers). After a {:.1} s warm-up every request is timed \
             for {:.1} s; throughput counts the requests finished in that span, p50/p99 are \
             their latencies. The routes alternate, {} run(s) each, and each keeps its fastest \
             run. The ratios divide the gateway's numbers by the direct ones: throughput \
             (higher is better) and p99 (lower is better).",
            plan.warmup.as_secs_f64(),
            plan.measure.as_secs_f64(),
            plan.passes
        ),
    );
    let servers = match start().await {
        Ok(s) => s,
        Err(e) => {
            section.failed("API gateway servers", e);
            return section;
        }
    };

    let mut best: [Option<Run>; 2] = [None, None];
    'passes: for pass in 1..=plan.passes {
        for (i, route) in ROUTES.into_iter().enumerate() {
            eprintln!("micro-bench: gateway, {}, pass {pass}", route.short());
            match drive(route, servers.addr(route), plan).await {
                Ok(run) => {
                    if best[i].as_ref().is_none_or(|b| run.rate() > b.rate()) {
                        best[i] = Some(run);
                    }
                }
                Err(e) => {
                    section.failed(&format!("API gateway, {}", route.short()), e);
                    break 'passes;
                }
            }
        }
    }
    if let [Some(direct), Some(gateway)] = &best {
        section
            .tables
            .push(client_table(direct, gateway, &mut section.targets));
    }

    match wrk_rates(&servers, plan).await {
        Ok(Some(rates)) => {
            section.method.push_str(&format!(
                " wrk (Debian's `wrk`) then loads both routes as an independent client: `-t 1 \
                 -c {CONNECTIONS} -d {}s`, a Lua script setting the same method, headers and \
                 body; the routes alternate, {} run(s) each, the fastest counts. Only its \
                 requests/s is reported; a run fails on any non-2xx reply or socket error \
                 (wrk cannot see a `Micro-Error`, which is why micro-bench's client, which \
                 checks every reply, runs first).",
                plan.wrk_seconds, plan.wrk_passes
            ));
            section.tables.push(wrk_table(rates, &mut section.targets));
        }
        Ok(None) => section.method.push_str(
            " wrk is not installed here (Debian package `wrk`), so only micro-bench's client \
             ran; that is not an error.",
        ),
        Err(e) => section.failed("API gateway under wrk", e),
    }
    servers.stop().await;
    section
}

/// The table of micro-bench's client, and its two targets.
fn client_table(direct: &Run, gateway: &Run, targets: &mut Vec<Target>) -> Table {
    let mut table = Table::new(&[
        "route",
        "connections",
        "requests/s",
        "p50",
        "p99",
        "throughput vs direct",
        "p99 vs direct",
    ]);
    for (route, run) in ROUTES.into_iter().zip([direct, gateway]) {
        table.row(vec![
            route.label().to_string(),
            CONNECTIONS.to_string(),
            stats::count(run.rate()),
            stats::latency(run.p50),
            stats::latency(run.p99),
            stats::ratio(run.rate(), direct.rate()),
            stats::ratio(run.p99.as_secs_f64(), direct.p99.as_secs_f64()),
        ]);
    }
    let throughput = gateway.rate() / direct.rate();
    let p99 = gateway.p99.as_secs_f64() / direct.p99.as_secs_f64();
    targets.push(Target {
        goal: "micro-gateway throughput >= 0.7x direct mucp to the greeter (micro-bench's \
               HTTP/1.1 keep-alive client)"
            .into(),
        measured: format!("{throughput:.2}x"),
        met: Some(throughput >= 0.7),
    });
    targets.push(Target {
        goal: "micro-gateway p99 <= 1.5x direct mucp to the greeter (micro-bench's HTTP/1.1 \
               keep-alive client)"
            .into(),
        measured: format!("{p99:.2}x"),
        met: Some(p99 <= 1.5),
    });
    table
}

/// The table of wrk's requests/s (direct, gateway), and its target.
fn wrk_table(rates: [f64; 2], targets: &mut Vec<Target>) -> Table {
    let mut table = Table::new(&[
        "route (wrk)",
        "connections",
        "requests/s",
        "throughput vs direct",
    ]);
    for (route, rate) in ROUTES.into_iter().zip(rates) {
        table.row(vec![
            route.label().to_string(),
            CONNECTIONS.to_string(),
            stats::count(rate),
            stats::ratio(rate, rates[0]),
        ]);
    }
    let ratio = if rates[0] > 0.0 {
        rates[1] / rates[0]
    } else {
        0.0
    };
    targets.push(Target {
        goal: "micro-gateway throughput >= 0.7x direct mucp to the greeter (wrk)".into(),
        measured: format!("{ratio:.2}x"),
        met: Some(ratio >= 0.7),
    });
    table
}

/// Starts the greeter and the gateway on loopback ports, sharing one in-memory registry, and
/// checks that a call goes through each route.
async fn start() -> Result<Servers, String> {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let transport = micro::plugins::transport("http").map_err(|e| format!("transport: {e}"))?;
    let greeter = Service::builder("greeter")
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .transport(transport.clone())
        .broker(Arc::new(MemoryBroker::new()))
        .handler(greeter_handler(GreeterService))
        .build()
        .map_err(|e| format!("building the greeter: {e}"))?;
    greeter
        .start()
        .await
        .map_err(|e| format!("starting the greeter: {e}"))?;
    let address = micro::rpc::Server::address(greeter.server())
        .ok_or_else(|| "the greeter has no address".to_string())?;
    let direct: SocketAddr = address
        .parse()
        .map_err(|e| format!("the greeter's address {address:?}: {e}"))?;
    let front = Service::builder("micro.gateway")
        .ignore_env()
        .registry(registry)
        .transport(transport)
        .broker(Arc::new(MemoryBroker::new()))
        .build()
        .map_err(|e| format!("building the gateway's service: {e}"))?;
    let gateway = Gateway::bind("127.0.0.1:0", &front, GatewayOptions::default())
        .await
        .map_err(|e| format!("starting the gateway: {e}"))?;
    let servers = Servers {
        greeter,
        gateway,
        direct,
    };
    for route in ROUTES {
        let addr = servers.addr(route);
        let mut sender = connect(addr).await?;
        call(&mut sender, route, &host(addr)?)
            .await
            .map_err(|e| format!("{} ({addr}): {e}", route.short()))?;
    }
    Ok(servers)
}

/// The `Host` header for `addr`.
fn host(addr: SocketAddr) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&addr.to_string()).map_err(|e| format!("Host {addr}: {e}"))
}

/// One keep-alive HTTP/1.1 connection to `addr`, its connection task spawned.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    // As Micro's transports and wrk do: no Nagle delay on small requests.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY on {addr}: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    // Ends when the sender is dropped or the peer closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on `sender` and its reply, checked.
async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    route: Route,
    host: &HeaderValue,
) -> Result<(), String> {
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(route.path())
        .header(HOST, host.clone())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in route.headers() {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .map_err(|e| format!("building the request: {e}"))?;
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| format!("the connection closed: {e}"))?;
        let reply = sender
            .send_request(request)
            .await
            .map_err(|e| format!("POST {}: {e}", route.path()))?;
        let (head, body) = reply.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the reply: {e}"))?
            .to_bytes();
        Ok::<_, String>((head, body))
    };
    let (head, body) = tokio::time::timeout(CALL_LIMIT, exchange)
        .await
        .map_err(|_| format!("no reply within {CALL_LIMIT:?}"))??;
    if let Some(error) = head.headers.get("micro-error") {
        return Err(format!("the greeter answered Micro-Error {error:?}"));
    }
    let greeted = body
        .windows(GREETING.len())
        .any(|w| w == GREETING.as_bytes());
    if head.status != StatusCode::OK || !greeted {
        return Err(format!(
            "the reply was {} {:?}, not a greeting",
            head.status,
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

/// Loads `route` from [`CONNECTIONS`] connections and times the requests of the measured span.
async fn drive(route: Route, addr: SocketAddr, plan: Plan) -> Result<Run, String> {
    let host = host(addr)?;
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr).await?);
    }
    let from = Instant::now() + plan.warmup;
    let until = from + plan.measure;
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let host = host.clone();
            tokio::spawn(async move {
                // Nanoseconds; u32 holds 4 s, beyond any request that finishes in the span.
                let mut samples: Vec<u32> = Vec::with_capacity(4096);
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        return Ok(samples);
                    }
                    call(&mut sender, route, &host).await?;
                    let t1 = Instant::now();
                    if t0 >= from && t1 <= until {
                        samples.push(u32::try_from((t1 - t0).as_nanos()).unwrap_or(u32::MAX));
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(samples)) => all.extend(samples),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a client task panicked: {e}")),
        }
    }
    all.sort_unstable();
    let at = |q| Duration::from_nanos(u64::from(quantile(&all, q)));
    Ok(Run {
        requests: all.len(),
        seconds: plan.measure.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    })
}

/// wrk's fastest requests/s on each route (direct, gateway), or `None` when wrk is not
/// installed.
async fn wrk_rates(servers: &Servers, plan: Plan) -> Result<Option<[f64; 2]>, String> {
    match Command::new("wrk").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run wrk: {e}")),
        // `wrk --version` exits with 1 after printing its version: being there is enough.
        Ok(_) => {}
    }
    let mut scripts = Vec::new();
    for route in ROUTES {
        scripts.push(wrk_script(route)?);
    }
    let mut best = [0.0f64; 2];
    let mut outcome = Ok(());
    'passes: for _ in 0..plan.wrk_passes {
        for (i, route) in ROUTES.into_iter().enumerate() {
            eprintln!("micro-bench: gateway, wrk, {}", route.short());
            let url = format!("http://{}{}", servers.addr(route), route.path());
            let script = scripts[i].clone();
            let run = tokio::task::spawn_blocking(move || wrk(&url, &script, plan.wrk_seconds))
                .await
                .unwrap_or_else(|e| Err(format!("the wrk task panicked: {e}")));
            match run {
                Ok(rate) => best[i] = best[i].max(rate),
                Err(e) => {
                    outcome = Err(format!("{}: {e}", route.short()));
                    break 'passes;
                }
            }
        }
    }
    for script in &scripts {
        let _ = std::fs::remove_file(script);
    }
    outcome.map(|()| Some(best))
}

/// Writes the Lua script that makes wrk send `route`'s request, to a temporary file.
fn wrk_script(route: Route) -> Result<std::path::PathBuf, String> {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!("wrk.body = '{BODY}'\n"));
    lua.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    for (name, value) in route.headers() {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    let path = std::env::temp_dir().join(format!(
        "micro-bench-wrk-{}-{}.lua",
        route.short(),
        std::process::id()
    ));
    std::fs::write(&path, lua).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// One wrk run of `seconds` against `url`; its requests/s. wrk is killed if it overruns by
/// [`WRK_GRACE`]; it must exit 0 with every reply a 2xx and no socket error.
fn wrk(url: &str, script: &std::path::Path, seconds: u64) -> Result<f64, String> {
    let mut child = Command::new("wrk")
        .args(["-t", "1", "-c", &CONNECTIONS.to_string()])
        .arg("-d")
        .arg(format!("{seconds}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(seconds) + WRK_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "wrk did not finish within {:?}; killed it",
                    Duration::from_secs(seconds) + WRK_GRACE
                ));
            }
            Err(e) => return Err(format!("waiting for wrk: {e}")),
        }
    }
    // wrk has exited: its output is all in the pipes.
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading wrk's output: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "wrk exited with {}: {}{}",
            out.status,
            why.trim(),
            text.trim()
        ));
    }
    // Printed only when there were any: "Non-2xx or 3xx responses: 12",
    // "Socket errors: connect 0, read 1, write 0, timeout 0".
    if let Some(bad) = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
    {
        return Err(format!("{bad} ({url})"));
    }
    // "Requests/sec:  41234.50"
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:")?.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("wrk printed no rate: {text}"))
}
