//! Rate limiting for Micro for Rust: a token bucket as a tower layer, for the client call path
//! and the server handler path.
//!
//! [`RateLimitLayer`] admits `rate` calls per period with bursts of up to `burst` calls, one
//! bucket per key: per target service (the default), per endpoint, or per whatever a key
//! function returns. A call over the limit is either rejected at once with a `429 Too Many
//! Requests` [`Error`] ([`Mode::Reject`], the default) or held until the bucket has room
//! ([`Mode::Wait`]), but never past the call's deadline: a call whose turn would come too late
//! gets the 429 straight away instead of waiting for it.
//!
//! The same layer value works on both paths:
//!
//! - on the client (`ServiceBuilder::client_layer`), it sees each call once, retries included,
//!   and limits what this process sends to each service or endpoint. A wait is taken out of the
//!   call's timeout, so the whole call keeps its deadline;
//! - on the server (`ServiceBuilder::handler_layer`), it limits what the service accepts,
//!   before the handler runs.
//!
//! ```
//! use std::time::Duration;
//! use micro_wrapper_ratelimit::{Rate, RateLimitLayer};
//!
//! // Handlers: at most 100 calls a second per endpoint, bursts of 20, excess rejected (429).
//! let server_limit = RateLimitLayer::new(Rate::per_second(100)).burst(20).per_endpoint();
//! // Client: 10 calls a second to each service; calls over it wait (up to 2 s) for their turn.
//! let client_limit = RateLimitLayer::new(Rate::per_second(10))
//!     .wait()
//!     .max_wait(Duration::from_secs(2));
//! // micro::Service::builder("greeter")
//! //     .handler_layer(server_limit)
//! //     .client_layer(client_limit)
//! # let _ = (server_limit, client_limit);
//! ```
//!
//! Buckets are kept in memory in this process: with several instances of a service, each
//! instance limits on its own.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use micro_core::rpc::{self, Call, ServerCall};
use micro_core::{BoxFuture, Error, Result};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// The code of the error a limited call gets.
pub const TOO_MANY_REQUESTS: i32 = 429;

/// How fast a bucket refills: `calls` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    calls: u32,
    period: Duration,
}

impl Rate {
    /// `calls` per `period`. A rate of zero calls, or over a zero period, is read as one call
    /// per period and one call per nanosecond respectively, so that a bucket always refills.
    pub fn new(calls: u32, period: Duration) -> Self {
        Rate {
            calls: calls.max(1),
            period: period.max(Duration::from_nanos(1)),
        }
    }

    /// `calls` per second.
    pub fn per_second(calls: u32) -> Self {
        Self::new(calls, Duration::from_secs(1))
    }

    /// `calls` per minute.
    pub fn per_minute(calls: u32) -> Self {
        Self::new(calls, Duration::from_secs(60))
    }

    /// The calls admitted per period.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The time one call's token takes to come back.
    fn interval(&self) -> Duration {
        self.period / self.calls
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} calls per {:?}", self.calls, self.period)
    }
}

/// What happens to a call when its bucket is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fail it at once with a 429 (the default).
    #[default]
    Reject,
    /// Hold it until the bucket has room, bounded by the call's deadline and by the layer's
    /// maximum wait; a call whose turn would come later than that gets the 429 at once.
    Wait,
}

/// A function that names a call's bucket.
pub type KeyFn = Arc<dyn Fn(&rpc::Request) -> String + Send + Sync>;

/// Which calls share a bucket.
#[derive(Clone, Default)]
pub enum Scope {
    /// One bucket for everything that passes the layer.
    Global,
    /// One bucket per service (`greeter`), the default. On the handler path every call is for
    /// the serving service, so this is one bucket for the server.
    #[default]
    Service,
    /// One bucket per endpoint (`greeter.Greeter.Hello`).
    Endpoint,
    /// One bucket per value of a key function (a caller id from the metadata, say).
    Key(KeyFn),
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("Global"),
            Scope::Service => f.write_str("Service"),
            Scope::Endpoint => f.write_str("Endpoint"),
            Scope::Key(_) => f.write_str("Key(..)"),
        }
    }
}

