//! The client's side of selector accounting: what a call that hangs, times out or is cancelled
//! leaves in the selector. The transport here never answers (its calls wait forever), so the
//! tests touch no network and time only passes on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::broker::MemoryBroker;
use micro::core::registry::RegisterOptions;
use micro::core::selector::{Outcome, Pick, Picker, SelectOptions};
use micro::core::{Node, Registry, Selector, Service, Transport};
use micro::registry::MemoryRegistry;
use micro::rpc::{self, CallOptions};
use micro::selector::{RegistrySelector, SelectorOptions};
use micro::transport::{CallParams, Listener, Socket};
use micro::{Client, ClientOptions, Codecs, Result};
use tokio::sync::mpsc;

/// A transport whose dials never finish: the node takes the call and never answers. Each
/// dial is reported to the test.
#[derive(Debug)]
struct Hanging {
    dialed: mpsc::UnboundedSender<String>,
}

#[async_trait::async_trait]
impl Transport for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }

    async fn call(
        &self,
        addr: &str,
        _req: &rpc::Request,
        _params: CallParams,
    ) -> std::result::Result<rpc::Response, rpc::AttemptError> {
        let _ = self.dialed.send(addr.to_string());
        std::future::pending().await
    }

    async fn stream(
        &self,
        addr: &str,
        _req: &rpc::Request,
        _connect_timeout: Duration,
    ) -> Result<Box<dyn Socket>> {
        let _ = self.dialed.send(addr.to_string());
        std::future::pending().await
    }

    async fn listen(
        &self,
        addr: &str,
        _handler: Arc<dyn micro::transport::CallHandler>,
    ) -> Result<Box<dyn Listener>> {
        Err(micro::Error::internal(
            "test",
            format!("the hanging transport does not listen on {addr}"),
        ))
    }
}

/// Delegates to a selector and records the outcomes marked.
#[derive(Debug)]
struct Recording<S> {
    inner: S,
    marks: Mutex<Vec<(String, Outcome)>>,
}

impl<S> Recording<S> {
    fn marks(&self) -> Vec<(String, Outcome)> {
        self.marks.lock().expect("marks").clone()
    }
}

#[async_trait::async_trait]
impl<S: Selector> Selector for Recording<S> {
    async fn select(&self, service: &str, opts: &SelectOptions) -> Result<Box<dyn Picker>> {
        self.inner.select(service, opts).await
    }

    fn mark(&self, service: &str, node: &Node, outcome: Outcome) {
        self.marks
            .lock()
            .expect("marks")
            .push((node.id.clone(), outcome));
        self.inner.mark(service, node, outcome);
    }

    fn reset(&self, service: Option<&str>) {
        self.inner.reset(service)
    }
}

/// A selector of one node whose picks count in a counter the test can read.
#[derive(Debug)]
struct Counted {
    node: Arc<Node>,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct CountedPicker(Arc<Node>, Arc<AtomicUsize>);

impl Picker for CountedPicker {
    fn pick(&mut self) -> Result<Pick> {
        Ok(Pick::tracked(self.0.clone(), self.1.clone()))
    }
}

#[async_trait::async_trait]
impl Selector for Counted {
    async fn select(&self, _service: &str, _opts: &SelectOptions) -> Result<Box<dyn Picker>> {
        Ok(Box::new(CountedPicker(
            self.node.clone(),
            self.in_flight.clone(),
        )))
    }

    fn mark(&self, _service: &str, _node: &Node, _outcome: Outcome) {}

    fn reset(&self, _service: Option<&str>) {}
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        address: format!("{id}.test:1"),
        ..Default::default()
    }
}

fn greeter(ids: &[&str]) -> Service {
    let mut s = Service::new("greeter", "latest");
    s.nodes = ids.iter().map(|id| node(id)).collect();
    s
}

fn client(selector: Arc<dyn Selector>) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (dialed, dials) = mpsc::unbounded_channel();
    let client = Client::new(
        selector,
        Arc::new(Hanging { dialed }),
        Arc::new(MemoryBroker::new()),
        Codecs::default(),
        ClientOptions::default(),
    );
    (client, dials)
}

fn hello() -> rpc::Request {
    rpc::Request {
        service: "greeter".into(),
        endpoint: "Greeter.Hello".into(),
        content_type: "application/json".into(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_that_times_out_is_ejected() {
    let registry = MemoryRegistry::new();
    registry
        .register(&greeter(&["slow"]), RegisterOptions::default())
        .await
        .expect("register");
    let selector = Arc::new(Recording {
        inner: RegistrySelector::new(Arc::new(registry.clone()), SelectorOptions::default()),
        marks: Mutex::new(Vec::new()),
    });
    let (client, _dials) = client(selector.clone());
    let options = CallOptions {
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let err = client
        .call_raw(hello(), options)
        .await
        .expect_err("the node never answers");
    assert_eq!(err.code, 408, "{err}");
    assert_eq!(selector.marks(), [("slow".to_string(), Outcome::Failure)]);

    // The next calls avoid the node that hung, while another one is there.
    registry
        .register(&greeter(&["fast"]), RegisterOptions::default())
        .await
        .expect("register");
    selector.reset(None);
    for _ in 0..20 {
        let mut picker = selector
            .select("greeter", &SelectOptions::default())
            .await
            .expect("select");
        assert_eq!(picker.pick().expect("node").id, "fast");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_or_timed_out_call_is_no_longer_in_flight() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let selector = Arc::new(Counted {
        node: Arc::new(node("slow")),
        in_flight: in_flight.clone(),
    });
    let (client, mut dials) = client(selector);

    // Cancelled: the caller's task is aborted in the middle of the attempt.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call_raw(hello(), CallOptions::default()).await }
    });
    dials.recv().await.expect("the call dialled");
    assert_eq!(
        in_flight.load(Ordering::Relaxed),
        1,
        "the attempt is in flight"
    );
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    assert_eq!(in_flight.load(Ordering::Relaxed), 0);

    // Timed out: the client gives up at the deadline.
    let options = CallOptions {
        timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let err = client
        .call_raw(hello(), options)
        .await
        .expect_err("the node never answers");
    assert_eq!(err.code, 408, "{err}");
    assert_eq!(in_flight.load(Ordering::Relaxed), 0);

    // Cancelled by the caller's own timeout, around the client's.
    let options = CallOptions {
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let gave_up = tokio::time::timeout(Duration::from_secs(1), client.call_raw(hello(), options));
    assert!(gave_up.await.is_err(), "the caller gave up first");
    assert_eq!(in_flight.load(Ordering::Relaxed), 0);
}
