//! tower's own layers on Micro's paths, unchanged: `TimeoutLayer`, `ConcurrencyLimitLayer`
//! and `LoadShedLayer` on the handler and client paths, with the status each produces.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{builder, within};
use micro::registry::MemoryRegistry;
use micro::{BoxFuture, Handler, Json, Request, Response};
use tokio::sync::{mpsc, Semaphore};

/// `Gate.Pass`: says it was entered, then waits for a permit of `open`.
fn gate(entered: mpsc::UnboundedSender<()>, open: Arc<Semaphore>) -> Handler {
    Handler::new("Gate").unary("Pass", move |_req: Request<Json<u32>>| {
        let (entered, open) = (entered.clone(), open.clone());
        Box::pin(async move {
            let _ = entered.send(());
            let _permit = open
                .acquire()
                .await
                .map_err(|_| micro::Error::internal("gate", "closed"))?;
            Ok(Response::new(Json(1u32)))
        }) as BoxFuture<'static, micro::Result<Response<Json<u32>>>>
    })
}

struct Setup {
    registry: MemoryRegistry,
    entered: mpsc::UnboundedReceiver<()>,
    open: Arc<Semaphore>,
}

/// A started service with the gate, its handler path wrapped by `wrap`.
async fn serve(
    wrap: impl FnOnce(micro::ServiceBuilder) -> micro::ServiceBuilder,
) -> (Setup, micro::Service) {
    let registry = MemoryRegistry::new();
    let (tx, entered) = mpsc::unbounded_channel();
    let open = Arc::new(Semaphore::new(0));
    let service = wrap(builder("gated", &registry).handler(gate(tx, open.clone())))
        .build()
        .expect("build");
    service.start().await.expect("start");
    (
        Setup {
            registry,
            entered,
            open,
        },
        service,
    )
}

/// A JSON client, derived once: a derived client (`with_content_type`) builds its layers
/// anew, so a stateful layer's state (a concurrency limit's permits) is its own.
fn json(client: micro::Client) -> micro::Client {
    client.with_content_type("application/json")
}

async fn pass(client: &micro::Client) -> micro::Result<u32> {
    let request = Request::new(Json(0u32));
    let reply = client
        .unary::<Json<u32>, Json<u32>>("gated", "Gate.Pass", request)
        .await?;
    Ok(reply.into_inner().0)
}

#[tokio::test]
async fn handler_path_timeout_is_a_408_and_the_handler_runs_once() {
    let (mut s, service) = serve(|b| {
        b.handler_layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            100,
        )))
    })
    .await;
    let caller = json(common::client(&s.registry));
    let e = within("call", pass(&caller)).await.expect_err("timed out");
    assert_eq!(e.code, 408, "{e}");
    s.entered.recv().await.expect("entered once");
    assert!(s.entered.try_recv().is_err(), "the handler ran again");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn handler_path_load_shedding_over_a_concurrency_limit_is_a_503() {
    let (mut s, service) = serve(|b| {
        b.handler_layer(
            tower::ServiceBuilder::new()
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(1)),
        )
    })
    .await;
    let caller = json(common::client(&s.registry));
    let first = tokio::spawn({
        let caller = caller.clone();
        async move { pass(&caller).await }
    });
    within("the first call in", s.entered.recv()).await;
    let e = within("second call", pass(&caller))
        .await
        .expect_err("shed");
    assert_eq!(e.code, 503, "{e}");
    s.open.add_permits(1);
    let first = within("first call", first).await.expect("joined");
    assert_eq!(first.expect("the first call passes"), 1);
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn client_path_timeout_and_concurrency_limit_apply() {
    let (mut s, service) = serve(|b| b).await;
    let timed = builder("caller", &s.registry)
        .client_layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            100,
        )))
        .build()
        .expect("build")
        .client();
    let timed = json(timed);
    let e = within("timed call", pass(&timed))
        .await
        .expect_err("timed out");
    assert_eq!(e.code, 408, "{e}");
    assert_eq!(e.id, "micro.layer", "{e}");
    within("entered", s.entered.recv()).await;

    let limited = builder("caller", &s.registry)
        .client_layer(
            tower::ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(1),
        )
        .build()
        .expect("build")
        .client();
    let limited = json(limited);
    let first = tokio::spawn({
        let limited = limited.clone();
        async move { pass(&limited).await }
    });
    within("the first call in", s.entered.recv()).await;
    let e = within("second call", pass(&limited))
        .await
        .expect_err("shed");
    assert_eq!(e.code, 503, "{e}");
    s.open.add_permits(2);
    let first = within("first call", first).await.expect("joined");
    assert_eq!(first.expect("the first call passes"), 1);
    service.stop().await.expect("stop");
}
