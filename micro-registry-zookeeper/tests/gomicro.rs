//! Go Micro's ZooKeeper layout, written and read by hand with the raw client: a Go Micro node
//! is seen through our registry, ours sits where Go Micro looks, a session that ends takes its
//! nodes along, and nodes that are not service nodes are skipped, never trusted.

use std::time::Duration;

use futures_util::StreamExt;
use micro_conformance::registry::{eventually, sample, unique, PATIENCE};
use micro_core::registry::{EventKind, RegisterOptions};
use micro_core::{Registry, Service};
use micro_registry_zookeeper::testing::ZookeeperServer;
use micro_registry_zookeeper::ZookeeperRegistry;
use zookeeper_client::{Acls, Client, CreateMode};

/// A node as Go Micro v4 writes it (INTEROP.md's etcd value; the same JSON in ZooKeeper).
fn go_service(name: &str, id: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":"latest","metadata":null,"endpoints":[{{"request":{{"name":"Request","type":"Request","values":[{{"name":"name","type":"string","values":null}}]}},"response":{{"name":"Response","type":"Response","values":[{{"name":"msg","type":"string","values":null}}]}},"metadata":{{"description":"say hello"}},"name":"Greeter.Hello"}}],"nodes":[{{"metadata":{{"broker":"http","protocol":"mucp","registry":"zookeeper","server":"mucp","transport":"http"}},"id":"{id}","address":"127.0.0.1:9090"}}]}}"#
    )
}

async fn raw(zk: &ZookeeperServer) -> Client {
    Client::connect(&zk.address())
        .await
        .expect("raw ZooKeeper client")
}

/// Creates `path` persistent with `data`, its parents too, as Go Micro's createPath does.
async fn go_create(client: &Client, path: &str, data: &[u8]) {
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    if let Some((parent, _)) = path.rsplit_once('/') {
        client.mkdir(parent, &persistent).await.expect("mkdir");
    }
    client
        .create(path, data, &persistent)
        .await
        .expect("create");
}

