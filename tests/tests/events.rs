//! Events as the README shows them: a serde type published on the default (protobuf) client
//! goes as JSON and reaches its subscriber (the type needs no `Default`); a unary call with
//! JSON values works the same way.

mod common;

use common::{builder, greeter, within};
use micro::registry::MemoryRegistry;
use micro::{Event, Json, Request};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u64,
}

#[tokio::test]
async fn a_serde_event_on_the_default_client_reaches_its_subscriber() {
    let registry = MemoryRegistry::new();
    let (seen, mut orders) = tokio::sync::mpsc::unbounded_channel();
    let service = builder("billing", &registry)
        .subscriber("orders.created", move |e: Event<Json<Order>>| {
            let seen = seen.clone();
            Box::pin(async move {
                let content_type = e.header.get("Content-Type").unwrap_or_default().to_string();
                let _ = seen.send((e.message.0, content_type));
                Ok(())
            }) as micro::BoxFuture<'static, micro::Result<()>>
        })
        .build()
        .expect("build");
    service.start().await.expect("start");
    assert_eq!(
        service.client().options().content_type,
        "application/protobuf"
    );
    within(
        "publish",
        service.publish("orders.created", &Json(Order { id: 7 })),
    )
    .await
    .expect("published as JSON");
    let (order, content_type) = within("delivery", orders.recv()).await.expect("an order");
    assert_eq!(order, Order { id: 7 });
    assert_eq!(content_type, "application/json");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn a_json_call_on_the_default_client_goes_as_json() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let client = common::client(&registry);
    let request = Request::new(Json(serde_json::json!({"name": "J"})));
    let reply = within(
        "call",
        client.unary::<Json<serde_json::Value>, Json<serde_json::Value>>(
            "greeter",
            "Greeter.Hello",
            request,
        ),
    )
    .await
    .expect("answered");
    assert_eq!(reply.into_inner().0["message"], "Hello J");
    service.stop().await.expect("stop");
}