impl Scope {
    fn key(&self, req: &rpc::Request) -> String {
        match self {
            Scope::Global => String::from("*"),
            Scope::Service => req.service.clone(),
            Scope::Endpoint => format!("{}.{}", req.service, req.endpoint),
            Scope::Key(f) => f(req),
        }
    }
}

/// What a limiter has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStats {
    /// Calls let through, waited or not.
    pub admitted: u64,
    /// Of those, the calls that had to wait for their turn.
    pub waited: u64,
    /// Calls refused with a 429.
    pub rejected: u64,
}

#[derive(Debug, Clone)]
struct Config {
    rate: Rate,
    burst: u32,
    mode: Mode,
    scope: Scope,
    max_wait: Duration,
}

/// Past this many buckets, buckets that are full again (and so no different from new ones)
/// are dropped, so a key function with many values does not grow memory without end.
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Default)]
struct State {
    /// Per key, the theoretical arrival time of the next call (GCRA): the bucket is full when
    /// it is not after now, and each admitted call moves it one interval further.
    buckets: Mutex<HashMap<String, Instant>>,
    admitted: AtomicU64,
    waited: AtomicU64,
    rejected: AtomicU64,
}

/// Why a call was not admitted.
enum Refusal {
    /// Its turn would come after `wait`.
    Empty { wait: Duration },
    /// Its turn would come after `wait`, past what it may wait (`bound`).
    TooLate { wait: Duration, bound: Duration },
}

