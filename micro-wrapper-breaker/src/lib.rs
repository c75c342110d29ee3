//! Circuit breaking for Micro for Rust clients, per node and per endpoint.
//!
//! A circuit is **closed** while calls go well. It **opens** when too many fail: a run of
//! consecutive failures, or a failure ratio over a minimum number of calls in a sliding window.
//! While open, calls fail fast with a `503` naming the circuit and when to retry, without
//! touching the network. After the cool-down it is **half-open**: a few trial calls go through;
//! a success closes it again, a failure opens it for another cool-down.
//!
//! Two layers, for the two places a client can break circuits:
//!
//! - [`NodeBreakerLayer`] on the attempt path (`ServiceBuilder::attempt_layer`): one circuit per
//!   node address. An open circuit reports its node as **unreachable**, so the client's
//!   selector ejects the node and the call's retry goes to another node: a node that answers
//!   every call with a 500 leaves the pool just like one that is down.
//! - [`EndpointBreakerLayer`] on the call path (`ServiceBuilder::client_layer`): one circuit per
//!   `service.Endpoint`, which stops calling an endpoint that fails on every node.
//!
//! What counts as a failure: an unreachable node always; an error answer when
//! [`BreakerOptions::is_failure`] says so (by default 408 and 5xx, not the caller's own 4xx
//! mistakes). A call the caller stops waiting for counts as a failure if its deadline had
//! passed (the node was too slow), and not at all otherwise.
//!
//! ```
//! use std::time::Duration;
//! use micro_wrapper_breaker::{BreakerOptions, EndpointBreakerLayer, NodeBreakerLayer};
//!
//! let per_node = NodeBreakerLayer::new(
//!     BreakerOptions::default()
//!         .consecutive_failures(3)
//!         .open_for(Duration::from_secs(10)),
//! );
//! let per_endpoint = EndpointBreakerLayer::new(
//!     BreakerOptions::default().failure_ratio(0.5).minimum_calls(20),
//! );
//! let circuits = per_node.circuits().clone(); // to look at states later
//! // micro::Service::builder("caller")
//! //     .attempt_layer(per_node)
//! //     .client_layer(per_endpoint)
//! # let _ = (per_endpoint, circuits);
//! ```
//!
//! An open node circuit ejects its node from the selector for the selector's ejection time
//! (10 s by default); a cool-down shorter than that is reached when the node is picked again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use micro_core::rpc::{self, Attempt, AttemptError, Call};
use micro_core::{BoxFuture, Error, Result};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// The id of the errors an open circuit gives.
pub const ERROR_ID: &str = "micro.breaker";

/// The code of the errors an open circuit gives: 503, which a client retries on another node.
pub const SERVICE_UNAVAILABLE: i32 = 503;

/// When circuits open and close.
#[derive(Debug, Clone)]
pub struct BreakerOptions {
    /// Open when at least this share of the calls in the window failed (0.5), once the window
    /// holds [`minimum_calls`](Self::minimum_calls). Above 1.0 turns the ratio rule off.
    pub failure_ratio: f64,
    /// The calls the window must hold before the ratio counts (20).
    pub minimum_calls: u32,
    /// How far back the ratio looks (10 s).
    pub window: Duration,
    /// Open after this many failures in a row (5); 0 turns the rule off.
    pub consecutive_failures: u32,
    /// How long a circuit stays open before trial calls are let through (5 s).
    pub open_for: Duration,
    /// How many trial calls a half-open circuit lets through at once, and how many must
    /// succeed to close it (1).
    pub half_open_calls: u32,
    /// Whether an error answer counts as a failure; by default 408 and 5xx do
    /// ([`server_failure`]).
    pub is_failure: fn(&Error) -> bool,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            failure_ratio: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            half_open_calls: 1,
            is_failure: server_failure,
        }
    }
}

impl BreakerOptions {
    /// Sets [`failure_ratio`](Self::failure_ratio).
    pub fn failure_ratio(mut self, ratio: f64) -> Self {
        self.failure_ratio = ratio;
        self
    }
    /// Sets [`minimum_calls`](Self::minimum_calls).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }
    /// Sets [`window`](Self::window).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
    /// Sets [`consecutive_failures`](Self::consecutive_failures).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }
    /// Sets [`open_for`](Self::open_for), the cool-down.
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }
    /// Sets [`half_open_calls`](Self::half_open_calls).
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }
    /// Sets [`is_failure`](Self::is_failure).
    pub fn is_failure(mut self, is_failure: fn(&Error) -> bool) -> Self {
        self.is_failure = is_failure;
        self
    }
}

