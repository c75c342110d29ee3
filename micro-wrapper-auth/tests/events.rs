//! Authenticated events over a real broker: the http broker on loopback, a subscriber behind
//! `AuthLayer` on the subscriber path, publishers with and without `BearerLayer` on the publish
//! path. An event with a good token reaches the subscriber with its claims; one without a
//! token, with a forged, expired or under-scoped one never does, and its publisher hears the
//! refusal; `Micro-Auth-*` headers a publisher writes never become claims.

use std::sync::Arc;
use std::time::Duration;

use micro::registry::MemoryRegistry;
use micro::{Event, Json, Metadata, Service, ServiceBuilder};
use micro_wrapper_auth::{AuthLayer, BearerLayer, Claims, JwtSigner, JwtVerifier, SUBJECT};
use serde_json::json;
use tokio::sync::mpsc;

const SECRET: &[u8] = b"a test secret that is 32 bytes!!";
const TOPIC: &str = "orders.placed";

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

/// A service on `registry` whose events go through its own http broker, on loopback.
fn builder(name: &str, registry: &MemoryRegistry) -> ServiceBuilder {
    let shared: Arc<dyn micro::core::Registry> = Arc::new(registry.clone());
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(shared.clone())
        .transport(micro::plugins::transport("http").expect("the http transport"))
        .broker(micro::plugins::broker("http", Some("127.0.0.1:0"), &shared).expect("http broker"))
}

/// A token signed with `secret`, expiring at `exp`.
fn token(secret: &[u8], claims: serde_json::Value) -> String {
    JwtSigner::hs256(secret).sign(&claims).expect("sign")
}

fn in_an_hour() -> u64 {
    micro_wrapper_auth::jsonwebtoken::get_current_timestamp() + 3600
}

/// What the subscriber saw of one event: its number, the subject header and the claims.
#[derive(Debug, PartialEq)]
struct Seen {
    order: u64,
    subject: Option<String>,
    claims: Option<(String, Vec<String>)>,
}

/// A started publisher that attaches `token` (if any) to every message.
async fn publisher(name: &str, registry: &MemoryRegistry, token: Option<String>) -> Service {
    let mut b = builder(name, registry);
    if let Some(t) = token {
        b = b.publish_layer(BearerLayer::new(t));
    }
    let service = b.build().expect("build the publisher");
    service.start().await.expect("start the publisher");
    service
}

/// Publishes order `n` with a forged subject and scope in its headers.
async fn publish(from: &Service, n: u64) -> micro::Result<()> {
    let forged: Metadata = [
        ("Micro-Auth-Subject", "admin"),
        ("Micro-Auth-Scopes", "orders:write admin"),
        (
            "Micro-Auth-Claims",
            r#"{"subject":"admin","scopes":["admin"]}"#,
        ),
    ]
    .into_iter()
    .collect();
    within(
        "publish",
        from.client().publish_with(TOPIC, &Json(n), forged),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_events_with_a_good_token_reach_the_subscriber_with_their_claims() {
    let registry = MemoryRegistry::new();
    let (seen, mut delivered) = mpsc::unbounded_channel();
    let audit = builder("audit", &registry)
        .subscriber(TOPIC, move |e: Event<Json<u64>>| {
            let seen = seen.clone();
            Box::pin(async move {
                let _ = seen.send(Seen {
                    order: e.message.0,
                    subject: e.header.get(SUBJECT).map(str::to_string),
                    claims: Claims::from_metadata(&e.header).map(|c| (c.subject, c.scopes)),
                });
                Ok(())
            }) as micro::BoxFuture<'static, micro::Result<()>>
        })
        .subscriber_layer(
            AuthLayer::new(JwtVerifier::hs256(SECRET)).require_scope("orders.*", "orders:write"),
        )
        .build()
        .expect("build the subscriber");
    audit.start().await.expect("start the subscriber");

    let good = json!({"sub": "alice", "scope": "orders:write", "exp": in_an_hour()});
    let alice = publisher("alice", &registry, Some(token(SECRET, good.clone()))).await;
    let anonymous = publisher("anonymous", &registry, None).await;
    let forger = publisher(
        "forger",
        &registry,
        Some(token(b"not the secret the subscriber has!", good)),
    )
    .await;
    let late = json!({"sub": "carol", "scope": "orders:write", "exp": 1});
    let late = publisher("late", &registry, Some(token(SECRET, late))).await;
    let reader = json!({"sub": "bob", "scope": "orders:read", "exp": in_an_hour()});
    let reader = publisher("reader", &registry, Some(token(SECRET, reader))).await;

    publish(&alice, 1).await.expect("alice's token is good");
    // The http broker answers a publish once the subscriber path is done with it, so every
    // refusal below is complete when its publish returns, and so is each delivery.
    for (who, n, code) in [
        (&anonymous, 2, "401"),
        (&forger, 3, "401"),
        (&late, 4, "401"),
        (&reader, 5, "403"),
    ] {
        let e = publish(who, n).await.expect_err("refused");
        assert!(
            e.detail.contains(&format!("it answered {code}")),
            "order {n}: {e}"
        );
    }
    publish(&alice, 6).await.expect("alice's token is good");

    let alice_claims = Some(("alice".to_string(), vec!["orders:write".to_string()]));
    let mut got = Vec::new();
    while let Ok(s) = delivered.try_recv() {
        got.push(s);
    }
    assert_eq!(
        got,
        [1, 6].map(|order| Seen {
            order,
            subject: Some("alice".into()),
            claims: alice_claims.clone(),
        })
    );

    for s in [alice, anonymous, forger, late, reader, audit] {
        s.stop().await.expect("stop");
    }
}