/// The rate limiter, as a tower [`Layer`] for the client call path ([`Call`]) and the handler
/// path ([`ServerCall`]). Clones share their buckets.
#[derive(Clone)]
pub struct RateLimitLayer {
    config: Arc<Config>,
    state: Arc<State>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("rate", &self.config.rate)
            .field("burst", &self.config.burst)
            .field("mode", &self.config.mode)
            .field("scope", &self.config.scope)
            .field("max_wait", &self.config.max_wait)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RateLimitLayer {
    /// A limiter admitting `rate`, in bursts as large as one period's calls, rejecting the
    /// excess, one bucket per service.
    pub fn new(rate: Rate) -> Self {
        RateLimitLayer {
            config: Arc::new(Config {
                rate,
                burst: rate.calls,
                mode: Mode::Reject,
                scope: Scope::Service,
                max_wait: Duration::from_secs(5),
            }),
            state: Arc::new(State::default()),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = (*self.config).clone();
        change(&mut config);
        self.config = Arc::new(config);
        self
    }

    /// How many calls may pass at once after a quiet spell (at least 1).
    pub fn burst(self, burst: u32) -> Self {
        self.configure(|c| c.burst = burst.max(1))
    }

    /// What to do with a call over the limit.
    pub fn mode(self, mode: Mode) -> Self {
        self.configure(|c| c.mode = mode)
    }

    /// Holds calls over the limit until their turn ([`Mode::Wait`]).
    pub fn wait(self) -> Self {
        self.mode(Mode::Wait)
    }

    /// Rejects calls over the limit with a 429 ([`Mode::Reject`], the default).
    pub fn reject(self) -> Self {
        self.mode(Mode::Reject)
    }

    /// The longest a call waits in [`Mode::Wait`], when its own deadline does not say less
    /// (5 s, the client's default timeout, unless set).
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.configure(|c| c.max_wait = max_wait)
    }

    /// Which calls share a bucket.
    pub fn scope(self, scope: Scope) -> Self {
        self.configure(|c| c.scope = scope)
    }

    /// One bucket per service (the default).
    pub fn per_service(self) -> Self {
        self.scope(Scope::Service)
    }

    /// One bucket per endpoint.
    pub fn per_endpoint(self) -> Self {
        self.scope(Scope::Endpoint)
    }

    /// One bucket for all calls.
    pub fn global(self) -> Self {
        self.scope(Scope::Global)
    }

    /// One bucket per value of `key`, e.g. per caller:
    /// `.key_by(|req| req.metadata.get("Caller").unwrap_or("anonymous").to_string())`.
    pub fn key_by(self, key: impl Fn(&rpc::Request) -> String + Send + Sync + 'static) -> Self {
        self.scope(Scope::Key(Arc::new(key)))
    }

    /// What this limiter (and its clones) has done so far.
    pub fn stats(&self) -> RateLimitStats {
        RateLimitStats {
            admitted: self.state.admitted.load(Ordering::Relaxed),
            waited: self.state.waited.load(Ordering::Relaxed),
            rejected: self.state.rejected.load(Ordering::Relaxed),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.state
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token for `key`, now or, in wait mode, within `bound`; returns how long the
    /// caller must wait for its turn (zero when it may go at once). The token is reserved
    /// before the wait, so waiting calls go in the order they came.
    fn reserve(&self, key: &str, bound: Duration) -> std::result::Result<Duration, Refusal> {
        let c = &self.config;
        let interval = c.rate.interval();
        // A full bucket lets `burst` calls through at once: the next arrival may be that many
        // intervals (less the one this call uses) ahead of now.
        let tolerance = interval.saturating_mul(c.burst - 1);
        let now = Instant::now();
        let mut buckets = self.buckets();
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, next| *next > now);
        }
        let next = buckets.get(key).copied().unwrap_or(now).max(now);
        let wait = next
            .saturating_duration_since(now)
            .saturating_sub(tolerance);
        if !wait.is_zero() {
            match c.mode {
                Mode::Reject => return Err(Refusal::Empty { wait }),
                Mode::Wait if wait >= bound => return Err(Refusal::TooLate { wait, bound }),
                Mode::Wait => {}
            }
        }
        buckets.insert(key.to_string(), next + interval);
        Ok(wait)
    }

    /// Admits a call for `key` or refuses it with a 429 raised by `id`; waits for its turn in
    /// wait mode, at most `bound`. Returns how long it waited.
    async fn admit(&self, id: &str, key: &str, bound: Duration) -> Result<Duration> {
        match self.reserve(key, bound) {
            Ok(wait) => {
                self.state.admitted.fetch_add(1, Ordering::Relaxed);
                if !wait.is_zero() {
                    self.state.waited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                Ok(wait)
            }
            Err(refusal) => {
                self.state.rejected.fetch_add(1, Ordering::Relaxed);
                let c = &self.config;
                let detail = match refusal {
                    Refusal::Empty { wait } => format!(
                        "rate limit exceeded for {key}: {} (burst {}); retry in {}",
                        c.rate,
                        c.burst,
                        seconds(wait)
                    ),
                    Refusal::TooLate { wait, bound } => format!(
                        "rate limit exceeded for {key}: {} (burst {}); the next turn is in {}, \
                         past what this call may wait ({})",
                        c.rate,
                        c.burst,
                        seconds(wait),
                        seconds(bound)
                    ),
                };
                Err(Error::new(id, TOO_MANY_REQUESTS, detail))
            }
        }
    }
}

/// A duration as seconds with millisecond precision, for people.
fn seconds(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.clone(),
        }
    }
}

/// A service behind a [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimitLayer,
}

impl<S> RateLimit<S> {
    /// The limiter in front of the service.
    pub fn limiter(&self) -> &RateLimitLayer {
        &self.limiter
    }

    /// The inner service, ready, leaving a clone in its place (the tower idiom for services
    /// whose futures outlive `&mut self`).
    fn take_inner(&mut self) -> S
    where
        S: Clone,
    {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

/// The client call path: the bucket of the target service or endpoint.
impl<S> Service<Call> for RateLimit<S>
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

    fn call(&mut self, mut call: Call) -> Self::Future {
        let mut inner = self.take_inner();
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let key = limiter.config.scope.key(&call.request);
            let timeout = call.options.timeout;
            let bound = timeout.map_or(limiter.config.max_wait, |t| t.min(limiter.config.max_wait));
            let waited = limiter.admit("micro.client", &key, bound).await?;
            // The wait is part of the call: what is left of its timeout goes on.
            if let Some(t) = timeout {
                call.options.timeout = Some(t.saturating_sub(waited));
            }
            inner.call(call).await
        })
    }
}

