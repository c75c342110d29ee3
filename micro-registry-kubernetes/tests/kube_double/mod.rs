//! `KubeDouble`: a TEST DOUBLE of the Kubernetes pods API, not an API server.
//!
//! No Kubernetes API server can be installed where these tests run, so they talk, through the
//! real `kube` client, to this small HTTP server that answers the handful of requests the
//! registry makes, the way the API server documents them:
//!
//! - `GET /api/v1/namespaces/{ns}/pods?labelSelector=...`: a `PodList` with the list's
//!   `metadata.resourceVersion`; selectors are comma-separated `k=v`, `k==v`, `k!=v`, `k` and
//!   `!k` terms (set-based terms are refused with 400).
//! - `GET /api/v1/namespaces/{ns}/pods/{name}`: one pod, or a 404 `Status`.
//! - `PATCH /api/v1/namespaces/{ns}/pods/{name}` with `application/merge-patch+json`: JSON
//!   merge patch (RFC 7386: objects merge, `null` deletes a key); a `metadata.resourceVersion`
//!   in the patch is a precondition (409 on mismatch); labels and annotations must be strings
//!   (422 otherwise); other patch types get 415.
//! - `GET ...pods?watch=true&resourceVersion=N&timeoutSeconds=T&labelSelector=...`: newline-
//!   delimited `{"type":"ADDED|MODIFIED|DELETED","object":pod}` events, chunked. Without a
//!   version (or with `0`), the matching pods come first as `ADDED`; with one, the changes
//!   after it are replayed from a log of the last 1000 changes (older: an `ERROR` event with a
//!   410 `Status`, as the API server does), then live changes follow. As for a real selector
//!   watch, a pod that starts matching is `ADDED` and one that stops matching is `DELETED`.
//!   The stream ends after `timeoutSeconds`. No bookmarks are sent.
//!
//! Every write bumps one resource version counter, stored as `metadata.resourceVersion`.
//! Pods are made by the test (`add_pod`, `set_phase`, `delete_pod`), never through the HTTP
//! API; they have `metadata.{name,namespace,uid,resourceVersion,labels,annotations}` and
//! `status.{phase,podIP}`, no spec. The server listens on 127.0.0.1 only; `stop` closes the
//! port and every connection, and `restart` serves the same pods on the same port again.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};

type Body = BoxBody<Bytes, Infallible>;

/// How many changes the watch log keeps.
const LOG_SIZE: usize = 1000;

/// The pods API double; clones share one server.
#[derive(Clone)]
pub(crate) struct KubeDouble {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
    addr: SocketAddr,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    version: u64,
    pods: BTreeMap<(String, String), Value>,
    log: VecDeque<Change>,
    next_ip: u8,
}

/// One write: the pod before and after (`None`: absent).
#[derive(Clone)]
struct Change {
    version: u64,
    namespace: String,
    before: Option<Value>,
    after: Option<Value>,
}