/// The default failure test: a timeout (408) or a server-side error (5xx).
pub fn server_failure(e: &Error) -> bool {
    e.code == 408 || e.code >= 500
}

/// Where a circuit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the cool-down ends.
    Open {
        /// What is left of the cool-down.
        retry_after: Duration,
        /// Why the circuit opened.
        reason: String,
    },
    /// Trial calls go through; the next outcome decides.
    HalfOpen,
}

impl CircuitState {
    /// Whether calls currently fail fast (open, cool-down not over).
    pub fn is_open(&self) -> bool {
        matches!(self, CircuitState::Open { .. })
    }
}

const SLOTS: usize = 10;

/// Call outcomes over the last `window`, in ten slots that age out one by one.
#[derive(Debug)]
struct Window {
    origin: Instant,
    slot_len: Duration,
    slots: [Slot; SLOTS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot-length period since `origin` the counts are for.
    epoch: u64,
    ok: u32,
    failed: u32,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Window {
            origin: now,
            slot_len: (window / SLOTS as u32).max(Duration::from_millis(1)),
            slots: [Slot::default(); SLOTS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.slot_len.as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let epoch = self.epoch(now);
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        if failed {
            slot.failed += 1;
        } else {
            slot.ok += 1;
        }
    }

    /// (calls, failures) in the window.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(now);
        self.slots
            .iter()
            .filter(|s| s.epoch <= epoch && epoch - s.epoch < SLOTS as u64)
            .fold((0, 0), |(calls, failed), s| {
                (calls + s.ok + s.failed, failed + s.failed)
            })
    }

    fn clear(&mut self) {
        self.slots = [Slot::default(); SLOTS];
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant, reason: String },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

/// One circuit's state.
#[derive(Debug)]
struct Circuit {
    phase: Phase,
    /// Bumped on every phase change, so outcomes of calls admitted under an earlier phase are
    /// not counted against the current one.
    generation: u64,
    window: Window,
    consecutive: u32,
}

/// A call let through a circuit, to be reported back.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u64,
}

/// How an admitted call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// The caller stopped waiting before the deadline: no verdict on the target.
    Abandoned,
}

/// Why a call was not let through.
#[derive(Debug)]
enum Denied {
    Open {
        retry_after: Duration,
        reason: String,
    },
    TrialsBusy,
}

impl Circuit {
    fn new(opts: &BreakerOptions, now: Instant) -> Self {
        Circuit {
            phase: Phase::Closed,
            generation: 0,
            window: Window::new(opts.window, now),
            consecutive: 0,
        }
    }

    fn state(&self, now: Instant) -> CircuitState {
        match &self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until, reason } if now < *until => CircuitState::Open {
                retry_after: *until - now,
                reason: reason.clone(),
            },
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn admit(
        &mut self,
        opts: &BreakerOptions,
        now: Instant,
    ) -> std::result::Result<Ticket, Denied> {
        if let Phase::Open { until, reason } = &self.phase {
            if now < *until {
                return Err(Denied::Open {
                    retry_after: *until - now,
                    reason: reason.clone(),
                });
            }
            self.enter(Phase::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            });
        }
        if let Phase::HalfOpen { in_flight, .. } = &mut self.phase {
            if *in_flight >= opts.half_open_calls.max(1) {
                return Err(Denied::TrialsBusy);
            }
            *in_flight += 1;
        }
        Ok(Ticket {
            generation: self.generation,
        })
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
        self.window.clear();
        self.consecutive = 0;
    }

    /// Records an outcome; returns the reason when it opened the circuit.
    fn record(
        &mut self,
        opts: &BreakerOptions,
        ticket: Ticket,
        outcome: Outcome,
        now: Instant,
    ) -> Option<String> {
        if ticket.generation != self.generation {
            return None;
        }
        let reason = match &mut self.phase {
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success => {
                        *succeeded += 1;
                        if *succeeded >= opts.half_open_calls.max(1) {
                            self.enter(Phase::Closed);
                        }
                        None
                    }
                    Outcome::Failure => Some("a trial call failed while half-open".to_string()),
                    Outcome::Abandoned => None,
                }
            }
            Phase::Closed => match outcome {
                Outcome::Abandoned => None,
                Outcome::Success => {
                    self.window.record(now, false);
                    self.consecutive = 0;
                    None
                }
                Outcome::Failure => {
                    self.window.record(now, true);
                    self.consecutive += 1;
                    self.trip_reason(opts, now)
                }
            },
        };
        if let Some(reason) = &reason {
            self.enter(Phase::Open {
                until: now + opts.open_for,
                reason: reason.clone(),
            });
        }
        reason
    }

    fn trip_reason(&self, opts: &BreakerOptions, now: Instant) -> Option<String> {
        if opts.consecutive_failures > 0 && self.consecutive >= opts.consecutive_failures {
            return Some(format!("{} consecutive failures", self.consecutive));
        }
        let (calls, failed) = self.window.totals(now);
        let ratio = f64::from(failed) / f64::from(calls.max(1));
        if calls >= opts.minimum_calls.max(1) && ratio >= opts.failure_ratio {
            return Some(format!(
                "{failed} of the last {calls} calls failed within {}",
                seconds(opts.window)
            ));
        }
        None
    }
}

