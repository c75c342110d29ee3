//! etcd specifics beyond the shared suite: Go Micro's entries both ways, entries written by
//! others, leases, outages and broken watches, TLS and authentication. Each test runs against
//! a private etcd (see `micro_registry_etcd::testing`) and skips, saying why, when etcd is not
//! installed and MICRO_TEST_REQUIRE_SERVICES is not set.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, KeyValue};
use futures_util::StreamExt;
use micro_conformance::registry::{eventually, sample, unique, PATIENCE};
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Registry, Service};
use micro_registry_etcd::testing::{EtcdCluster, EtcdServer, ServerTls};
use micro_registry_etcd::{EtcdOptions, EtcdRegistry, EtcdTls};
use serde_json::Value as Json;

const PREFIX: &str = "/micro/registry/";

/// The entry a Go Micro v4 `helloworld` service writes (INTEROP.md), byte for byte.
const GO_KEY: &str = "/micro/registry/helloworld/helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9";
const GO_VALUE: &str = r#"{"name":"helloworld","version":"latest","metadata":null,"endpoints":[{"request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":null}]},"response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":null}]},"metadata":{"description":"say hello"},"name":"Greeter.Hello"}],"nodes":[{"metadata":{"broker":"http","protocol":"mucp","registry":"etcd","server":"mucp","transport":"http"},"id":"helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9","address":"127.0.0.1:9090"}]}"#;

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

fn registry(etcd: &EtcdServer) -> EtcdRegistry {
    EtcdRegistry::new(etcd.options()).expect("registry")
}

/// A plain etcd client, to write and read keys behind the registry's back.
async fn raw(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect a raw etcd client")
}

async fn get_key(client: &mut Client, key: &str) -> Option<KeyValue> {
    let mut response = client.get(key, None).await.expect("raw get");
    response.take_kvs().into_iter().next()
}

/// The next event about `name`, failing after the suite's patience.
async fn next_event(w: &mut Watcher, name: &str) -> Event {
    loop {
        let item = tokio::time::timeout(PATIENCE, w.next())
            .await
            .unwrap_or_else(|_| panic!("no watch event for {name} within {PATIENCE:?}"))
            .expect("the watch ended early");
        match item {
            Ok(e) if e.service.name == name => return e,
            Ok(_) => continue,
            Err(e) => panic!("the watch failed: {e}"),
        }
    }
}

fn node_ids(services: &[Service]) -> Vec<String> {
    let mut ids: Vec<String> = services
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
        .collect();
    ids.sort();
    ids
}

