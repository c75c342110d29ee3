//! Service discovery: the [`Registry`] trait and Go Micro's data model.
//!
//! [`Service`], [`Node`], [`Endpoint`] and [`Value`] serialise to exactly the JSON Go Micro
//! writes into its registries, and read it back, including `null` where Go writes a nil map or
//! slice.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{BoxStream, Result};

/// A service: one name and version, the endpoints it serves and the nodes that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Service {
    /// The service name, `greeter`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The version, Go Micro's default is `latest`.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// Service-wide metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, String>,
    /// The RPC endpoints (and subscribers) the service offers.
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<Endpoint>,
    /// The running instances.
    #[serde(default, deserialize_with = "null_default")]
    pub nodes: Vec<Node>,
}

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Node {
    /// `<service>-<uuid>`.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// `host:port` to dial.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// Which broker, registry, server, transport and `protocol` the node uses.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, String>,
}

/// An RPC endpoint (`Greeter.Hello`) or a subscriber, with a description of its messages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// `Type.Method`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The request message.
    #[serde(default)]
    pub request: Option<Value>,
    /// The response message.
    #[serde(default)]
    pub response: Option<Value>,
    /// `{"stream":"true"}` for streams; `{"topic":..,"subscriber":"true"}` for subscribers.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: BTreeMap<String, String>,
}

/// The shape of a message: a name, a type and its fields, as Go Micro registers it.
///
/// Fields of message types carry that message's fields in `values` (as deep as the service
/// describes them; Go Micro stops at three levels). Services built with `micro-build` also
/// describe enums and oneofs, in ways Go Micro's tools read as plain fields: an enum field's
/// `values` are its values, each `{name: "VALUE", type: "enum"}`, and the fields of a `oneof`
/// are grouped under `{name: <oneof>, type: "oneof", values: [..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Value {
    /// The field or message name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// The type name; repeated fields are `[]T`.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// Nested fields; written as `null` when empty, as Go does.
    #[serde(
        default,
        deserialize_with = "null_default",
        serialize_with = "empty_as_null"
    )]
    pub values: Vec<Value>,
}

fn null_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: Serializer>(v: &[Value], s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

impl Service {
    /// A service with the given name and version and nothing else.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }
    }

    /// Merges services of one name as registries return them per node into one entry per
    /// version, nodes combined (a node listed twice is kept once, the later copy winning).
    pub fn merge(services: impl IntoIterator<Item = Service>) -> Vec<Service> {
        let mut out: Vec<Service> = Vec::new();
        for s in services {
            match out
                .iter_mut()
                .find(|o| o.name == s.name && o.version == s.version)
            {
                Some(o) => {
                    for n in s.nodes {
                        o.nodes.retain(|x| x.id != n.id);
                        o.nodes.push(n);
                    }
                    if o.endpoints.is_empty() {
                        o.endpoints = s.endpoints;
                    }
                }
                None => out.push(s),
            }
        }
        out
    }
}

/// Options for [`Registry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How long the entry lives without being registered again.
    pub ttl: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            ttl: Duration::from_secs(90),
        }
    }
}

/// What happened to a service in a [`Registry::watch`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A node appeared.
    Create,
    /// A node's entry changed (or was registered again).
    Update,
    /// A node went away.
    Delete,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        })
    }
}

/// A change seen by a watch: the service holds the node(s) concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The service, with only the nodes this event is about.
    pub service: Service,
}

/// The stream a watch yields. It ends when the watch is dropped or the registry closes; an
/// `Err` item reports a backend problem and the watch may go on after it.
pub type Watcher = BoxStream<'static, Result<Event>>;

/// A service registry: where services announce their nodes, and clients find them.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + fmt::Debug {
    /// The plugin's name, as written in `MICRO_REGISTRY` (`mdns`, `etcd`, ...).
    fn name(&self) -> &str;

    /// Announces the nodes of `service` for `opts.ttl`; registering again renews them.
    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()>;

    /// Removes the nodes of `service`. Removing an unknown node is not an error.
    async fn deregister(&self, service: &Service) -> Result<()>;

    /// All versions of the named service; an unknown service gives a 404 [`crate::Error`].
    async fn get_service(&self, name: &str) -> Result<Vec<Service>>;

    /// Every service known, without nodes where the backend cannot list them cheaply.
    async fn list_services(&self) -> Result<Vec<Service>>;

    /// Changes to the named service, or to every service when `service` is `None`.
    async fn watch(&self, service: Option<&str>) -> Result<Watcher>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_ENTRY: &str = r#"{"name":"helloworld","version":"latest","metadata":null,"endpoints":[{"request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":null}]},"response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":null}]},"metadata":{"description":"say hello"},"name":"Greeter.Hello"}],"nodes":[{"metadata":{"broker":"http","protocol":"mucp","registry":"etcd","server":"mucp","transport":"http"},"id":"helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9","address":"127.0.0.1:9090"}]}"#;

    #[test]
    fn reads_a_go_micro_entry() {
        let s: Service = serde_json::from_str(GO_ENTRY).expect("valid Go Micro JSON");
        assert_eq!(s.name, "helloworld");
        assert!(s.metadata.is_empty());
        assert_eq!(s.endpoints[0].name, "Greeter.Hello");
        let req = s.endpoints[0].request.as_ref().expect("request");
        assert_eq!(req.values[0].kind, "string");
        assert_eq!(s.nodes[0].address, "127.0.0.1:9090");
        assert_eq!(s.nodes[0].metadata["protocol"], "mucp");
    }

    #[test]
    fn writes_the_same_shape_back() {
        let s: Service = serde_json::from_str(GO_ENTRY).expect("valid");
        let out: serde_json::Value = serde_json::to_value(&s).expect("serialise");
        let leaf = &out["endpoints"][0]["request"]["values"][0];
        assert_eq!(leaf["values"], serde_json::Value::Null);
        assert_eq!(leaf["type"], "string");
        assert_eq!(out["metadata"], serde_json::json!({}));
        let back: Service = serde_json::from_value(out).expect("round trip");
        assert_eq!(back, s);
    }

    #[test]
    fn merge_combines_nodes_per_version() {
        let mut a = Service::new("greeter", "latest");
        a.nodes.push(Node {
            id: "a".into(),
            ..Default::default()
        });
        let mut b = a.clone();
        b.nodes[0].id = "b".into();
        let mut c = Service::new("greeter", "v2");
        c.nodes.push(Node::default());
        let merged = Service::merge([a.clone(), b, c, a]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].nodes.len(), 2);
    }
}
