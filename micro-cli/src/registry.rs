//! `micro services`, `micro describe` and `micro registry watch`: what the registry says.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use micro::core::registry::{Event, Value};
use micro::{Result, Service};

use crate::bounded;
use crate::output::{self, Output};

/// `micro services`: one row per service version, with its node count.
pub(crate) async fn services(service: &Service, out: Output) -> Result<()> {
    let registry = service.registry();
    let listed = bounded("listing the services", registry.list_services()).await?;
    let mut names: Vec<String> = listed.into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    // Listings may leave the nodes out (mDNS does), so each service is read whole.
    let mut rows = Vec::new();
    for name in names {
        let versions = match bounded("reading a service", registry.get_service(&name)).await {
            Ok(versions) => versions,
            // Gone between the listing and now.
            Err(e) if e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        for version in versions {
            rows.push((name.clone(), version.version, version.nodes.len()));
        }
    }
    match out {
        Output::Table => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(name, version, nodes)| vec![name, version, nodes.to_string()])
                .collect();
            output::table(&["SERVICE", "VERSION", "NODES"], &rows);
        }
        Output::Json => {
            let rows: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(name, version, nodes)| {
                    serde_json::json!({"service": name, "version": version, "nodes": nodes})
                })
                .collect();
            output::json(&rows);
        }
    }
    Ok(())
}

/// `micro describe SERVICE`: the nodes and endpoints of each version.
pub(crate) async fn describe(service: &Service, name: &str, out: Output) -> Result<()> {
    let versions = bounded("reading the service", service.registry().get_service(name)).await?;
    if out == Output::Json {
        output::json(&versions);
        return Ok(());
    }
    for (i, version) in versions.iter().enumerate() {
        if i > 0 {
            output::line("");
        }
        output::line(&format!("service  {}", version.name));
        output::line(&format!("version  {}", version.version));
        if !version.metadata.is_empty() {
            output::line(&format!("metadata {}", pairs(&version.metadata)));
        }
        output::line("");
        let nodes: Vec<Vec<String>> = version
            .nodes
            .iter()
            .map(|n| vec![n.id.clone(), n.address.clone(), pairs(&n.metadata)])
            .collect();
        output::table(&["NODE", "ADDRESS", "METADATA"], &nodes);
        output::line("");
        let endpoints: Vec<Vec<String>> = version
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.request.as_ref().map(shape).unwrap_or_default(),
                    e.response.as_ref().map(shape).unwrap_or_default(),
                    pairs(&e.metadata),
                ]
            })
            .collect();
        output::table(&["ENDPOINT", "REQUEST", "RESPONSE", "METADATA"], &endpoints);
    }
    Ok(())
}

/// `micro registry watch`: one line per node and event, until `count` events or Ctrl-C.
pub(crate) async fn watch(
    service: &Service,
    name: Option<&str>,
    count: Option<u64>,
    out: Output,
) -> Result<()> {
    let mut watcher = bounded("starting the watch", service.registry().watch(name)).await?;
    eprintln!(
        "watching {} on the {} registry (Ctrl-C to stop)",
        name.unwrap_or("every service"),
        service.registry().name()
    );
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        let event = tokio::select! {
            event = watcher.next() => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Some(Ok(event)) => {
                if !print_event(&event, out) {
                    break;
                }
                seen += 1;
            }
            // The watch goes on after a backend hiccup; say so and keep going.
            Some(Err(e)) => eprintln!("micro: the watch reported: {e}"),
            None => {
                return Err(micro::Error::new(
                    "micro.cli",
                    503,
                    format!("the {} registry ended the watch", service.registry().name()),
                ))
            }
        }
    }
    Ok(())
}

/// Prints an event; `false` once standard output is closed.
fn print_event(event: &Event, out: Output) -> bool {
    match out {
        Output::Json => {
            let json =
                serde_json::json!({"action": event.kind.to_string(), "service": event.service});
            output::line(&json.to_string())
        }
        Output::Table => {
            let s = &event.service;
            if s.nodes.is_empty() {
                return output::line(&format!("{} {} {}", event.kind, s.name, s.version));
            }
            s.nodes.iter().all(|node| {
                output::line(&format!(
                    "{} {} {} {} {}",
                    event.kind, s.name, s.version, node.id, node.address
                ))
            })
        }
    }
}

/// `k=v,k=v`.
fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A message shape as a person reads it: `HelloRequest{name string}`.
fn shape(value: &Value) -> String {
    if value.values.is_empty() {
        return value.kind.clone();
    }
    let fields: Vec<String> = value
        .values
        .iter()
        .map(|f| format!("{} {}", f.name, shape(f)))
        .collect();
    format!("{}{{{}}}", value.kind, fields.join(", "))
}