fn keys_of(v: &Json) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_micro_entry_is_found_and_watched() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let mut w = r.watch(Some("helloworld")).await.expect("watch");

    client.put(GO_KEY, GO_VALUE, None).await.expect("raw put");
    let found = r.get_service("helloworld").await.expect("found");
    assert_eq!(found.len(), 1);
    let s = &found[0];
    assert_eq!(s.version, "latest");
    assert!(s.metadata.is_empty());
    assert_eq!(s.endpoints[0].name, "Greeter.Hello");
    assert_eq!(s.endpoints[0].metadata["description"], "say hello");
    let request = s.endpoints[0].request.as_ref().expect("request");
    assert_eq!(request.values[0].name, "name");
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(
        s.nodes[0].id,
        "helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9"
    );
    assert_eq!(s.nodes[0].address, "127.0.0.1:9090");
    assert_eq!(s.nodes[0].metadata["protocol"], "mucp");
    assert_eq!(s.nodes[0].metadata["registry"], "etcd");

    let created = next_event(&mut w, "helloworld").await;
    assert_eq!(created.kind, EventKind::Create);
    assert_eq!(created.service.nodes[0].address, "127.0.0.1:9090");

    let listed = r.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == "helloworld"), "{listed:?}");

    client.delete(GO_KEY, None).await.expect("raw delete");
    let deleted = next_event(&mut w, "helloworld").await;
    assert_eq!(deleted.kind, EventKind::Delete);
    // The value is gone with the key; the event still carries the node as it was.
    assert_eq!(deleted.service.version, "latest");
    assert_eq!(deleted.service.nodes[0].id, s.nodes[0].id);
    assert_eq!(deleted.service.nodes[0].address, "127.0.0.1:9090");
    let err = r.get_service("helloworld").await.expect_err("gone");
    assert_eq!(err.code, 404, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_entries_have_go_micro_shape() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("shape");
    let svc = sample(&name, "1.0.0", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register");

    let key = format!("{PREFIX}{name}/{name}-a");
    let kv = get_key(&mut client, &key).await.expect("our key");
    let ours: Json = serde_json::from_slice(kv.value()).expect("JSON");
    let go: Json = serde_json::from_str(GO_VALUE).expect("Go JSON");
    let top = ["endpoints", "metadata", "name", "nodes", "version"];
    assert_eq!(keys_of(&ours), top.map(String::from).into());
    assert_eq!(keys_of(&ours), keys_of(&go));
    let node = ["address", "id", "metadata"];
    assert_eq!(keys_of(&ours["nodes"][0]), node.map(String::from).into());
    assert_eq!(keys_of(&ours["nodes"][0]), keys_of(&go["nodes"][0]));
    assert_eq!(
        ours["nodes"].as_array().map(Vec::len),
        Some(1),
        "one node per key"
    );
    assert_eq!(keys_of(&ours["endpoints"][0]), keys_of(&go["endpoints"][0]));
    let (our_req, go_req) = (
        &ours["endpoints"][0]["request"],
        &go["endpoints"][0]["request"],
    );
    assert_eq!(keys_of(our_req), keys_of(go_req));
    assert_eq!(
        keys_of(&our_req["values"][0]),
        keys_of(&go_req["values"][0])
    );
    assert_eq!(
        our_req["values"][0]["values"],
        Json::Null,
        "empty values are null, as Go writes"
    );
    assert_eq!(ours["name"], name.as_str());
    assert_eq!(ours["nodes"][0]["address"], "127.0.0.1:40000");

    // The key hangs on a lease of the register TTL.
    assert_ne!(kv.lease(), 0, "the key has a lease");
    let lease = client
        .lease_time_to_live(kv.lease(), None)
        .await
        .expect("lease");
    assert_eq!(lease.granted_ttl(), 60);

    // A `/` inside the service name or node id becomes `-` in the key, as Go Micro writes it.
    let mut slashed = sample(&format!("team/{name}"), "latest", &[]);
    slashed.nodes = vec![micro_core::Node {
        id: "x/y".into(),
        address: "127.0.0.1:1".into(),
        ..Default::default()
    }];
    r.register(&slashed, ttl(60)).await.expect("register");
    assert!(get_key(&mut client, &format!("{PREFIX}team-{name}/x-y"))
        .await
        .is_some());
    let found = r.get_service(&format!("team/{name}")).await.expect("found");
    assert_eq!(found[0].name, format!("team/{name}"));
    assert_eq!(found[0].nodes[0].id, "x/y");

    r.deregister(&svc).await.expect("deregister");
    r.deregister(&slashed).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entries_are_skipped() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("corrupt");
    let good = sample(&name, "latest", &["ok"]);
    r.register(&good, ttl(60)).await.expect("register");
    let mut w = r.watch(Some(&name)).await.expect("watch");

    let node_json = |service: &str, id: &str| {
        format!(
            r#"{{"name":"{service}","version":"latest","nodes":[{{"id":"{id}","address":"h:1"}}]}}"#
        )
    };
    let garbage: Vec<(Vec<u8>, String)> = vec![
        (
            format!("{PREFIX}{name}/garbage").into(),
            "not json {".into(),
        ),
        (format!("{PREFIX}{name}/null").into(), "null".into()),
        (format!("{PREFIX}{name}/array").into(), "[1,2,3]".into()),
        (
            format!("{PREFIX}{name}/no-nodes").into(),
            format!(r#"{{"name":"{name}","nodes":[]}}"#),
        ),
        (
            format!("{PREFIX}{name}/null-nodes").into(),
            format!(r#"{{"name":"{name}","nodes":null}}"#),
        ),
        (
            format!("{PREFIX}{name}/someone").into(),
            node_json("someone-else", "someone"),
        ),
        (
            format!("{PREFIX}{name}/mismatch").into(),
            node_json(&name, "another-id"),
        ),
        (
            format!("{PREFIX}{name}/a/b").into(),
            node_json(&name, "a/b"),
        ),
        (format!("{PREFIX}{name}/").into(), node_json(&name, "")),
        (
            [format!("{PREFIX}{name}/").into_bytes(), vec![0xff, 0xfe]].concat(),
            node_json(&name, "x"),
        ),
        (format!("{PREFIX}{name}").into(), node_json(&name, "top")),
        (PREFIX.into(), "root".into()),
    ];
    for (key, value) in &garbage {
        client
            .put(key.clone(), value.clone(), None)
            .await
            .expect("raw put");
    }

    let found = r
        .get_service(&name)
        .await
        .expect("the valid node is still found");
    assert_eq!(node_ids(&found), [format!("{name}-ok")]);
    let listed = r.list_services().await.expect("list despite garbage");
    let mine: Vec<&Service> = listed.iter().filter(|s| s.name == name).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].nodes.len(), 1);

    // The garbage written after the watch started produced no event; a real node does.
    r.register(&sample(&name, "latest", &["ok2"]), ttl(60))
        .await
        .expect("register");
    let e = next_event(&mut w, &name).await;
    assert_eq!(
        (e.kind, e.service.nodes[0].id.as_str()),
        (EventKind::Create, format!("{name}-ok2").as_str())
    );

    // Deleting everything: deletes of garbage are skipped too, the real nodes reported.
    let mut end = format!("{PREFIX}{name}").into_bytes();
    end.push(0xff);
    client
        .delete(
            format!("{PREFIX}{name}"),
            Some(etcd_client::DeleteOptions::new().with_range(end)),
        )
        .await
        .expect("raw delete");
    client.delete(PREFIX, None).await.expect("raw delete");
    let mut gone = BTreeSet::new();
    while gone.len() < 2 {
        let e = next_event(&mut w, &name).await;
        assert_eq!(e.kind, EventKind::Delete, "{e:?}");
        gone.insert(e.service.nodes[0].id.clone());
    }
    assert_eq!(gone, [format!("{name}-ok"), format!("{name}-ok2")].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_removes_the_key() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("expiry");
    r.register(&sample(&name, "latest", &["a"]), ttl(2))
        .await
        .expect("register");
    let key = format!("{PREFIX}{name}/{name}-a");
    let kv = get_key(&mut client, &key)
        .await
        .expect("the key is written");
    let lease = client
        .lease_time_to_live(kv.lease(), None)
        .await
        .expect("lease");
    assert_eq!(lease.granted_ttl(), 2);
    eventually("the key is deleted when its 2 s lease expires", || {
        let mut client = client.clone();
        let key = key.clone();
        async move { get_key(&mut client, &key).await.is_none().then_some(()) }
    })
    .await;
    assert_eq!(r.get_service(&name).await.expect_err("gone").code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_deletes_the_key_at_once() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("dereg");
    let svc = sample(&name, "latest", &["a", "b"]);
    r.register(&svc, ttl(60)).await.expect("register");
    let key = format!("{PREFIX}{name}/{name}-a");
    let lease = get_key(&mut client, &key).await.expect("written").lease();

    r.deregister(&svc).await.expect("deregister");
    let mut left = client
        .get(
            format!("{PREFIX}{name}/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .expect("raw get");
    assert!(
        left.take_kvs().is_empty(),
        "no key left right after deregister"
    );
    let ttl_left = client.lease_time_to_live(lease, None).await.expect("lease");
    assert_eq!(ttl_left.ttl(), -1, "the lease is revoked");
    // Again, and for a node never registered: no error.
    r.deregister(&svc).await.expect("deregister again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_renews_the_lease_and_writes_only_changes() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("renew");
    let mut svc = sample(&name, "latest", &["a"]);
    let key = format!("{PREFIX}{name}/{name}-a");
    r.register(&svc, ttl(6)).await.expect("register");
    let first = get_key(&mut client, &key).await.expect("written");
    let mut w = r.watch(Some(&name)).await.expect("watch");

    // Let the lease run down a little, so that renewing it shows.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = client
        .lease_time_to_live(first.lease(), None)
        .await
        .expect("lease")
        .ttl();
    r.register(&svc, ttl(6)).await.expect("register again");
    let after = client
        .lease_time_to_live(first.lease(), None)
        .await
        .expect("lease")
        .ttl();
    assert!(
        after > before,
        "the lease was renewed: {before} s left before, {after} s after"
    );
    let second = get_key(&mut client, &key).await.expect("still there");
    assert_eq!(
        second.mod_revision(),
        first.mod_revision(),
        "an unchanged entry is not rewritten"
    );
    assert_eq!(second.lease(), first.lease(), "the same lease");

    svc.nodes[0].metadata.insert("zone".into(), "z9".into());
    r.register(&svc, ttl(6)).await.expect("register a change");
    let third = get_key(&mut client, &key).await.expect("still there");
    assert!(
        third.mod_revision() > first.mod_revision(),
        "a changed entry is written"
    );
    assert_eq!(third.lease(), first.lease(), "on the same lease");
    // The watch saw no update for the unchanged registration: the first event is the change.
    let e = next_event(&mut w, &name).await;
    assert_eq!(e.kind, EventKind::Update);
    assert_eq!(e.service.nodes[0].metadata["zone"], "z9");

    // A different TTL gets a lease of its own.
    r.register(&svc, ttl(30))
        .await
        .expect("register with another TTL");
    let fourth = get_key(&mut client, &key).await.expect("still there");
    assert_ne!(fourth.lease(), first.lease());
    let granted = client
        .lease_time_to_live(fourth.lease(), None)
        .await
        .expect("lease");
    assert_eq!(granted.granted_ttl(), 30);
    r.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_or_key_is_written_again() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let r = registry(etcd);
    let mut client = raw(etcd).await;
    let name = unique("lost");
    let svc = sample(&name, "latest", &["a"]);
    let key = format!("{PREFIX}{name}/{name}-a");
    r.register(&svc, ttl(60)).await.expect("register");
    let first = get_key(&mut client, &key).await.expect("written");

    // The lease vanishes (as after its expiry, or an etcd that lost its data): a new one.
    client
        .lease_revoke(first.lease())
        .await
        .expect("raw revoke");
    assert!(get_key(&mut client, &key).await.is_none());
    r.register(&svc, ttl(60)).await.expect("register again");
    let second = get_key(&mut client, &key).await.expect("written again");
    assert_ne!(second.lease(), first.lease(), "a new lease");

    // Someone deletes the key while the lease lives: the next registration restores it.
    client.delete(key.as_str(), None).await.expect("raw delete");
    r.register(&svc, ttl(60)).await.expect("register again");
    let third = get_key(&mut client, &key).await.expect("restored");
    assert_eq!(third.lease(), second.lease());
    assert_eq!(
        node_ids(&r.get_service(&name).await.expect("found")),
        [format!("{name}-a")]
    );
    r.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_breaks_watches_and_heals() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let r = registry(&etcd);
    let name = unique("outage");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register");
    let mut w = r.watch(None).await.expect("watch");

    etcd.stop();
    let named = format!("etcd at {}", etcd.endpoint());
    // The watch reports the broken stream (once), and does not hang.
    let item = tokio::time::timeout(PATIENCE, w.next())
        .await
        .expect("a broken watch must say so, not hang")
        .expect("the watch goes on after its error");
    let err = item.expect_err("the watch broke");
    assert!(err.to_string().contains(&named), "{err}");
    assert!(err.to_string().contains("watching again"), "{err}");

    // Every operation fails within its timeout, with a 503 that names etcd.
    let bound =
        etcd.options().request_timeout + etcd.options().dial_timeout + Duration::from_secs(2);
    let started = Instant::now();
    let results = [
        r.get_service(&name).await.map(|_| ()),
        r.list_services().await.map(|_| ()),
        r.register(&svc, ttl(60)).await,
        r.deregister(&svc).await,
        r.watch(Some(&name)).await.map(|_| ()),
    ];
    for result in results {
        let err = result.expect_err("etcd is down");
        assert_eq!(err.code, 503, "{err}");
        assert!(err.to_string().contains(&named), "{err}");
    }
    assert!(
        started.elapsed() < bound * 5,
        "took {:?}",
        started.elapsed()
    );

    // A registry can be made while etcd is down, and works once it is back.
    let late = registry(&etcd);
    etcd.restart().expect("restart etcd");
    eventually("registering works after the restart", || async {
        late.register(&svc, ttl(60)).await.ok()
    })
    .await;
    let found = r
        .get_service(&name)
        .await
        .expect("the first registry works again");
    assert_eq!(node_ids(&found), [format!("{name}-a")]);
    // The watch etcd ended was opened again by itself: it reports the write made after the
    // restart (on a new lease), with no further error.
    let event = next_event(&mut w, &name).await;
    assert_eq!(event.kind, EventKind::Update, "{event:?}");
    assert_eq!(node_ids(&[event.service]), [format!("{name}-a")]);
    r.deregister(&svc).await.expect("deregister");
    let event = next_event(&mut w, &name).await;
    assert_eq!(event.kind, EventKind::Delete, "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_several_pages_reads_whole_within_its_bound() {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let name = unique("paged");
    let ids = ["a", "b", "c", "d", "e"];
    let svc = sample(&name, "latest", &ids);
    // Pages of two keys: five nodes take three range requests.
    let r = EtcdRegistry::new(etcd.options().with_read_page(2)).expect("registry");
    r.register(&svc, ttl(60)).await.expect("register");
    let all: Vec<String> = ids.iter().map(|id| format!("{name}-{id}")).collect();
    assert_eq!(node_ids(&r.get_service(&name).await.expect("lookup")), all);
    let listed = r.list_services().await.expect("list");
    assert!(listed.iter().any(|s| s.name == name), "{listed:?}");

    // A bound of exactly three entries' bytes: the first three nodes, and a warning.
    let mut client = raw(etcd).await;
    let prefix = format!("{PREFIX}{name}/");
    let mut response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("raw read");
    let kvs = response.take_kvs();
    assert_eq!(kvs.len(), 5);
    let three: usize = kvs[..3]
        .iter()
        .map(|kv| kv.key().len() + kv.value().len())
        .sum();
    let bounded = EtcdRegistry::new(etcd.options().with_read_page(2).with_max_read_bytes(three))
        .expect("registry");
    let found = bounded.get_service(&name).await.expect("bounded lookup");
    assert_eq!(node_ids(&found), all[..3]);
    r.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_larger_than_one_answer_reads_whole() {
    // A private etcd: watches of the shared one must not be sent these entries.
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let r = registry(&etcd);
    let name = unique("large");
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut svc = sample(&name, "latest", &ids);
    // Eight entries of 600 KiB: one answer holding them all would be over the client's 4 MiB
    // (and one registration, comparing and writing the value, stays under etcd's 1.5 MiB).
    for node in &mut svc.nodes {
        node.metadata.insert("blob".into(), "x".repeat(600 << 10));
    }
    r.register(&svc, ttl(60)).await.expect("register");
    let found = r.get_service(&name).await.expect("a lookup of 4.8 MiB");
    let all: Vec<String> = ids.iter().map(|id| format!("{name}-{id}")).collect();
    assert_eq!(node_ids(&found), all);
    assert!(found[0]
        .nodes
        .iter()
        .all(|n| n.metadata["blob"].len() == 600 << 10));
    let listed = r.list_services().await.expect("a listing of 4.8 MiB");
    assert_eq!(listed.len(), 1, "{listed:?}");
    r.deregister(&svc).await.expect("deregister");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
struct Certs {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "micro test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
            "localhost".into(),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        "etcd",
    );
    let (client_pem, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "micro");
    Certs {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_pem),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_pem),
        client_key: write("client.key", client_key),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    if EtcdServer::binary().is_none() {
        // Says why, or fails when etcd is required.
        assert!(EtcdServer::start_or_skip().is_none());
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let etcd = EtcdServer::start_tls(ServerTls {
        cert_file: certs.server_cert.clone(),
        key_file: certs.server_key.clone(),
        client_ca_file: Some(certs.ca.clone()),
    })
    .expect("start etcd with TLS");
    assert!(etcd.endpoint().starts_with("https://"));

    let tls = EtcdTls::with_ca(&certs.ca).with_client_cert(&certs.client_cert, &certs.client_key);
    let r = EtcdRegistry::new(etcd.options().with_tls(tls.clone())).expect("registry");
    let name = unique("tls");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register over TLS");
    let found = r.get_service(&name).await.expect("found over TLS");
    assert_eq!(node_ids(&found), [format!("{name}-a")]);

    // host:port endpoints use TLS when it is configured.
    let bare = EtcdOptions::from_address(&etcd.address())
        .with_tls(tls.clone())
        .with_request_timeout(Duration::from_secs(3));
    let bare = EtcdRegistry::new(bare).expect("registry");
    assert_eq!(
        node_ids(&bare.get_service(&name).await.expect("found")),
        [format!("{name}-a")]
    );

    // No client certificate: etcd refuses; the error names it. (With TLS 1.3 the client may
    // see the refusal as an alert or as a closed connection, so only the name is checked.)
    let anonymous =
        EtcdRegistry::new(etcd.options().with_tls(EtcdTls::with_ca(&certs.ca))).expect("registry");
    let err = anonymous
        .get_service(&name)
        .await
        .expect_err("no client certificate");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    assert_eq!(err.code, 503, "{err}");
    // The server's certificate is not trusted without our CA.
    let untrusting = EtcdRegistry::new(
        etcd.options()
            .with_tls(EtcdTls::default().with_client_cert(&certs.client_cert, &certs.client_key)),
    )
    .expect("registry");
    let err = untrusting.get_service(&name).await.expect_err("unknown CA");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    assert!(err.detail.contains("UnknownIssuer"), "{err}");
    assert!(err.detail.contains("MICRO_ETCD_TLS"), "{err}");

    r.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let mut admin = raw(&etcd).await;
    admin
        .user_add("root", "root-pw", None)
        .await
        .expect("add root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin
        .user_add("micro", "micro-pw", None)
        .await
        .expect("add user");
    admin.role_add("registry").await.expect("add role");
    admin
        .role_grant_permission(
            "registry",
            etcd_client::Permission::read_write(PREFIX).with_prefix(),
        )
        .await
        .expect("grant the registry prefix");
    admin
        .user_grant_role("micro", "registry")
        .await
        .expect("grant role");
    admin.auth_enable().await.expect("enable auth");

    let r = EtcdRegistry::new(etcd.options().with_user("micro", "micro-pw")).expect("registry");
    let name = unique("auth");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register as micro");
    assert_eq!(
        node_ids(&r.get_service(&name).await.expect("found")),
        [format!("{name}-a")]
    );
    let mut w = r.watch(Some(&name)).await.expect("watch as micro");
    r.deregister(&svc).await.expect("deregister as micro");
    assert_eq!(next_event(&mut w, &name).await.kind, EventKind::Delete);

    let wrong = EtcdRegistry::new(etcd.options().with_user("micro", "nope")).expect("registry");
    let err = wrong.get_service(&name).await.expect_err("wrong password");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    assert_eq!(err.code, 401, "{err}");
    assert!(err.detail.contains("MICRO_ETCD_PASSWORD"), "{err}");
    let nobody = registry(&etcd);
    let err = nobody.register(&svc, ttl(60)).await.expect_err("no user");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    assert_eq!(err.code, 401, "{err}");
}

/// The `Done when` of the etcd issue, as an operator would do it: the Go Micro entry written
/// with the `etcdctl` command line is found by our client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_micro_entry_put_with_etcdctl_is_found() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let put = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint(), "put", GO_KEY, GO_VALUE])
        .output();
    let put = match put {
        Ok(out) => out,
        Err(e) if !micro_registry_etcd::testing::services_required() => {
            eprintln!("SKIPPED: etcdctl not found ({e}); apt-get install etcd-client");
            return;
        }
        Err(e) => panic!("etcdctl not found ({e}); apt-get install etcd-client"),
    };
    assert!(
        put.status.success(),
        "etcdctl put: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let found = registry(&etcd)
        .get_service("helloworld")
        .await
        .expect("found");
    assert_eq!(
        found[0].nodes[0].id,
        "helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9"
    );
    assert_eq!(found[0].nodes[0].address, "127.0.0.1:9090");
    assert_eq!(found[0].endpoints[0].name, "Greeter.Hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_loses_its_leader_ends_its_watches_and_refuses_at_once() {
    let Some(cluster) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let [m0, m1, m2] = cluster.members() else {
        panic!("three members");
    };
    // The registry talks to one member only, as a client whose member is cut off does.
    let r = registry(m0);
    let name = unique("leader");
    r.register(&sample(&name, "latest", &["a"]), ttl(60))
        .await
        .expect("register");
    let mut w = r.watch(Some(&name)).await.expect("watch");

    // Two of three gone: the member left has no quorum, so no leader. Without requiring one,
    // its watch would stay open and silent, and reads would be served from its stale copy.
    m1.stop();
    m2.stop();
    let item = tokio::time::timeout(PATIENCE, w.next())
        .await
        .expect("a watch on a member without a leader must say so, not go silent")
        .expect("the watch goes on after its error");
    let err = item.expect_err("the member has no leader");
    assert!(err.to_string().contains("watching again"), "{err}");
    let refused = r
        .get_service(&name)
        .await
        .expect_err("no leader, no answer");
    assert_eq!(refused.code, 503, "{refused}");

    // A quorum again: the watch opens again by itself and reports what changes from then on.
    m1.restart().expect("restart a second member");
    let again = sample(&name, "latest", &["b"]);
    eventually("registering once there is a leader again", || async {
        r.register(&again, ttl(60)).await.ok()
    })
    .await;
    let event = next_event(&mut w, &name).await;
    assert_eq!(event.kind, EventKind::Create, "a new node's key: {event:?}");
    assert_eq!(node_ids(&[event.service]), [format!("{name}-b")]);
}
