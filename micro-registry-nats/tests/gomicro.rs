//! Go Micro's NATS registry protocol, spoken by hand with a raw async-nats client: a Go
//! Micro-shaped node answering lookups is found through our registry, ours answer Go Micro's
//! lookups, announcements go both ways, and bad peers are skipped, never trusted.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use micro_conformance::registry::{eventually, sample, unique, PATIENCE};
use micro_core::registry::{EventKind, RegisterOptions};
use micro_core::{Registry, Service};
use micro_registry_nats::{NatsRegistry, NatsRegistryOptions};
use tokio::task::JoinHandle;

/// A node as Go Micro v4 registers it (INTEROP.md's etcd value, same JSON on NATS).
fn go_service(name: &str, id: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":"latest","metadata":null,"endpoints":[{{"request":{{"name":"Request","type":"Request","values":[{{"name":"name","type":"string","values":null}}]}},"response":{{"name":"Response","type":"Response","values":[{{"name":"msg","type":"string","values":null}}]}},"metadata":{{"description":"say hello"}},"name":"Greeter.Hello"}}],"nodes":[{{"metadata":{{"broker":"http","protocol":"mucp","registry":"nats","server":"mucp","transport":"http"}},"id":"{id}","address":"127.0.0.1:9090"}}]}}"#
    )
}

async fn raw(address: &str) -> async_nats::Client {
    async_nats::connect(address).await.expect("raw NATS client")
}

/// Waits until the server has what `client` sent before.
async fn sync(client: &async_nats::Client) {
    client.flush().await.expect("flush");
    let _ = client
        .request(format!("_TEST.SYNC.{}", unique("s")), "".into())
        .await;
}

/// A peer on `subject` that answers every query with `answers(query JSON)`.
async fn peer(
    client: &async_nats::Client,
    subject: &str,
    answers: impl Fn(&serde_json::Value) -> Vec<Vec<u8>> + Send + 'static,
) -> JoinHandle<()> {
    let mut queries = client.subscribe(subject.to_string()).await.expect("sub");
    sync(client).await;
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(msg) = queries.next().await {
            let Some(reply) = msg.reply else { continue };
            let query: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            for answer in answers(&query) {
                let _ = client.publish(reply.clone(), answer.into()).await;
            }
        }
    })
}

fn ttl() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn a_go_micro_node_is_found_and_queried_as_go_does() {
    let Some(address) = common::nats_address() else {
        return;
    };
    let opts = common::private_options(&address);
    let name = unique("go-greeter");
    let id = format!("{name}-41d122df-e93b-4a05-bd85-e4215f8bb8c9");
    let client = raw(&address).await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let go = {
        let (name, id) = (name.clone(), id.clone());
        peer(&client, &opts.query_subject, move |q| {
            let _ = seen_tx.send(q.clone());
            let asks_for_us = q["Action"] == "list"
                || (q["Action"] == "get" && q["Service"]["name"] == name.as_str());
            if asks_for_us {
                vec![go_service(&name, &id).into_bytes()]
            } else {
                vec![]
            }
        })
        .await
    };

    let registry = NatsRegistry::new(opts).expect("registry");
    let found = registry.get_service(&name).await.expect("found");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].version, "latest");
    assert_eq!(found[0].nodes[0].id, id);
    assert_eq!(found[0].nodes[0].metadata["protocol"], "mucp");
    assert_eq!(found[0].endpoints[0].name, "Greeter.Hello");

    // The query is Go Micro's registry.Result, capitalised keys and all.
    let get = seen.recv().await.expect("the get query");
    assert_eq!(get["Action"], "get");
    assert_eq!(get["Service"]["name"], name.as_str());

    let listed = registry.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name), "{listed:?}");
    let list = seen.recv().await.expect("the list query");
    assert_eq!(list, serde_json::json!({"Action":"list","Service":null}));
    go.abort();
}