/// A duration as seconds with millisecond precision, for people.
fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// A set of circuits by key (a node address, or `service.Endpoint`), shared by a layer and its
/// clones: read states here for health pages and tests.
#[derive(Clone)]
pub struct Circuits {
    opts: Arc<BreakerOptions>,
    map: Arc<Mutex<HashMap<String, Circuit>>>,
    /// What the keys are, for log lines: `node` or `endpoint`.
    kind: &'static str,
}

impl fmt::Debug for Circuits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Circuits")
            .field("kind", &self.kind)
            .field("options", &self.opts)
            .field("circuits", &self.snapshot())
            .finish()
    }
}

impl Circuits {
    fn new(opts: BreakerOptions, kind: &'static str) -> Self {
        Circuits {
            opts: Arc::new(opts),
            map: Arc::new(Mutex::new(HashMap::new())),
            kind,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Circuit>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The options the circuits follow.
    pub fn options(&self) -> &BreakerOptions {
        &self.opts
    }

    /// The state of the circuit for `key`; `Closed` for a key never seen.
    pub fn state(&self, key: &str) -> CircuitState {
        self.lock()
            .get(key)
            .map_or(CircuitState::Closed, |c| c.state(Instant::now()))
    }

    /// Every circuit seen so far and its state, sorted by key.
    pub fn snapshot(&self) -> Vec<(String, CircuitState)> {
        let now = Instant::now();
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, c)| (k.clone(), c.state(now)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets the circuit for `key`, closing it.
    pub fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn admit(&self, key: &str) -> std::result::Result<Ticket, Denied> {
        let now = Instant::now();
        let mut map = self.lock();
        let circuit = map
            .entry(key.to_string())
            .or_insert_with(|| Circuit::new(&self.opts, now));
        circuit.admit(&self.opts, now)
    }

    fn record(&self, key: &str, ticket: Ticket, outcome: Outcome) {
        let now = Instant::now();
        let mut map = self.lock();
        let Some(circuit) = map.get_mut(key) else {
            return;
        };
        if let Some(reason) = circuit.record(&self.opts, ticket, outcome, now) {
            tracing::warn!(
                kind = self.kind, key, %reason, open_for = ?self.opts.open_for,
                "circuit opened"
            );
        }
    }

    fn pending(&self, key: String, ticket: Ticket, expires: Option<Instant>) -> Pending {
        Pending {
            circuits: self.clone(),
            key,
            ticket: Some(ticket),
            expires,
        }
    }
}

/// An admitted call whose outcome is still to be recorded; recorded on drop if the call's
/// future is dropped first (the caller stopped waiting).
struct Pending {
    circuits: Circuits,
    key: String,
    ticket: Option<Ticket>,
    /// When the call's deadline passes: dropped after it, the call timed out (a failure).
    expires: Option<Instant>,
}

impl Pending {
    fn finish(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.circuits.record(&self.key, ticket, outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let outcome = match self.expires {
                Some(at) if Instant::now() >= at => Outcome::Failure,
                _ => Outcome::Abandoned,
            };
            self.circuits.record(&self.key, ticket, outcome);
        }
    }
}

fn open_error(what: &str, denied: Denied) -> Error {
    let detail = match denied {
        Denied::Open {
            retry_after,
            reason,
        } => format!(
            "circuit open for {what} ({reason}); retry after {}",
            seconds(retry_after)
        ),
        Denied::TrialsBusy => {
            format!("circuit half-open for {what}: trial calls are in flight; retry shortly")
        }
    };
    Error::new(ERROR_ID, SERVICE_UNAVAILABLE, detail)
}

/// The inner service, ready, leaving a clone in its place (the tower idiom for services whose
/// futures outlive `&mut self`).
fn take<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// Circuit breaking per node, for the attempt path (`ServiceBuilder::attempt_layer`). Clones
/// share their circuits.
#[derive(Debug, Clone)]
pub struct NodeBreakerLayer {
    circuits: Circuits,
}

impl NodeBreakerLayer {
    /// One circuit per node address, following `opts`.
    pub fn new(opts: BreakerOptions) -> Self {
        NodeBreakerLayer {
            circuits: Circuits::new(opts, "node"),
        }
    }

    /// The circuits, keyed by node address (`127.0.0.1:4000`).
    pub fn circuits(&self) -> &Circuits {
        &self.circuits
    }
}

impl<S> Layer<S> for NodeBreakerLayer {
    type Service = NodeBreaker<S>;

    fn layer(&self, inner: S) -> NodeBreaker<S> {
        NodeBreaker {
            inner,
            circuits: self.circuits.clone(),
        }
    }
}

/// An attempt service behind per-node circuits.
#[derive(Debug, Clone)]
pub struct NodeBreaker<S> {
    inner: S,
    circuits: Circuits,
}

impl<S> Service<Attempt> for NodeBreaker<S>
where
    S: Service<Attempt, Response = rpc::Response, Error = AttemptError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = AttemptError;
    type Future = BoxFuture<'static, std::result::Result<rpc::Response, AttemptError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), AttemptError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let key = attempt.node.address.clone();
        let ticket = match self.circuits.admit(&key) {
            Ok(ticket) => ticket,
            Err(denied) => {
                let what = format!("node {key} of {}", attempt.request.service);
                // Unreachable, so that the selector ejects the node and the retry goes elsewhere.
                let err = AttemptError::Unreachable(open_error(&what, denied));
                return Box::pin(async move { Err(err) });
            }
        };
        let pending =
            self.circuits
                .pending(key, ticket, Instant::now().checked_add(attempt.timeout));
        let is_failure = self.circuits.opts.is_failure;
        let fut = take(&mut self.inner).call(attempt);
        Box::pin(async move {
            let result = fut.await;
            let outcome = match &result {
                Ok(_) => Outcome::Success,
                Err(AttemptError::Unreachable(_)) => Outcome::Failure,
                Err(AttemptError::Answered(e)) if is_failure(e) => Outcome::Failure,
                Err(AttemptError::Answered(_)) => Outcome::Success,
            };
            pending.finish(outcome);
            result
        })
    }
}

/// Circuit breaking per endpoint, for the call path (`ServiceBuilder::client_layer`). Clones
/// share their circuits.
#[derive(Debug, Clone)]
pub struct EndpointBreakerLayer {
    circuits: Circuits,
}

impl EndpointBreakerLayer {
    /// One circuit per `service.Endpoint`, following `opts`.
    pub fn new(opts: BreakerOptions) -> Self {
        EndpointBreakerLayer {
            circuits: Circuits::new(opts, "endpoint"),
        }
    }

