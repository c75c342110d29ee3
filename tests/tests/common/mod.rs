//! Shared set-up: services on a private in-memory registry and the real http transport.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::{Handler, Service};

/// A builder for a service on `registry`, listening on loopback, env ignored.
pub fn builder(name: &str, registry: &MemoryRegistry) -> micro::ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// A started greeter service with extra handlers.
pub async fn greeter(registry: &MemoryRegistry, extra: Vec<Handler>) -> Service {
    let mut b = builder("greeter", registry).handler(greeter_handler(GreeterService));
    for h in extra {
        b = b.handler(h);
    }
    let s = b.build().expect("build the service");
    s.start().await.expect("start the service");
    s
}

/// A client-only service on the same registry.
pub fn client(registry: &MemoryRegistry) -> micro::Client {
    builder("caller", registry)
        .build()
        .expect("build the caller")
        .client()
}

/// Bounds a future so that a bug fails the test instead of hanging it.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}
