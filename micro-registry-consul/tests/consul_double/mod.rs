//! `ConsulDouble`: a TEST DOUBLE of the Consul agent's HTTP API. It is not Consul.
//!
//! No Consul server can be installed on the machines this project is built on, so the tests
//! run against this small in-process HTTP server that implements the part of the documented
//! agent, health and catalog API that the registry uses, with Consul's JSON field names:
//!
//! - `PUT /v1/agent/service/register`: `ID`, `Name`, `Tags`, `Address`, `Port`, `Meta` and a
//!   TTL `Check` (or `Checks`) with `CheckID`, `Name`, `TTL`, `Status`,
//!   `DeregisterCriticalServiceAfter`. A TTL check starts `critical` unless `Status` says
//!   otherwise, goes critical when its TTL passes without a pass, and the service is removed
//!   once it has been critical for `DeregisterCriticalServiceAfter`. `Meta` keys are checked
//!   as Consul checks them.
//! - `PUT /v1/agent/service/deregister/<id>`: 404 `Unknown service ID` when unknown.
//! - `PUT /v1/agent/check/{pass,warn,fail}/<check id>` (with `note`): 404 `Unknown check ID`.
//! - `GET /v1/health/service/<name>` with the `passing` filter: `[{Node, Service, Checks}]`,
//!   each entry carrying the node's `serfHealth` check and its service check.
//! - `GET /v1/catalog/services`: `{"consul": [], "<name>": [tags...]}`.
//! - Blocking queries on both GETs: `index` and `wait` (default 5 min, at most 10); the answer
//!   comes at once when `index` differs from the current one, else when something changes or
//!   the wait elapses. Every answer carries `X-Consul-Index`. One index covers all data, which
//!   Consul allows (a watcher may wake with nothing changed).
//! - ACLs when built with a token: any other `X-Consul-Token` (or `?token=`) gets 403
//!   `ACL not found`. The `dc` parameter must name `dc1` (else 500 `No path to datacenter`).
//! - Optionally HTTPS (with client certificates) from a rustls `ServerConfig`.
//!
//! It listens on 127.0.0.1 only, on a free port, and can be stopped and started again on the
//! same port; a restart forgets every registration, like restarting `consul agent -dev`.

#![allow(dead_code)]

pub(crate) mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The only datacenter the double knows.
pub(crate) const DATACENTER: &str = "dc1";
const NODE: &str = "consul-double";
const MAX_REQUEST: usize = 1 << 20;

/// How to build a [`ConsulDouble`].
#[derive(Default)]
pub(crate) struct DoubleBuilder {
    token: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl DoubleBuilder {
    /// Requires this ACL token on every request.
    pub(crate) fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Serves HTTPS with this configuration.
    pub(crate) fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(Arc::new(config));
        self
    }

    /// Binds a free port on 127.0.0.1 and starts serving on the current runtime.
    pub(crate) async fn start(self) -> ConsulDouble {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the Consul double");
        let addr = listener.local_addr().expect("the double's address");
        let double = ConsulDouble {
            addr,
            token: self.token,
            tls: self.tls,
            running: Arc::new(Mutex::new(None)),
            tokens_seen: Arc::new(Mutex::new(Vec::new())),
        };
        double.serve(listener);
        double
    }
}