impl KubeDouble {
    /// Starts a double with no pods on a free loopback port.
    pub(crate) async fn start() -> KubeDouble {
        let listener = listen("127.0.0.1:0".parse().expect("an address")).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let double = KubeDouble {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: broadcast::channel(4096).0,
                addr,
                server: Mutex::new(None),
            }),
        };
        double.serve(listener);
        double
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A real kube client for this double: plain HTTP, no credentials.
    pub(crate) fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("a URL");
        kube::Client::try_from(kube::Config::new(url)).expect("a kube client")
    }

    /// Closes the port and every open connection (watches included).
    pub(crate) async fn stop(&self) {
        let server = lock(&self.shared.server).take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port, with the same pods.
    pub(crate) async fn restart(&self) {
        self.stop().await;
        let mut tries = 0;
        let listener = loop {
            match listen(self.shared.addr) {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("kube double: rebinding {}: {e}", self.shared.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("kube double: cannot rebind {}: {e}", self.shared.addr),
            }
        };
        self.serve(listener);
    }

    /// Creates pod `name` in `namespace` in `phase` (`Running`, `Pending`, ...).
    pub(crate) fn add_pod(&self, namespace: &str, name: &str, phase: &str) {
        let mut state = lock(&self.shared.state);
        state.next_ip = state.next_ip.wrapping_add(1);
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("uid-{namespace}-{name}"),
                "labels": {},
                "annotations": {},
            },
            "status": {"phase": phase, "podIP": format!("10.0.0.{}", state.next_ip)},
        });
        self.commit(&mut state, namespace, name, Some(pod));
    }

    /// Moves pod `name` to `phase`.
    pub(crate) fn set_phase(&self, namespace: &str, name: &str, phase: &str) {
        let mut state = lock(&self.shared.state);
        let key = (namespace.to_string(), name.to_string());
        let mut pod = state.pods.get(&key).cloned().expect("the pod exists");
        pod["status"]["phase"] = json!(phase);
        self.commit(&mut state, namespace, name, Some(pod));
    }

    /// Deletes pod `name`.
    pub(crate) fn delete_pod(&self, namespace: &str, name: &str) {
        let mut state = lock(&self.shared.state);
        self.commit(&mut state, namespace, name, None);
    }

    /// Pod `name` as the API would return it.
    pub(crate) fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let state = lock(&self.shared.state);
        state
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Stores `after` as the pod, with a new resource version, and tells the watches.
    fn commit(&self, state: &mut State, namespace: &str, name: &str, after: Option<Value>) -> u64 {
        state.version += 1;
        let version = state.version;
        let key = (namespace.to_string(), name.to_string());
        let after = after.map(|mut pod| {
            pod["metadata"]["resourceVersion"] = json!(version.to_string());
            pod
        });
        let before = match &after {
            Some(pod) => state.pods.insert(key, pod.clone()),
            None => state.pods.remove(&key),
        };
        let change = Change {
            version,
            namespace: namespace.to_string(),
            before,
            after,
        };
        state.log.push_back(change.clone());
        if state.log.len() > LOG_SIZE {
            state.log.pop_front();
        }
        let _ = self.shared.changes.send(change);
        version
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let double = self.clone();
        let server = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let double = double.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let double = double.clone();
                        async move { Ok::<_, Infallible>(double.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *lock(&self.shared.server) = Some(server);
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path: Vec<String> = req
            .uri()
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        let query = parse_query(req.uri().query().unwrap_or(""));
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match (req.method().clone(), path.as_slice()) {
            (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
                let selector = match Selector::parse(query.get("labelSelector")) {
                    Ok(s) => s,
                    Err(e) => return status(400, "BadRequest", e),
                };
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                    self.watch(ns, selector, &query)
                } else {
                    self.list(ns, &selector)
                }
            }
            (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
                match self.pod(ns, name) {
                    Some(pod) => ok(&pod),
                    None => not_found(name),
                }
            }
            (Method::PATCH, ["api", "v1", "namespaces", ns, "pods", name]) => {
                let ns = ns.to_string();
                let name = name.to_string();
                self.patch(&ns, &name, req).await
            }
            (_, ["api", "v1", "namespaces", _, "pods", ..]) => status(
                405,
                "MethodNotAllowed",
                "the kube double serves GET and PATCH on pods only".into(),
            ),
            _ => status(
                404,
                "NotFound",
                format!("the kube double has no {}", req.uri()),
            ),
        }
    }

    fn list(&self, ns: &str, selector: &Selector) -> Response<Body> {
        let state = lock(&self.shared.state);
        let items: Vec<&Value> = state
            .pods
            .iter()
            .filter(|((n, _), pod)| n == ns && selector.matches(pod))
            .map(|(_, pod)| pod)
            .collect();
        ok(&json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.version.to_string()},
            "items": items,
        }))
    }

    async fn patch(&self, ns: &str, name: &str, req: Request<Incoming>) -> Response<Body> {
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !content_type.starts_with("application/merge-patch+json") {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the kube double takes merge patches only, not {content_type:?}"),
            );
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", format!("reading the body: {e}")),
        };
        let patch: Value = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return status(400, "BadRequest", format!("the patch is not JSON: {e}")),
        };
        let mut state = lock(&self.shared.state);
        let key = (ns.to_string(), name.to_string());
        let Some(before) = state.pods.get(&key).cloned() else {
            return not_found(name);
        };
        if let Some(wanted) = patch.pointer("/metadata/resourceVersion") {
            if *wanted != before["metadata"]["resourceVersion"] {
                return status(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on pods \"{name}\": the object has been modified"),
                );
            }
        }
        let mut after = before.clone();
        merge_patch(&mut after, &patch);
        after["metadata"]["name"] = json!(name);
        after["metadata"]["namespace"] = json!(ns);
        for field in ["labels", "annotations"] {
            let valid = match &after["metadata"][field] {
                Value::Null => true,
                Value::Object(m) => m.values().all(Value::is_string),
                _ => false,
            };
            if !valid {
                return status(
                    422,
                    "Invalid",
                    format!("Pod \"{name}\" is invalid: metadata.{field}: values must be strings"),
                );
            }
        }
        self.commit(&mut state, ns, name, Some(after));
        let pod = state.pods.get(&key).cloned().unwrap_or_default();
        ok(&pod)
    }

    fn watch(
        &self,
        ns: &str,
        selector: Selector,
        query: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800u64);
        let (tx, rx) = mpsc::channel::<Bytes>(1024);
        let mut first: Vec<Bytes> = Vec::new();
        let (mut live, mut last) = {
            // Subscribing under the lock: no change falls between the replay and the live part.
            let state = lock(&self.shared.state);
            let live = self.shared.changes.subscribe();
            match query.get("resourceVersion").map(String::as_str) {
                None | Some("") | Some("0") => {
                    for ((n, _), pod) in &state.pods {
                        if n == ns && selector.matches(pod) {
                            first.push(line("ADDED", pod));
                        }
                    }
                }
                Some(v) => {
                    let Ok(from) = v.parse::<u64>() else {
                        return status(400, "BadRequest", format!("resourceVersion {v:?}"));
                    };
                    let oldest = state.log.front().map_or(state.version, |c| c.version);
                    if from + 1 < oldest {
                        first.push(line(
                            "ERROR",
                            &status_json(
                                410,
                                "Expired",
                                format!("too old resource version: {from} ({oldest})"),
                            ),
                        ));
                    } else {
                        for change in state.log.iter().filter(|c| c.version > from) {
                            first.extend(transition(change, ns, &selector));
                        }
                    }
                }
            }
            (live, state.version)
        };
        let ns = ns.to_string();
        tokio::spawn(async move {
            for l in first {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = &mut deadline => return,
                    change = live.recv() => match change {
                        Ok(c) if c.version > last => {
                            last = c.version;
                            if let Some(l) = transition(&c, &ns, &selector) {
                                if tx.send(l).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let gone = status_json(410, "Expired", "the watch fell behind".into());
                            let _ = tx.send(line("ERROR", &gone)).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(frames).boxed())
            .unwrap_or_else(|_| Response::new(empty()))
    }
}

/// The watch line a change gives for a watch of `ns` with `selector`, if any.
fn transition(change: &Change, ns: &str, selector: &Selector) -> Option<Bytes> {
    if change.namespace != ns {
        return None;
    }
    let was = change.before.as_ref().is_some_and(|p| selector.matches(p));
    let is = change.after.as_ref().is_some_and(|p| selector.matches(p));
    match (was, is, &change.after, &change.before) {
        (false, true, Some(after), _) => Some(line("ADDED", after)),
        (true, true, Some(after), _) => Some(line("MODIFIED", after)),
        (true, false, Some(after), _) => Some(line("DELETED", after)),
        (true, false, None, Some(before)) => {
            let mut last = before.clone();
            last["metadata"]["resourceVersion"] = json!(change.version.to_string());
            Some(line("DELETED", &last))
        }
        _ => None,
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// An equality-based label selector.
struct Selector(Vec<Term>);

enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Missing(String),
}

impl Selector {
    fn parse(text: Option<&String>) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for term in text.map(String::as_str).unwrap_or("").split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(format!(
                    "the kube double does not take set-based selectors: {term}"
                ));
            }
            let t = if let Some((k, v)) = term.split_once("!=") {
                Term::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Term::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                Term::Missing(k.trim().into())
            } else {
                Term::Exists(term.into())
            };
            terms.push(t);
        }
        Ok(Selector(terms))
    }

    fn matches(&self, pod: &Value) -> bool {
        let labels = &pod["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|t| match t {
            Term::Equals(k, v) => get(k) == Some(v.as_str()),
            Term::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::Missing(k) => get(k).is_none(),
        })
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(fields) = target {
        for (key, value) in changes {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// `a=b&c=d%2Fe` with `+` for spaces, as form encoding writes it.
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

fn ok(value: &Value) -> Response<Body> {
    respond(200, value)
}

fn respond(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(empty()))
}

fn status_json(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status(code: u16, reason: &str, message: String) -> Response<Body> {
    respond(code, &status_json(code, reason, message))
}

fn not_found(name: &str) -> Response<Body> {
    status(404, "NotFound", format!("pods \"{name}\" not found"))
}