/// The server handler path: the bucket of the serving service or the endpoint called.
impl<S> Service<ServerCall> for RateLimit<S>
where
    S: Service<ServerCall, Response = rpc::Response, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let mut inner = self.take_inner();
        let limiter = self.limiter.clone();
        Box::pin(async move {
            let key = limiter.config.scope.key(&call.request);
            let id = format!("{}.{}", call.request.service, call.request.endpoint);
            let max_wait = limiter.config.max_wait;
            let bound = call.deadline.map_or(max_wait, |d| {
                d.saturating_duration_since(std::time::Instant::now())
                    .min(max_wait)
            });
            limiter.admit(&id, &key, bound).await?;
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str, endpoint: &str) -> rpc::Request {
        rpc::Request {
            service: service.into(),
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    #[test]
    fn scopes_name_buckets() {
        let req = request("greeter", "Greeter.Hello");
        assert_eq!(Scope::Global.key(&req), "*");
        assert_eq!(Scope::Service.key(&req), "greeter");
        assert_eq!(Scope::Endpoint.key(&req), "greeter.Greeter.Hello");
        let by_endpoint = Scope::Key(Arc::new(|r: &rpc::Request| r.endpoint.clone()));
        assert_eq!(by_endpoint.key(&req), "Greeter.Hello");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_admits_a_burst_then_one_call_per_interval() {
        let limiter = RateLimitLayer::new(Rate::per_second(10)).burst(3);
        let bound = Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(limiter.admit("t", "k", bound).await, Ok(Duration::ZERO));
        }
        let refused = limiter
            .admit("t", "k", bound)
            .await
            .expect_err("the burst is spent");
        assert_eq!(refused.code, TOO_MANY_REQUESTS);
        assert!(refused.detail.contains("retry in 0.100s"), "{refused}");
        // Other keys have buckets of their own.
        assert!(limiter.admit("t", "other", bound).await.is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.admit("t", "k", bound).await.is_ok());
        assert!(limiter.admit("t", "k", bound).await.is_err());
        assert_eq!(
            limiter.stats(),
            RateLimitStats {
                admitted: 5,
                waited: 0,
                rejected: 2
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_calls_are_spaced_one_interval_apart_in_arrival_order() {
        let limiter = RateLimitLayer::new(Rate::per_second(4)).burst(1).wait();
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..4 {
            let limiter = limiter.clone();
            waits.push(tokio::spawn(async move {
                limiter
                    .admit("t", "k", Duration::from_secs(5))
                    .await
                    .map(|_| Instant::now() - start)
            }));
        }
        let mut admitted_at = Vec::new();
        for w in waits {
            admitted_at.push(w.await.expect("task").expect("admitted"));
        }
        // The paused clock makes the schedule exact: one call per 250 ms.
        let expected: Vec<Duration> = (0..4).map(|i| Duration::from_millis(250 * i)).collect();
        assert_eq!(admitted_at, expected);
        assert_eq!(limiter.stats().waited, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_turn_is_past_its_bound_is_refused_without_waiting() {
        let limiter = RateLimitLayer::new(Rate::per_minute(1)).wait();
        assert!(limiter
            .admit("t", "k", Duration::from_secs(1))
            .await
            .is_ok());
        let start = Instant::now();
        let refused = limiter
            .admit("t", "k", Duration::from_secs(1))
            .await
            .expect_err("its turn is a minute away");
        assert_eq!(Instant::now(), start, "refused without waiting");
        assert_eq!(refused.code, TOO_MANY_REQUESTS);
        assert!(refused.detail.contains("past what this call may wait"));
        // The refused call took no token: the next one after a minute goes at once.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            limiter.admit("t", "k", Duration::from_secs(1)).await,
            Ok(Duration::ZERO)
        );
    }
}