fn ttl() -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_nodes_are_seen_and_ours_are_where_go_micro_looks() {
    let Some(zk) = ZookeeperServer::shared() else {
        return;
    };
    let client = raw(zk).await;
    let registry = ZookeeperRegistry::new(zk.options()).expect("registry");

    let go_name = unique("go-greeter");
    let go_id = format!("{go_name}-41d122df-e93b-4a05-bd85-e4215f8bb8c9");
    let go_path = format!("/micro-registry/{go_name}/{go_id}");
    go_create(&client, &go_path, go_service(&go_name, &go_id).as_bytes()).await;
    let found = registry.get_service(&go_name).await.expect("found");
    assert_eq!(found[0].version, "latest");
    assert_eq!(found[0].nodes[0].id, go_id);
    assert_eq!(found[0].nodes[0].metadata["protocol"], "mucp");
    assert_eq!(found[0].endpoints[0].name, "Greeter.Hello");
    let listed = registry.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == go_name));

    let name = unique("rust-greeter");
    let service = sample(&name, "1.0.0", &["a"]);
    registry.register(&service, ttl()).await.expect("register");
    let dir = format!("/micro-registry/{name}");
    let children = client
        .list_children(&dir)
        .await
        .expect("Go Micro's directory");
    assert_eq!(children, [format!("{name}-a")]);
    let (data, stat) = client
        .get_data(&format!("{dir}/{name}-a"))
        .await
        .expect("Go Micro's node path");
    let stored: Service = serde_json::from_slice(&data).expect("the service's JSON");
    assert_eq!(stored, service, "the service with its one node");
    assert_ne!(
        stat.ephemeral_owner, 0,
        "ephemeral: it lives with the session"
    );
    let json: serde_json::Value = serde_json::from_slice(&data).expect("json");
    assert_eq!(json["nodes"][0]["id"], format!("{name}-a"));
    assert_eq!(
        json["endpoints"][0]["request"]["values"][0]["values"],
        serde_json::Value::Null
    );

    // Registering the same node again writes nothing.
    registry.register(&service, ttl()).await.expect("again");
    let (_, again) = client
        .get_data(&format!("{dir}/{name}-a"))
        .await
        .expect("node");
    assert_eq!(again.version, stat.version);

    registry.deregister(&service).await.expect("deregister");
    assert!(client.list_children(&dir).await.expect("dir").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_takes_its_nodes() {
    let Some(zk) = ZookeeperServer::shared() else {
        return;
    };
    let name = unique("session");
    let observer = ZookeeperRegistry::new(zk.options()).expect("registry");
    {
        let owner = ZookeeperRegistry::new(zk.options()).expect("registry");
        owner
            .register(&sample(&name, "1", &["a"]), ttl())
            .await
            .expect("register");
        assert_eq!(
            observer.get_service(&name).await.expect("found")[0]
                .nodes
                .len(),
            1
        );
    } // the owner's client (and so its session) is gone
    eventually("the dead session's node is gone", || async {
        observer
            .get_service(&name)
            .await
            .err()
            .filter(|e| e.code == 404)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_service_node_is_skipped() {
    let Some(zk) = ZookeeperServer::shared() else {
        return;
    };
    let client = raw(zk).await;
    let mut opts = zk.options();
    opts.max_node_bytes = 4096;
    let registry = ZookeeperRegistry::new(opts).expect("registry");
    let name = unique("bad-nodes");
    let mut watch = registry.watch(Some(&name)).await.expect("watch");
    let dir = format!("/micro-registry/{name}");
    let big = format!(
        r#"{{"name":"{name}","metadata":{{"x":"{}"}},"nodes":[{{"id":"big"}}]}}"#,
        "a".repeat(5000)
    );
    let bad: Vec<(String, Vec<u8>)> = vec![
        (format!("{dir}/garbage"), b"not json".to_vec()),
        (format!("{dir}/empty"), Vec::new()),
        (format!("{dir}/list"), b"[1,2,3]".to_vec()),
        (
            format!("{dir}/other"),
            go_service("someone-else", "other").into_bytes(),
        ),
        (
            format!("{dir}/mismatch"),
            go_service(&name, "not-mismatch").into_bytes(),
        ),
        (format!("{dir}/big"), big.into_bytes()),
        (
            format!("{dir}/parent"),
            go_service(&name, "parent").into_bytes(),
        ),
    ];
    for (path, data) in &bad {
        go_create(&client, path, data).await;
    }
    go_create(&client, &format!("{dir}/parent/child"), b"x").await;
    go_create(
        &client,
        &format!("{dir}/good"),
        go_service(&name, "good").as_bytes(),
    )
    .await;

    let found = registry.get_service(&name).await.expect("the good node");
    let ids: Vec<&str> = found
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.as_str()))
        .collect();
    assert_eq!(ids, ["good"]);
    registry
        .list_services()
        .await
        .expect("a listing despite bad nodes");

    // The watch reported only the good node's creation (the "parent" node is a valid entry
    // when it is created, before its child exists, so it may come first).
    loop {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("an event")
            .expect("the watch goes on")
            .expect("no error");
        assert_eq!(event.kind, EventKind::Create);
        match event.service.nodes[0].id.as_str() {
            "parent" => continue,
            id => {
                assert_eq!(id, "good");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_changes_reach_a_watch() {
    let Some(zk) = ZookeeperServer::shared() else {
        return;
    };
    let client = raw(zk).await;
    let registry = ZookeeperRegistry::new(zk.options()).expect("registry");
    let name = unique("go-watched");
    let mut watch = registry.watch(None).await.expect("watch");
    let path = format!("/micro-registry/{name}/{name}-1");
    // ZooKeeper's events carry no data: the watch reads each node when told it changed, so
    // each change waits for its event here (a node changed twice before it is read shows its
    // last state once).
    go_create(
        &client,
        &path,
        go_service(&name, &format!("{name}-1")).as_bytes(),
    )
    .await;
    assert_eq!(
        next(&mut watch, &name).await,
        (EventKind::Create, "127.0.0.1:9090".to_string())
    );
    let moved = go_service(&name, &format!("{name}-1")).replace("127.0.0.1:9090", "127.0.0.1:9191");
    client
        .set_data(&path, moved.as_bytes(), None)
        .await
        .expect("set");
    assert_eq!(
        next(&mut watch, &name).await,
        (EventKind::Update, "127.0.0.1:9191".to_string())
    );
    client.delete(&path, None).await.expect("delete");
    // The delete says which node went, with what the watch last read of it.
    assert_eq!(
        next(&mut watch, &name).await,
        (EventKind::Delete, "127.0.0.1:9191".to_string())
    );
}

async fn next(watch: &mut micro_core::registry::Watcher, name: &str) -> (EventKind, String) {
    loop {
        let event = tokio::time::timeout(PATIENCE, watch.next())
            .await
            .expect("an event")
            .expect("the watch goes on")
            .expect("no error");
        if event.service.name == name {
            return (event.kind, event.service.nodes[0].address.clone());
        }
    }
}