    /// The circuits, keyed by `service.Endpoint` (`greeter.Greeter.Hello`).
    pub fn circuits(&self) -> &Circuits {
        &self.circuits
    }
}

impl<S> Layer<S> for EndpointBreakerLayer {
    type Service = EndpointBreaker<S>;

    fn layer(&self, inner: S) -> EndpointBreaker<S> {
        EndpointBreaker {
            inner,
            circuits: self.circuits.clone(),
        }
    }
}

/// A call service behind per-endpoint circuits.
#[derive(Debug, Clone)]
pub struct EndpointBreaker<S> {
    inner: S,
    circuits: Circuits,
}

impl<S> Service<Call> for EndpointBreaker<S>
where
    S: Service<Call, Response = rpc::Response, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let key = format!("{}.{}", call.request.service, call.request.endpoint);
        let ticket = match self.circuits.admit(&key) {
            Ok(ticket) => ticket,
            Err(denied) => {
                let err = open_error(&format!("endpoint {key}"), denied);
                return Box::pin(async move { Err(err) });
            }
        };
        // The client turns a passed deadline into a 408 answer, so a dropped call was
        // abandoned by its caller: no verdict.
        let pending = self.circuits.pending(key, ticket, None);
        let is_failure = self.circuits.opts.is_failure;
        let fut = take(&mut self.inner).call(call);
        Box::pin(async move {
            let result = fut.await;
            let outcome = match &result {
                Err(e) if is_failure(e) => Outcome::Failure,
                _ => Outcome::Success,
            };
            pending.finish(outcome);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(opts: &BreakerOptions) -> Circuit {
        Circuit::new(opts, Instant::now())
    }

    fn fail(c: &mut Circuit, opts: &BreakerOptions) -> Option<String> {
        let t = c.admit(opts, Instant::now()).expect("admitted");
        c.record(opts, t, Outcome::Failure, Instant::now())
    }

    fn succeed(c: &mut Circuit, opts: &BreakerOptions) {
        let t = c.admit(opts, Instant::now()).expect("admitted");
        c.record(opts, t, Outcome::Success, Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_and_a_success_resets_the_run() {
        let opts = BreakerOptions::default()
            .consecutive_failures(3)
            .failure_ratio(2.0);
        let mut c = circuit(&opts);
        assert_eq!(fail(&mut c, &opts), None);
        assert_eq!(fail(&mut c, &opts), None);
        succeed(&mut c, &opts);
        assert_eq!(fail(&mut c, &opts), None);
        assert_eq!(fail(&mut c, &opts), None);
        assert_eq!(
            fail(&mut c, &opts).as_deref(),
            Some("3 consecutive failures")
        );
        assert!(c.state(Instant::now()).is_open());
        assert!(matches!(
            c.admit(&opts, Instant::now()),
            Err(Denied::Open { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_ratio_counts_once_the_window_holds_enough_calls_and_old_calls_age_out() {
        let opts = BreakerOptions::default()
            .consecutive_failures(0)
            .failure_ratio(0.5)
            .minimum_calls(4)
            .window(Duration::from_secs(10));
        let mut c = circuit(&opts);
        // Failures that age out of the window do not count.
        fail(&mut c, &opts);
        fail(&mut c, &opts);
        fail(&mut c, &opts);
        tokio::time::advance(Duration::from_secs(11)).await;
        succeed(&mut c, &opts);
        succeed(&mut c, &opts);
        assert_eq!(fail(&mut c, &opts), None, "1 of 3: below the minimum");
        let opened = fail(&mut c, &opts).expect("2 of 4 failed");
        assert!(
            opened.starts_with("2 of the last 4 calls failed"),
            "{opened}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_trials_through_then_closes_or_opens_again() {
        let opts = BreakerOptions::default()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(5))
            .half_open_calls(1);
        let mut c = circuit(&opts);
        fail(&mut c, &opts);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(c.state(Instant::now()), CircuitState::HalfOpen);
        let trial = c.admit(&opts, Instant::now()).expect("a trial call");
        assert!(matches!(
            c.admit(&opts, Instant::now()),
            Err(Denied::TrialsBusy)
        ));
        // A failed trial opens the circuit for another cool-down.
        let reason = c.record(&opts, trial, Outcome::Failure, Instant::now());
        assert!(reason.is_some());
        assert!(c.state(Instant::now()).is_open());
        tokio::time::advance(Duration::from_secs(5)).await;
        // An abandoned trial frees its slot without a verdict.
        let trial = c.admit(&opts, Instant::now()).expect("a trial call");
        c.record(&opts, trial, Outcome::Abandoned, Instant::now());
        assert_eq!(c.state(Instant::now()), CircuitState::HalfOpen);
        let trial = c.admit(&opts, Instant::now()).expect("a trial call");
        c.record(&opts, trial, Outcome::Success, Instant::now());
        assert_eq!(c.state(Instant::now()), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_of_calls_admitted_before_a_phase_change_are_ignored() {
        let opts = BreakerOptions::default().consecutive_failures(1);
        let mut c = circuit(&opts);
        let early = c.admit(&opts, Instant::now()).expect("admitted");
        fail(&mut c, &opts);
        tokio::time::advance(opts.open_for).await;
        let trial = c.admit(&opts, Instant::now()).expect("a trial");
        // The slow call from before the circuit opened fails now: no effect on the trial.
        assert_eq!(
            c.record(&opts, early, Outcome::Failure, Instant::now()),
            None
        );
        c.record(&opts, trial, Outcome::Success, Instant::now());
        assert_eq!(c.state(Instant::now()), CircuitState::Closed);
    }

    #[test]
    fn the_default_failure_test_spares_the_callers_mistakes() {
        assert!(server_failure(&Error::internal("x", "boom")));
        assert!(server_failure(&Error::timeout("x", "slow")));
        assert!(server_failure(&Error::new("x", 503, "down")));
        assert!(!server_failure(&Error::bad_request("x", "bad")));
        assert!(!server_failure(&Error::not_found("x", "no")));
    }
}