/// A running (or stopped) double; see the module doc.
#[derive(Clone)]
pub(crate) struct ConsulDouble {
    addr: SocketAddr,
    token: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    running: Arc<Mutex<Option<Running>>>,
    tokens_seen: Arc<Mutex<Vec<Option<String>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsulDouble {
    /// A builder, for a token or TLS.
    pub(crate) fn builder() -> DoubleBuilder {
        DoubleBuilder::default()
    }

    /// A plain double without ACLs.
    pub(crate) async fn start() -> ConsulDouble {
        Self::builder().start().await
    }

    /// One double for the whole test binary, on a thread of its own so that it outlives each
    /// test's runtime. Returns its address.
    pub(crate) fn shared() -> String {
        static SHARED: OnceLock<String> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("consul-double".into())
                    .spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime for the shared Consul double");
                        runtime.block_on(async move {
                            let double = ConsulDouble::start().await;
                            let _ = tx.send(double.address());
                            std::future::pending::<()>().await;
                        });
                    })
                    .expect("spawn the shared Consul double");
                rx.recv().expect("the shared Consul double starts")
            })
            .clone()
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every `X-Consul-Token` received so far (`None` for a request without one).
    pub(crate) fn tokens_seen(&self) -> Vec<Option<String>> {
        lock(&self.tokens_seen).clone()
    }

    /// Closes the port and every connection; registrations are lost. Returns once they are.
    pub(crate) async fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(running) = running {
            running.stop().await;
        }
    }

    /// Serves again on the same port, with no registrations (a restarted `-dev` agent).
    pub(crate) async fn restart(&self) {
        self.stop().await;
        let listener = rebind(self.addr).await;
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let agent = Arc::new(Agent {
            state: Mutex::new(State {
                index: 1,
                services: BTreeMap::new(),
            }),
            changed: watch::channel(1).0,
            token: self.token.clone(),
            tokens_seen: self.tokens_seen.clone(),
        });
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let reaper = Arc::downgrade(&agent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(agent) = reaper.upgrade() else {
                    return;
                };
                agent.expire(Instant::now());
            }
        });
        let running = Running::spawn(listener, move |stream| {
            let agent = agent.clone();
            let tls = tls.clone();
            async move {
                let service = service_fn(move |req| {
                    let agent = agent.clone();
                    async move { Ok::<_, Infallible>(agent.handle(req).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
        *lock(&self.running) = Some(running);
    }
}

/// Binds `addr` again once the previous listener is gone.
pub(crate) async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() >= deadline => panic!("rebind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// An accept loop that can be stopped for sure: when [`Running::stop`] returns, the port is
/// closed and every connection it accepted is gone.
pub(crate) struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Accepts on `listener`, running `connection` for each stream.
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, mut connection: F) -> Running
    where
        F: FnMut(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (shutdown, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            connections.spawn(connection(stream));
                        }
                    }
                }
                while connections.try_join_next().is_some() {}
            }
            drop(listener);
            connections.shutdown().await;
        });
        Running { shutdown, task }
    }

    /// Stops accepting and ends every connection.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

struct Agent {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    token: Option<String>,
    tokens_seen: Arc<Mutex<Vec<Option<String>>>>,
}

struct State {
    index: u64,
    services: BTreeMap<String, Instance>,
}

#[derive(Clone, PartialEq)]
struct Instance {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    check: Option<Check>,
}

#[derive(Clone, PartialEq)]
struct Check {
    id: String,
    name: String,
    ttl: Duration,
    deregister_after: Option<Duration>,
    status: String,
    output: String,
    expires: Instant,
    critical_since: Option<Instant>,
}

