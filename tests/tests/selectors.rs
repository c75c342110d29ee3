//! The `static` selector: calls go to listed addresses (or to the service's name as a host),
//! balanced, retried and ejected like registered nodes, for fleets balanced outside Micro.

mod common;

use std::sync::Arc;

use common::{greeter, within};
use greeter::greeter::{GreeterClient, HelloRequest};
use micro::config::Config;
use micro::registry::MemoryRegistry;
use micro::selector::{RegistrySelector, SelectorOptions, SelectorStrategy, StaticAddresses};
use micro::Service;

/// The address of a started service's one node.
fn address_of(service: &Service) -> String {
    service
        .server()
        .registration()
        .and_then(|s| s.nodes.first().map(|n| n.address.clone()))
        .expect("a registered node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_to_the_listed_addresses_and_skip_a_dead_one() {
    // Two greeters the caller cannot find in any registry: each on a registry of its own.
    let (one, two) = (MemoryRegistry::new(), MemoryRegistry::new());
    let first = greeter(&one, vec![]).await;
    let second = greeter(&two, vec![]).await;
    // A third address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead_address = dead.local_addr().expect("its address").to_string();
    drop(dead);

    let addresses = StaticAddresses::new().addresses(
        "greeter",
        [address_of(&first), address_of(&second), dead_address],
    );
    let opts = SelectorOptions {
        strategy: SelectorStrategy::RoundRobin,
        ..SelectorOptions::default()
    };
    let caller = Service::builder("caller")
        .ignore_env()
        .registry(Arc::new(MemoryRegistry::new()))
        .selector(Arc::new(RegistrySelector::new(Arc::new(addresses), opts)))
        .build()
        .expect("build the caller");
    let greeter = GreeterClient::new("greeter", caller.client());
    // Every call succeeds: one that lands on the dead address is retried on a live one.
    for n in 0..9 {
        let hello = greeter.hello(HelloRequest {
            name: format!("n{n}"),
        });
        let reply = within("a call", hello).await.expect("answered");
        assert_eq!(reply.into_inner().message, format!("Hello n{n}"));
    }
    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
}

#[tokio::test]
async fn micro_selector_static_sends_calls_to_the_name_as_a_host() {
    let config = Config {
        selector: Some("static".into()),
        ..Config::default()
    };
    let caller = Service::builder("caller")
        .ignore_env()
        .config(config)
        .registry(Arc::new(MemoryRegistry::new()))
        .build()
        .expect("static is a selector");
    // Nothing is called `no-such-host.invalid`: the error names the address it tried.
    let greeter = GreeterClient::new("no-such-host.invalid", caller.client());
    let e = within("a call", greeter.hello(HelloRequest { name: "x".into() }))
        .await
        .expect_err("no such host");
    assert!(e.detail.contains("no-such-host.invalid:8080"), "{e}");

    let unknown = Config {
        selector: Some("nearest".into()),
        ..Config::default()
    };
    let e = Service::builder("caller")
        .ignore_env()
        .config(unknown)
        .build()
        .expect_err("no such selector");
    assert!(e.detail.contains("static, dns"), "{e}");
}
