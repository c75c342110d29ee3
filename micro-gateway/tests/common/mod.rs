//! What the gateway's tests share: curl, run as its own process, and its answers.
#![allow(dead_code, unreachable_pub)]

use std::process::Command;
use std::time::Duration;

use micro_conformance::program::output_within;
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The bound on every process and wait of a test.
pub const BOUND: Duration = Duration::from_secs(30);

/// What curl got: status, headers (lower-cased names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -s -i <args> <url>`, parsed.
pub fn curl(args: &[&str], url: &str) -> Answer {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .arg(url);
    let out = output_within(command, None, BOUND);
    assert!(out.status.success(), "curl {args:?} {url} failed: {out:?}");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    // An interim `100 Continue` comes before the real head.
    while text.starts_with("HTTP/1.1 100") {
        text = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, rest)| rest.to_string());
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A started greeter called `name` and a gateway over it with `opts`, sharing an in-memory
/// registry and broker.
pub async fn greeter_behind_gateway(
    name: &str,
    opts: micro_gateway::GatewayOptions,
) -> Result<(micro_gateway::Gateway, micro::Service), micro::Error> {
    use std::sync::Arc;

    let registry = Arc::new(micro::registry::MemoryRegistry::new());
    let broker = Arc::new(micro::broker::MemoryBroker::new());
    let greeter = micro::Service::builder(name)
        .ignore_env()
        .registry(registry.clone())
        .broker(broker.clone())
        .handler(greeter::greeter::greeter_handler(greeter::GreeterService))
        .build()?;
    greeter.start().await?;
    let service = micro::Service::builder("micro.gateway")
        .ignore_env()
        .registry(registry)
        .broker(broker)
        .build()?;
    let gateway = micro_gateway::Gateway::bind("127.0.0.1:0", &service, opts).await?;
    Ok((gateway, greeter))
}

/// A subscriber's handler.
pub type Subscriber = Box<
    dyn Fn(micro::Event<micro::Json<Value>>) -> micro::BoxFuture<'static, micro::Result<()>>
        + Send
        + Sync,
>;

/// A subscriber that hands each event's JSON to the returned channel.
pub fn collector() -> (Subscriber, tokio::sync::mpsc::Receiver<Value>) {
    let (seen, events) = tokio::sync::mpsc::channel::<Value>(4);
    let handler = move |e: micro::Event<micro::Json<Value>>| {
        let seen = seen.clone();
        Box::pin(async move {
            let _ = seen.send(e.message.0).await;
            Ok(())
        }) as micro::BoxFuture<'static, micro::Result<()>>
    };
    (Box::new(handler), events)
}