impl Check {
    fn set_status(&mut self, status: &str, output: &str, now: Instant) -> bool {
        let changed = self.status != status || self.output != output;
        if status == "critical" {
            if self.status != "critical" {
                self.critical_since = Some(now);
            }
        } else {
            self.critical_since = None;
        }
        self.status = status.to_string();
        self.output = output.to_string();
        changed
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    if let Some(i) = index {
        r = r.header("X-Consul-Index", i.to_string());
        r = r.header("Content-Type", "application/json");
    }
    r.body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Percent-decoding of a path segment or query value.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Go duration: `90s`, `1m5s`, `1.5s`, `500ms`, `2h`.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

fn meta_error(meta: &BTreeMap<String, String>) -> Option<String> {
    if meta.len() > 64 {
        return Some("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    for (k, v) in meta {
        if k.is_empty()
            || k.len() > 128
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Some(format!("Key {k:?} has invalid characters or length"));
        }
        if k.starts_with("consul-") {
            return Some(format!(
                "Key prefix 'consul-' is reserved for internal use: {k}"
            ));
        }
        if v.len() > 512 {
            return Some(format!("Value for key {k:?} is too long"));
        }
    }
    None
}

impl Agent {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn bump(&self, state: &mut State) {
        state.index += 1;
        self.changed.send_replace(state.index);
    }

    fn expire(&self, now: Instant) {
        let mut state = self.state();
        let mut changed = false;
        let mut gone = Vec::new();
        for (id, instance) in state.services.iter_mut() {
            let Some(check) = instance.check.as_mut() else {
                continue;
            };
            if check.status != "critical" && now >= check.expires {
                changed |= check.set_status("critical", "TTL expired", now);
            }
            if let (Some(after), Some(since)) = (check.deregister_after, check.critical_since) {
                if now.duration_since(since) >= after {
                    gone.push(id.clone());
                }
            }
        }
        for id in gone {
            state.services.remove(&id);
            changed = true;
        }
        if changed {
            self.bump(&mut state);
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let q = query(&req);
        let token = req
            .headers()
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| q.get("token").cloned());
        lock(&self.tokens_seen).push(token.clone());
        if let Some(want) = &self.token {
            if token.as_deref() != Some(want.as_str()) {
                return reply(StatusCode::FORBIDDEN, "ACL not found", None);
            }
        }
        if let Some(dc) = q.get("dc") {
            if !dc.is_empty() && dc != DATACENTER {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No path to datacenter",
                    None,
                );
            }
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, segments.as_slice()) {
            (Method::PUT, ["v1", "agent", "service", "register"]) => {
                let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            format!("Request decode failed: {e}"),
                            None,
                        )
                    }
                };
                self.register(&body)
            }
            (Method::PUT, ["v1", "agent", "service", "deregister", id]) => {
                let mut state = self.state();
                if state.services.remove(*id).is_none() {
                    return reply(StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."), None);
                }
                self.bump(&mut state);
                reply(StatusCode::OK, "", None)
            }
            (Method::PUT, ["v1", "agent", "check", verb @ ("pass" | "warn" | "fail"), id]) => {
                let status = match *verb {
                    "pass" => "passing",
                    "warn" => "warning",
                    _ => "critical",
                };
                let note = q.get("note").cloned().unwrap_or_default();
                let now = Instant::now();
                let mut state = self.state();
                let check = state
                    .services
                    .values_mut()
                    .filter_map(|s| s.check.as_mut())
                    .find(|c| c.id == *id);
                let Some(check) = check else {
                    return reply(StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."), None);
                };
                check.expires = now + check.ttl;
                if check.set_status(status, &note, now) {
                    self.bump(&mut state);
                }
                reply(StatusCode::OK, "", None)
            }
            (Method::GET, ["v1", "health", "service", name]) => {
                let name = name.to_string();
                let passing = q.get("passing").is_some_and(|v| v != "false" && v != "0");
                let (body, index) = self
                    .blocking(&q, |state| {
                        let entries: Vec<Value> = state
                            .services
                            .values()
                            .filter(|s| s.name == name)
                            .filter(|s| {
                                !passing || s.check.as_ref().is_none_or(|c| c.status == "passing")
                            })
                            .map(entry_json)
                            .collect();
                        Value::Array(entries).to_string()
                    })
                    .await;
                reply(StatusCode::OK, body, Some(index))
            }
            (Method::GET, ["v1", "catalog", "services"]) => {
                let (body, index) = self
                    .blocking(&q, |state| {
                        let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
                        names.insert("consul", BTreeSet::new());
                        for s in state.services.values() {
                            names
                                .entry(s.name.as_str())
                                .or_default()
                                .extend(s.tags.iter().map(String::as_str));
                        }
                        json!(names).to_string()
                    })
                    .await;
                reply(StatusCode::OK, body, Some(index))
            }
            (Method::GET | Method::PUT, _) => reply(
                StatusCode::NOT_FOUND,
                format!("no such endpoint in the Consul double: {path}"),
                None,
            ),
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None),
        }
    }

    /// Answers at once unless `index` is the current one; then holds until a change or `wait`.
    async fn blocking(
        &self,
        q: &BTreeMap<String, String>,
        render: impl Fn(&State) -> String,
    ) -> (String, u64) {
        let index: Option<u64> = q
            .get("index")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0);
        if let Some(index) = index {
            let wait = q
                .get("wait")
                .and_then(|w| parse_go_duration(w))
                .unwrap_or(Duration::from_secs(300))
                .min(Duration::from_secs(600));
            let mut changed = self.changed.subscribe();
            if self.state().index == index {
                let _ = tokio::time::timeout(wait, async {
                    while changed.changed().await.is_ok() {
                        if *changed.borrow() != index {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        let state = self.state();
        (render(&state), state.index)
    }

    fn register(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let bad = |why: String| reply(StatusCode::BAD_REQUEST, why, None);
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(format!("Request decode failed: {e}")),
        };
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = text("Name");
        if name.is_empty() {
            return bad("Missing service name".into());
        }
        let id = Some(text("ID"))
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| name.clone());
        let tags: Vec<String> = match v.get("Tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(t) => match serde_json::from_value(t.clone()) {
                Ok(t) => t,
                Err(e) => return bad(format!("Request decode failed: Tags: {e}")),
            },
        };
        let meta: BTreeMap<String, String> = match v.get("Meta") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(m) => match serde_json::from_value(m.clone()) {
                Ok(m) => m,
                Err(e) => return bad(format!("Request decode failed: Meta: {e}")),
            },
        };
        if let Some(why) = meta_error(&meta) {
            return bad(format!("Invalid Service Meta: {why}"));
        }
        let port = match v.get("Port") {
            None | Some(Value::Null) => 0,
            Some(p) => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                Some(p) => p,
                None => return bad("Request decode failed: Port".into()),
            },
        };
        let check_def = v
            .get("Check")
            .filter(|c| !c.is_null())
            .cloned()
            .or_else(|| v.get("Checks").and_then(|c| c.get(0)).cloned());
        let now = Instant::now();
        let mut state = self.state();
        let previous = state.services.get(&id).and_then(|s| s.check.clone());
        let check = match check_def {
            None => None,
            Some(c) => {
                let field = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
                let Some(ttl) = field("TTL").and_then(|t| parse_go_duration(&t)) else {
                    return bad("Invalid check: the double only implements TTL checks (TTL missing or unreadable)".into());
                };
                let deregister_after = match field("DeregisterCriticalServiceAfter") {
                    None => None,
                    Some(d) => match parse_go_duration(&d) {
                        Some(d) => Some(d),
                        None => {
                            return bad(format!("Invalid DeregisterCriticalServiceAfter {d:?}"))
                        }
                    },
                };
                let check_id = field("CheckID")
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| format!("service:{id}"));
                let explicit = field("Status").filter(|s| !s.is_empty());
                if let Some(s) = &explicit {
                    if !matches!(s.as_str(), "passing" | "warning" | "critical") {
                        return bad(format!("Invalid check status {s:?}"));
                    }
                }
                let kept = previous.filter(|p| p.id == check_id);
                let status = explicit
                    .or_else(|| kept.as_ref().map(|p| p.status.clone()))
                    .unwrap_or_else(|| "critical".to_string());
                Some(Check {
                    id: check_id,
                    name: field("Name").unwrap_or_else(|| format!("Service '{name}' check")),
                    ttl,
                    deregister_after,
                    critical_since: if status == "critical" {
                        kept.as_ref().and_then(|p| p.critical_since).or(Some(now))
                    } else {
                        None
                    },
                    status,
                    output: kept.as_ref().map(|p| p.output.clone()).unwrap_or_default(),
                    expires: kept.map(|p| p.expires).unwrap_or(now + ttl),
                })
            }
        };
        let instance = Instance {
            id: id.clone(),
            name,
            tags,
            address: text("Address"),
            port,
            meta,
            check,
        };
        let changed = state.services.get(&id).is_none_or(|old| {
            let mut old = old.clone();
            let mut new = instance.clone();
            // Only what a reader sees counts as a change.
            if let (Some(o), Some(n)) = (old.check.as_mut(), new.check.as_mut()) {
                o.expires = n.expires;
                o.critical_since = n.critical_since;
            }
            old != new
        });
        state.services.insert(id, instance);
        if changed {
            self.bump(&mut state);
        }
        reply(StatusCode::OK, "", None)
    }
}

fn entry_json(s: &Instance) -> Value {
    let mut checks = vec![json!({
        "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
    })];
    if let Some(c) = &s.check {
        checks.push(json!({
            "Node": NODE, "CheckID": c.id, "Name": c.name, "Status": c.status, "Notes": "",
            "Output": c.output, "ServiceID": s.id, "ServiceName": s.name,
            "ServiceTags": s.tags, "Type": "ttl",
        }));
    }
    json!({
        "Node": {
            "ID": "0e4d4b4a-0000-4000-8000-00000000d0b1", "Node": NODE, "Address": "127.0.0.1",
            "Datacenter": DATACENTER, "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
            "Meta": {"consul-network-segment": ""},
        },
        "Service": {
            "ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address, "Port": s.port,
            "Meta": s.meta, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
        },
        "Checks": checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m5s"), Some(Duration::from_secs(65)));
        assert_eq!(
            parse_go_duration("1500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%2Fb%20c"), "a/b c");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%é"), "%é");
    }
}
