//! `micro call`, `micro stream` and `micro health`: calls through Micro's client, so nodes are
//! found by the selector and called with the transport their `protocol` names.

use std::time::Duration;

use bytes::Bytes;
use micro::core::registry::Node;
use micro::rpc::{self, CallOptions};
use micro::{Error, Json, Metadata, Request, Result, Service};
use serde_json::Value;

use crate::output::{self, Output};
use crate::{bounded, duration, read_stdin};

/// The largest request read from standard input.
const STDIN_LIMIT: usize = 16 * 1024 * 1024;

const JSON: &str = "application/json";

/// What `call` and `stream` take.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The service (`greeter`)
    service: String,
    /// The endpoint (`Greeter.Hello`)
    endpoint: String,
    /// The request as JSON; read from standard input when absent
    request: Option<String>,
    /// Metadata sent with the call (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// The call's deadline, sent to the server
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Call the node at this address (host:port) instead of selecting one
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The codec of the request (`call` sends other codecs' bodies as given)
    #[arg(long = "content-type", alias = "content_type", default_value = JSON)]
    content_type: String,
}

impl CallArgs {
    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::new();
        for (key, value) in &self.headers {
            metadata.insert(key.clone(), value.clone());
        }
        metadata
    }

    fn options(&self) -> CallOptions {
        CallOptions {
            timeout: self.timeout,
            address: self.address.clone(),
            ..CallOptions::default()
        }
    }

    /// The request body: the argument, or standard input.
    async fn body(&self) -> Result<Vec<u8>> {
        match &self.request {
            Some(text) => Ok(text.clone().into_bytes()),
            None => read_stdin(STDIN_LIMIT).await,
        }
    }
}

/// `-H key=value`.
fn header(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Parses `text` as JSON, or says where it is not.
fn parse_json(text: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(text)
        .map_err(|e| Error::bad_request("micro.cli", format!("{what} is not valid JSON: {e}")))
}

/// `micro call`: one unary call; prints the reply.
pub(crate) async fn unary(service: &Service, args: CallArgs) -> Result<()> {
    let mut body = args.body().await?;
    if args.content_type == JSON {
        if body.iter().all(u8::is_ascii_whitespace) {
            body = b"{}".to_vec();
        }
        parse_json(&body, "the request")?;
    }
    let request = rpc::Request {
        service: args.service.clone(),
        endpoint: args.endpoint.clone(),
        content_type: args.content_type.clone(),
        metadata: args.metadata(),
        body: Bytes::from(body),
        ..rpc::Request::default()
    };
    let reply = service.client().call_raw(request, args.options()).await?;
    output::body(&reply.body);
    Ok(())
}

/// `micro stream`: a server stream when a request is given, else one request per line of
/// standard input (client or bidirectional streaming); prints each reply on a line. With
/// `--timeout`, the whole stream ends by then.
pub(crate) async fn stream(service: &Service, args: CallArgs) -> Result<()> {
    match args.timeout {
        Some(limit) => tokio::time::timeout(limit, stream_all(service, args))
            .await
            .map_err(|_| {
                Error::timeout(
                    "micro.cli",
                    format!("the stream did not end within {limit:?}"),
                )
            })?,
        None => stream_all(service, args).await,
    }
}

async fn stream_all(service: &Service, args: CallArgs) -> Result<()> {
    if args.content_type != JSON {
        return Err(Error::bad_request(
            "micro.cli",
            "micro stream sends JSON only: leave out --content-type",
        ));
    }
    let client = service.client().with_content_type(JSON);
    let mut stream = match &args.request {
        Some(text) => {
            let message = parse_json(text.as_bytes(), "the request")?;
            let mut request = Request::new(Json(message));
            *request.metadata_mut() = args.metadata();
            *request.options_mut() = args.options();
            client
                .server_stream::<Json<Value>, Json<Value>>(&args.service, &args.endpoint, request)
                .await?
        }
        None => {
            let input = read_stdin(STDIN_LIMIT).await?;
            let text = String::from_utf8(input)
                .map_err(|_| Error::bad_request("micro.cli", "standard input is not UTF-8 text"))?;
            let mut messages = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if !line.trim().is_empty() {
                    messages.push(parse_json(line.as_bytes(), &format!("line {}", n + 1))?);
                }
            }
            let mut opener = Request::new(());
            *opener.metadata_mut() = args.metadata();
            *opener.options_mut() = args.options();
            let mut stream = client
                .stream::<Json<Value>, Json<Value>>(&args.service, &args.endpoint, opener)
                .await?;
            for message in messages {
                stream.send(&Json(message)).await?;
            }
            stream.close_send().await?;
            stream
        }
    };
    while let Some(Json(reply)) = stream.recv().await? {
        if !output::line(&reply.to_string()) {
            break;
        }
    }
    Ok(())
}

/// `micro health`: asks every node; `Ok(false)` when one is not serving.
pub(crate) async fn health(
    service: &Service,
    name: &str,
    timeout: Duration,
    out: Output,
) -> Result<bool> {
    let versions = bounded("reading the service", service.registry().get_service(name)).await?;
    let mut rows = Vec::new();
    let mut all_serving = true;
    for node in versions.iter().flat_map(|v| &v.nodes) {
        let protocol = node.metadata.get("protocol").map_or("mucp", String::as_str);
        let status = match protocol {
            "grpc" => grpc_health(node, timeout).await,
            _ => mucp_health(service, name, node, timeout).await,
        };
        let status = status.unwrap_or_else(|e| format!("unreachable: {e}"));
        all_serving &= status == "SERVING";
        rows.push((
            node.id.clone(),
            node.address.clone(),
            protocol.to_string(),
            status,
        ));
    }
    match out {
        Output::Table => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(id, address, protocol, status)| vec![id, address, protocol, status])
                .collect();
            output::table(&["NODE", "ADDRESS", "PROTOCOL", "STATUS"], &rows);
        }
        Output::Json => {
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(id, address, protocol, status)| {
                    serde_json::json!({"id": id, "address": address, "protocol": protocol, "status": status})
                })
                .collect();
            output::json(&rows);
        }
    }
    Ok(all_serving)
}

/// Go Micro's `Debug.Health` on one node: `SERVING` when it answers `{"status":"ok"}`.
async fn mucp_health(
    service: &Service,
    name: &str,
    node: &Node,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let request = rpc::Request {
        service: name.to_string(),
        endpoint: "Debug.Health".to_string(),
        content_type: JSON.to_string(),
        body: Bytes::from_static(b"{}"),
        ..rpc::Request::default()
    };
    let options = CallOptions {
        timeout: Some(timeout),
        retries: Some(0),
        address: Some(node.address.clone()),
        ..CallOptions::default()
    };
    let reply = service
        .client()
        .call_raw(request, options)
        .await
        .map_err(|e| e.to_string())?;
    let status = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("status")?.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(if status == "ok" {
        "SERVING".to_string()
    } else {
        format!("NOT_SERVING ({status:?})")
    })
}

/// `grpc.health.v1.Health/Check` of the whole server on one node.
#[cfg(feature = "grpc")]
async fn grpc_health(node: &Node, timeout: Duration) -> std::result::Result<String, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.address))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        let status = ServingStatus::try_from(reply.into_inner().status)
            .map_or("UNKNOWN", |s| s.as_str_name());
        Ok(status.to_string())
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

#[cfg(not(feature = "grpc"))]
async fn grpc_health(_node: &Node, _timeout: Duration) -> std::result::Result<String, String> {
    Err("this micro was built without the `grpc` feature".to_string())
}
