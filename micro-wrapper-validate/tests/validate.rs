//! Validation over real calls: the greeter on the http transport, on loopback, with protobuf
//! and JSON callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{GreeterClient, HelloReply, HelloRequest};
use micro::core::codec::erased_serde;
use micro::debug::{HealthRequest, HealthResponse};
use micro::registry::MemoryRegistry;
use micro::{Handler, Message, Request, Response, Service, ServiceBuilder};
use micro_wrapper_validate::{FieldViolation, Validate, ValidateLayer, Violations};
use serde::{Deserialize, Serialize};

fn builder(name: &str, registry: &MemoryRegistry) -> ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("the http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

/// The greeter's rules. `HelloRequest` belongs to the greeter crate, so a test cannot implement
/// `Validate` for it; the rules are a function, given to `endpoint_with`.
fn hello_rules(req: &HelloRequest) -> Result<(), Vec<FieldViolation>> {
    let mut v = Violations::new();
    v.check(!req.name.is_empty(), "name", "must not be empty");
    v.check(
        req.name.chars().count() <= 64,
        "name",
        "must be at most 64 characters",
    );
    v.into_result()
}

/// `Greeter.Hello`, counting the calls that reach it.
fn counting_greeter(calls: Arc<AtomicUsize>) -> Handler {
    Handler::new("Greeter").unary("Hello", move |req: Request<HelloRequest>| {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(Response::new(HelloReply {
                message: format!("Hello {}", req.into_inner().name),
            }))
        })
    })
}

#[tokio::test]
async fn a_bad_greeting_gets_a_400_with_field_details_and_never_reaches_the_handler() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = builder("greeter", &registry)
        .handler(counting_greeter(calls.clone()))
        .handler_layer(ValidateLayer::new().endpoint_with("Greeter.Hello", hello_rules))
        .build()
        .expect("build");
    server.start().await.expect("start");
    let client = builder("caller", &registry)
        .build()
        .expect("caller")
        .client();

    // Protobuf and JSON callers alike: the layer decodes with the call's own codec.
    for codec in ["application/protobuf", "application/json"] {
        let greeter = GreeterClient::new("greeter", client.with_content_type(codec));
        let e = within(
            "empty name",
            greeter.hello(HelloRequest { name: "".into() }),
        )
        .await
        .expect_err("an empty name breaks the rules");
        assert_eq!(e.code, 400, "{codec}: {e}");
        assert_eq!(e.id, "greeter.Greeter.Hello");
        assert_eq!(
            e.detail,
            "invalid request to Greeter.Hello: name: must not be empty"
        );

        let long = HelloRequest {
            name: "x".repeat(65),
        };
        let e = within("long name", greeter.hello(long))
            .await
            .expect_err("too long");
        assert_eq!(e.code, 400);
        assert_eq!(
            e.detail,
            "invalid request to Greeter.Hello: name: must be at most 64 characters"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{codec}: the handler never ran"
        );

        let ok = within(
            "good name",
            greeter.hello(HelloRequest {
                name: "x".repeat(64),
            }),
        )
        .await
        .expect("a good request passes");
        assert_eq!(ok.get_ref().message, format!("Hello {}", "x".repeat(64)));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
    }

    // Endpoints the layer was not told about pass untouched.
    let health = within(
        "health",
        client.unary::<_, HealthResponse>(
            "greeter",
            "Debug.Health",
            Request::new(HealthRequest {}),
        ),
    )
    .await
    .expect("not validated");
    assert_eq!(health.get_ref().status, "ok");
    server.stop().await.expect("stop");
}

/// A message of this crate, so `Validate` can be implemented for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SignUp {
    name: String,
    email: String,
    age: u32,
}

impl Message for SignUp {
    fn as_serialize(&self) -> Option<&dyn erased_serde::Serialize> {
        Some(self)
    }

    fn deserialize_from(
        &mut self,
        de: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Option<Result<(), erased_serde::Error>> {
        Some(erased_serde::deserialize(de).map(|v| *self = v))
    }
}

impl Validate for SignUp {
    fn validate(&self) -> Result<(), Vec<FieldViolation>> {
        let mut v = Violations::new();
        v.check(!self.name.is_empty(), "name", "must not be empty")
            .check(
                self.email.contains('@'),
                "email",
                "must be an email address",
            )
            .check(self.age >= 18, "age", "must be at least 18");
        v.into_result()
    }
}

#[tokio::test]
async fn every_violation_is_listed_and_undecodable_bodies_are_refused() {
    let registry = MemoryRegistry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let accounts = Handler::new("Accounts").unary("SignUp", move |req: Request<SignUp>| {
        seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(Response::new(req.into_inner())) })
    });
    let layer = ValidateLayer::new().endpoint::<SignUp>("Accounts.SignUp");
    assert_eq!(layer.endpoints().collect::<Vec<_>>(), ["Accounts.SignUp"]);
    let server = builder("accounts", &registry)
        .handler(accounts)
        .handler_layer(layer)
        .build()
        .expect("build");
    server.start().await.expect("start");
    let client = builder("caller", &registry)
        .build()
        .expect("caller")
        .client()
        .with_content_type("application/json");

    let bad = SignUp {
        name: String::new(),
        email: "nope".into(),
        age: 17,
    };
    let e = within(
        "bad sign-up",
        client.unary::<_, SignUp>("accounts", "Accounts.SignUp", Request::new(bad)),
    )
    .await
    .expect_err("three violations");
    assert_eq!(e.code, 400);
    assert_eq!(
        e.detail,
        "invalid request to Accounts.SignUp: name: must not be empty; \
         email: must be an email address; age: must be at least 18"
    );

    // A body that is not a SignUp at all.
    let garbage = micro::rpc::Request {
        id: String::new(),
        proto_service: None,
        service: "accounts".into(),
        endpoint: "Accounts.SignUp".into(),
        content_type: "application/json".into(),
        metadata: Default::default(),
        body: bytes::Bytes::from_static(b"{\"age\": \"old\""),
    };
    let e = within("garbage", client.call_raw(garbage, Default::default()))
        .await
        .expect_err("undecodable");
    assert_eq!(e.code, 400, "{e}");
    assert!(
        e.detail
            .starts_with("cannot decode the request to Accounts.SignUp"),
        "{e}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let good = SignUp {
        name: "Ada".into(),
        email: "ada@example.org".into(),
        age: 36,
    };
    let echoed = within(
        "good sign-up",
        client.unary::<_, SignUp>("accounts", "Accounts.SignUp", Request::new(good.clone())),
    )
    .await
    .expect("valid");
    assert_eq!(echoed.into_inner(), good);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.stop().await.expect("stop");
}