#[tokio::test]
async fn ours_answer_go_micro_lookups_and_announce_to_go_watchers() {
    let Some(address) = common::nats_address() else {
        return;
    };
    let opts = common::private_options(&address);
    let client = raw(&address).await;
    let mut announcements = client
        .subscribe(opts.watch_subject.clone())
        .await
        .expect("sub");
    sync(&client).await;

    let registry = NatsRegistry::new(opts.clone()).expect("registry");
    let name = unique("rust-greeter");
    let service = sample(&name, "1.0.0", &["a"]);
    registry.register(&service, ttl()).await.expect("register");

    let created = tokio::time::timeout(PATIENCE, announcements.next())
        .await
        .expect("an announcement")
        .expect("subscription open");
    let created: serde_json::Value = serde_json::from_slice(&created.payload).expect("json");
    assert_eq!(created["Action"], "create");
    assert_eq!(created["Service"]["name"], name.as_str());
    assert_eq!(created["Service"]["nodes"][0]["id"], format!("{name}-a"));

    // Exactly what Go Micro's query() publishes.
    let go_get = format!(
        r#"{{"Action":"get","Service":{{"name":"{name}","version":"","metadata":null,"endpoints":null,"nodes":null}}}}"#
    );
    let answer = client
        .request(opts.query_subject.clone(), go_get.into())
        .await
        .expect("an answer");
    let answered: Service = serde_json::from_slice(&answer.payload).expect("service JSON");
    assert_eq!(answered.name, name);
    assert_eq!(answered.version, "1.0.0");
    assert_eq!(answered.nodes, service.nodes);
    assert_eq!(answered.endpoints, service.endpoints);
    let raw_answer: serde_json::Value = serde_json::from_slice(&answer.payload).expect("json");
    assert_eq!(raw_answer["nodes"][0]["address"], "127.0.0.1:40000");

    // A malformed query is ignored, and the next one is still answered.
    client
        .publish_with_reply(
            opts.query_subject.clone(),
            client.new_inbox(),
            "{not json".into(),
        )
        .await
        .expect("publish");
    let answer = client
        .request(
            opts.query_subject.clone(),
            r#"{"Action":"list","Service":null}"#.into(),
        )
        .await
        .expect("an answer to list");
    let listed: Service = serde_json::from_slice(&answer.payload).expect("service JSON");
    assert_eq!(listed.name, name);

    registry.deregister(&service).await.expect("deregister");
    let deleted = tokio::time::timeout(PATIENCE, announcements.next())
        .await
        .expect("an announcement")
        .expect("subscription open");
    let deleted: serde_json::Value = serde_json::from_slice(&deleted.payload).expect("json");
    assert_eq!(deleted["Action"], "delete");
    assert_eq!(deleted["Service"]["nodes"][0]["id"], format!("{name}-a"));
}

#[tokio::test]
async fn go_micro_announcements_reach_a_watch_and_garbage_does_not() {
    let Some(address) = common::nats_address() else {
        return;
    };
    let mut opts = common::private_options(&address);
    opts.max_message_bytes = 4096;
    let registry = NatsRegistry::new(opts.clone()).expect("registry");
    let name = unique("go-watched");
    let mut watch = registry.watch(Some(&name)).await.expect("watch");

    let client = raw(&address).await;
    let big = format!(
        r#"{{"Action":"create","Service":{{"name":"{name}","metadata":{{"x":"{}"}}}}}}"#,
        "a".repeat(5000)
    );
    let node = go_service(&name, "go-1");
    let junk: Vec<String> = vec![
        "not json".into(),
        "[]".into(),
        r#"{"Action":"create"}"#.into(),
        format!(r#"{{"Action":"override","Service":{node}}}"#),
        format!(
            r#"{{"Action":"create","Service":{}}}"#,
            go_service("other", "o-1")
        ),
        big,
    ];
    for payload in junk {
        client
            .publish(opts.watch_subject.clone(), payload.into())
            .await
            .expect("publish");
    }
    for action in ["create", "delete"] {
        client
            .publish(
                opts.watch_subject.clone(),
                format!(r#"{{"Action":"{action}","Service":{node}}}"#).into(),
            )
            .await
            .expect("publish");
    }
    for want in [EventKind::Create, EventKind::Delete] {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("an event")
            .expect("the watch goes on")
            .expect("no error");
        assert_eq!(event.kind, want);
        assert_eq!(event.service.name, name);
        assert_eq!(event.service.nodes[0].id, "go-1");
    }
}

#[tokio::test]
async fn bad_answers_are_skipped_and_answers_are_bounded() {
    let Some(address) = common::nats_address() else {
        return;
    };
    let mut opts: NatsRegistryOptions = common::private_options(&address);
    opts.max_message_bytes = 4096;
    let name = unique("bad-peers");
    let client = raw(&address).await;
    let bad = {
        let name = name.clone();
        peer(&client, &opts.query_subject, move |_| {
            vec![
                b"not json".to_vec(),
                b"{\"name\":".to_vec(),
                br#"{"name":""}"#.to_vec(),
                br#"{"name":"x","nodes":"many"}"#.to_vec(),
                go_service("someone-else", "e-1").into_bytes(),
                format!(
                    r#"{{"name":"{name}","metadata":{{"x":"{}"}}}}"#,
                    "a".repeat(5000)
                )
                .into_bytes(),
                go_service(&name, "good-1").into_bytes(),
            ]
        })
        .await
    };
    let registry = NatsRegistry::new(opts.clone()).expect("registry");
    let found = registry.get_service(&name).await.expect("the good answer");
    let ids: Vec<&str> = found
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.as_str()))
        .collect();
    assert_eq!(ids, ["good-1"]);
    bad.abort();

    // A flood: 200 answers, each a node of its own; a lookup reads only max_answers of them
    // and still ends by the query timeout.
    let flood_name = unique("flood");
    let flood = {
        let name = flood_name.clone();
        peer(&client, &opts.query_subject, move |_| {
            (0..200)
                .map(|i| go_service(&name, &format!("n{i}")).into_bytes())
                .collect()
        })
        .await
    };
    opts.max_answers = 5;
    opts.query_timeout = Duration::from_secs(2);
    let bounded = NatsRegistry::new(opts).expect("registry");
    let found = eventually("the flood answers", || async {
        bounded.get_service(&flood_name).await.ok()
    })
    .await;
    let nodes: usize = found.iter().map(|s| s.nodes.len()).sum();
    assert!((1..=5).contains(&nodes), "{nodes} nodes from a flood");
    flood.abort();
}
