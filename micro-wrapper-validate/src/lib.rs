//! Request validation for Micro for Rust handlers: a request that breaks its message's rules is
//! answered with a `400 Bad Request` listing each offending field, and the handler never runs.
//!
//! Rules live with the message type, in the [`Validate`] trait, written by hand or by a code
//! generator. [`ValidateLayer`] sits on the handler path (`ServiceBuilder::handler_layer`),
//! where requests are still encoded; it is told which message type each endpoint takes, decodes
//! the body with the call's codec (protobuf, JSON, ...) and checks it.
//!
//! ```
//! use micro_wrapper_validate::{FieldViolation, Validate, ValidateLayer, Violations};
//!
//! #[derive(Default)]
//! struct SignUp { name: String, email: String }
//! # impl micro_core::Message for SignUp {}
//!
//! impl Validate for SignUp {
//!     fn validate(&self) -> Result<(), Vec<FieldViolation>> {
//!         let mut v = Violations::new();
//!         v.check(!self.name.is_empty(), "name", "must not be empty");
//!         v.check(self.name.chars().count() <= 64, "name", "must be at most 64 characters");
//!         v.check(self.email.contains('@'), "email", "must be an email address");
//!         v.into_result()
//!     }
//! }
//!
//! let layer = ValidateLayer::new().endpoint::<SignUp>("Accounts.SignUp");
//! // micro::Service::builder("accounts").handler_layer(layer)
//! # let _ = layer;
//! ```
//!
//! A caller of `Accounts.SignUp` with an empty name and no email gets
//! `400 Bad Request: invalid request to Accounts.SignUp: name: must not be empty; email: must be
//! an email address`.
//!
//! **Why not protoc-gen-validate or protovalidate.** The Rust ports of those
//! (`prost-validate`, `prost-protovalidate`) need annotated `.proto` files compiled with their
//! own build step or with `prost-reflect` descriptors, which `micro-build` does not produce.
//! They plug in here all the same: [`ValidateLayer::endpoint_with`] takes any function from the
//! message to its violations, so a message with generated rules is one closure away.
//!
//! The request is decoded once here and once more by the handler; for large messages on hot
//! endpoints, validating inside the handler avoids the second decode.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::rpc::{self, ServerCall};
use micro_core::{BoxFuture, Error, Message, Result};
use tower_layer::Layer;
use tower_service::Service;

/// One field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field, as callers name it (`name`, `address.city`, `items[2].sku`).
    pub field: String,
    /// What is wrong with it, for a person (`must not be empty`).
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// A message that can check itself.
pub trait Validate {
    /// Every rule the message breaks; `Ok` when it breaks none.
    fn validate(&self) -> std::result::Result<(), Vec<FieldViolation>>;
}

