//! Typed requests and responses, as generated clients and handlers see them.

use std::time::{Duration, Instant};

use micro_core::rpc::CallOptions;
use micro_core::selector::Filter;
use micro_core::Metadata;

/// A typed request: the message, its metadata, and (for a caller) per-call options or (for a
/// handler) where it came from and its deadline.
#[derive(Debug, Clone, Default)]
pub struct Request<T> {
    message: T,
    metadata: Metadata,
    options: CallOptions,
    endpoint: String,
    deadline: Option<Instant>,
}

impl<T> Request<T> {
    /// A request carrying `message`.
    pub fn new(message: T) -> Self {
        Request {
            message,
            metadata: Metadata::new(),
            options: CallOptions::default(),
            endpoint: String::new(),
            deadline: None,
        }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// The message, consuming the request.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// The metadata: sent as headers by a caller, received from the caller by a handler.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Sets the whole call's timeout (sent to the server, which enforces it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Sets how many times a failed call is retried.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// Sets which failures are retried: [`RetryPolicy::GoMicro`](crate::rpc::RetryPolicy)
    /// for an idempotent endpoint that may run again after a timeout or server error.
    pub fn with_retry(mut self, policy: crate::rpc::RetryPolicy) -> Self {
        self.options.retry = Some(policy);
        self
    }

    /// Calls this address directly instead of asking the selector.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.options.address = Some(address.into());
        self
    }

    /// Names the fully qualified proto service of the endpoint (`greeter.Greeter`), for
    /// transports that route by it (gRPC). Generated clients set it.
    pub fn with_proto_service(mut self, name: &str) -> Self {
        self.options.proto_service = Some(name.to_string());
        self
    }

    /// Adds a selector filter (version, node label, endpoint).
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.options.filters.push(filter);
        self
    }

    /// The per-call options.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The per-call options, mutably.
    pub fn options_mut(&mut self) -> &mut CallOptions {
        &mut self.options
    }

    /// For a handler: the endpoint called (`Greeter.Hello`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// For a handler: when the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Maps the message, keeping the rest.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            message: f(self.message),
            metadata: self.metadata,
            options: self.options,
            endpoint: self.endpoint,
            deadline: self.deadline,
        }
    }

    pub(crate) fn incoming(
        message: T,
        metadata: Metadata,
        endpoint: String,
        deadline: Option<Instant>,
    ) -> Self {
        Request {
            message,
            metadata,
            options: CallOptions::default(),
            endpoint,
            deadline,
        }
    }

    pub(crate) fn into_parts(self) -> (T, Metadata, CallOptions) {
        (self.message, self.metadata, self.options)
    }
}

/// Anything a typed client method accepts as a request: a message or a [`Request`].
pub trait IntoRequest<T> {
    /// Wraps the message in a request, or passes the request on.
    fn into_request(self) -> Request<T>;
}

impl<T> IntoRequest<T> for T {
    fn into_request(self) -> Request<T> {
        Request::new(self)
    }
}

impl<T> IntoRequest<T> for Request<T> {
    fn into_request(self) -> Request<T> {
        self
    }
}

/// A typed response: the message and the metadata the handler sent back.
#[derive(Debug, Clone, Default)]
pub struct Response<T> {
    message: T,
    metadata: Metadata,
}

impl<T> Response<T> {
    /// A response carrying `message`.
    pub fn new(message: T) -> Self {
        Response {
            message,
            metadata: Metadata::new(),
        }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, consuming the response.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// The metadata sent back with the reply.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, mutably (handlers add entries here).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    pub(crate) fn from_parts(message: T, metadata: Metadata) -> Self {
        Response { message, metadata }
    }

    pub(crate) fn into_parts(self) -> (T, Metadata) {
        (self.message, self.metadata)
    }
}