/// Collects violations while checking a message, for [`Validate`] implementations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) -> &mut Self {
        self.0.push(FieldViolation::new(field, description));
        self
    }

    /// Records a violation of `field` unless `ok`.
    pub fn check(
        &mut self,
        ok: bool,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        if !ok {
            self.add(field, description);
        }
        self
    }

    /// Adds the violations of a nested message, its fields prefixed with `field.`.
    pub fn nested(&mut self, field: &str, message: &dyn Validate) -> &mut Self {
        if let Err(inner) = message.validate() {
            for v in inner {
                self.add(format!("{field}.{}", v.field), v.description);
            }
        }
        self
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` if nothing was recorded, else the violations.
    pub fn into_result(self) -> std::result::Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// The 400 a request with `violations` gets; `id` is `service.Endpoint`.
pub fn invalid_request(id: &str, endpoint: &str, violations: &[FieldViolation]) -> Error {
    let list = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Error::bad_request(id, format!("invalid request to {endpoint}: {list}"))
}

/// Decodes a call's request and checks it.
type Check = Arc<dyn Fn(&ServerCall) -> Result<()> + Send + Sync>;

/// Validates requests on the handler path, by endpoint. Endpoints it was not told about pass
/// untouched.
#[derive(Clone, Default)]
pub struct ValidateLayer {
    checks: Arc<HashMap<String, Check>>,
}

impl fmt::Debug for ValidateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut endpoints: Vec<&str> = self.endpoints().collect();
        endpoints.sort_unstable();
        f.debug_struct("ValidateLayer")
            .field("endpoints", &endpoints)
            .finish()
    }
}

impl ValidateLayer {
    /// A layer that validates nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the requests of `endpoint` (`Greeter.Hello`) as `T`, by its [`Validate`] rules.
    pub fn endpoint<T>(self, endpoint: &str) -> Self
    where
        T: Message + Default + Validate,
    {
        self.endpoint_with(endpoint, T::validate)
    }

    /// Validates the requests of `endpoint` as `T` with `rules`: for types whose rules come
    /// from elsewhere (another validation crate, or a type of another crate).
    pub fn endpoint_with<T, F>(mut self, endpoint: &str, rules: F) -> Self
    where
        T: Message + Default,
        F: Fn(&T) -> std::result::Result<(), Vec<FieldViolation>> + Send + Sync + 'static,
    {
        let check: Check = Arc::new(move |call: &ServerCall| {
            let req = &call.request;
            let id = format!("{}.{}", req.service, req.endpoint);
            let mut message = T::default();
            call.codec.decode(&req.body, &mut message).map_err(|e| {
                Error::bad_request(
                    id.clone(),
                    format!(
                        "cannot decode the request to {}: {}",
                        req.endpoint, e.detail
                    ),
                )
            })?;
            rules(&message).map_err(|violations| invalid_request(&id, &req.endpoint, &violations))
        });
        Arc::make_mut(&mut self.checks).insert(endpoint.to_string(), check);
        self
    }

    /// The endpoints validated.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.checks.keys().map(String::as_str)
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validating<S>;

    fn layer(&self, inner: S) -> Validating<S> {
        Validating {
            inner,
            checks: self.checks.clone(),
        }
    }
}

/// A handler service behind a [`ValidateLayer`].
#[derive(Clone)]
pub struct Validating<S> {
    inner: S,
    checks: Arc<HashMap<String, Check>>,
}

impl<S: fmt::Debug> fmt::Debug for Validating<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validating")
            .field("inner", &self.inner)
            .field("endpoints", &self.checks.len())
            .finish()
    }
}

impl<S> Service<ServerCall> for Validating<S>
where
    S: Service<ServerCall, Response = rpc::Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        // Client and bidirectional streams open without a request: nothing to check yet.
        let check = match call.kind.has_request() {
            true => self.checks.get(&call.request.endpoint),
            false => None,
        };
        if let Some(check) = check {
            if let Err(e) = check(&call) {
                return Box::pin(async move { Err(e) });
            }
        }
        Box::pin(self.inner.call(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Address {
        city: String,
    }

    impl Validate for Address {
        fn validate(&self) -> std::result::Result<(), Vec<FieldViolation>> {
            let mut v = Violations::new();
            v.check(!self.city.is_empty(), "city", "must not be empty");
            v.into_result()
        }
    }

    #[test]
    fn violations_collect_with_nested_prefixes_and_read_well() {
        let mut v = Violations::new();
        v.check(true, "name", "fine")
            .check(false, "name", "must not be empty")
            .nested(
                "address",
                &Address {
                    city: String::new(),
                },
            );
        let list = v.into_result().expect_err("two violations");
        assert_eq!(
            list,
            vec![
                FieldViolation::new("name", "must not be empty"),
                FieldViolation::new("address.city", "must not be empty"),
            ]
        );
        let e = invalid_request("shop.Orders.Create", "Orders.Create", &list);
        assert_eq!(e.code, 400);
        assert_eq!(e.id, "shop.Orders.Create");
        assert_eq!(
            e.detail,
            "invalid request to Orders.Create: name: must not be empty; \
             address.city: must not be empty"
        );
        assert_eq!(Violations::new().into_result(), Ok(()));
    }
}
