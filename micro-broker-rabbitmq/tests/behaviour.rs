//! Acknowledgement and handler failures against the local RabbitMQ, and the errors a person
//! sees when something is wrong (those checks need no RabbitMQ).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro_core::{Broker, Error};
use tokio::sync::mpsc;

mod common;

use common::{collector, next, unique};

fn body(b: &[u8]) -> Message {
    Message {
        body: b.to_vec().into(),
        ..Default::default()
    }
}

fn group(name: &str, auto_ack: bool) -> SubscribeOptions {
    SubscribeOptions {
        queue: Some(name.into()),
        auto_ack,
    }
}

fn broker() -> RabbitBroker {
    RabbitBroker::new(RabbitOptions::default().with_queue_expiry(Duration::from_secs(60)))
        .expect("broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_failing_handler_does_not_stop_the_subscriber() {
    if !common::rabbitmq_up() {
        return;
    }
    let b = broker();
    let topic = unique("panics");
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let seen = calls.clone();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        let n = seen.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match n {
                0 => panic!("a handler bug (on purpose)"),
                1 => Err(Error::internal("test", "failing on purpose")),
                _ => {
                    let _ = tx.send(d.message.body.to_vec());
                    Ok(())
                }
            }
        })
    });
    let sub = b
        .subscribe(&topic, handler, group("panics", true))
        .await
        .expect("subscribe");
    b.publish(&topic, body(b"first")).await.expect("publish");
    let got = tokio::time::timeout(common::PATIENCE, rx.recv())
        .await
        .expect("redelivered in time");
    assert_eq!(
        got.as_deref(),
        Some(&b"first"[..]),
        "after a panic and an error"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    b.publish(&topic, body(b"second")).await.expect("publish");
    let got = tokio::time::timeout(common::PATIENCE, rx.recv())
        .await
        .expect("delivered in time");
    assert_eq!(got.as_deref(), Some(&b"second"[..]));
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_twice_is_harmless_and_nack_requeues() {
    if !common::rabbitmq_up() {
        return;
    }
    let b = broker();
    let topic = unique("settle");
    let (handler, mut rx) = collector();
    let sub = b
        .subscribe(&topic, handler, group("settle", false))
        .await
        .expect("subscribe");

    b.publish(&topic, body(b"nacked")).await.expect("publish");
    let d = next(&mut rx, "the message to nack").await;
    d.nack(true).await.expect("nack");
    d.ack().await.expect("a later ack is a no-op");
    let again = next(&mut rx, "the nacked message, redelivered").await;
    assert_eq!(&again.message.body[..], b"nacked");
    again.ack().await.expect("ack");
    again.ack().await.expect("acking twice is harmless");
    again
        .nack(true)
        .await
        .expect("a nack after the ack is a no-op");

    b.publish(&topic, body(b"next")).await.expect("publish");
    let d = next(&mut rx, "the next message").await;
    assert_eq!(
        &d.message.body[..],
        b"next",
        "the acked one did not come back"
    );
    d.ack().await.expect("ack");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing is redelivered after acks"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    b.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_may_unsubscribe_itself() {
    if !common::rabbitmq_up() {
        return;
    }
    let b = broker();
    let topic = unique("self-unsub");
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let slot: Arc<tokio::sync::Mutex<Option<Box<dyn micro_core::broker::Subscription>>>> =
        Arc::default();
    let inner = slot.clone();
    let handler: Handler = Arc::new(move |_d: Delivery| {
        let inner = inner.clone();
        let tx = tx.clone();
        Box::pin(async move {
            if let Some(sub) = inner.lock().await.take() {
                sub.unsubscribe().await?;
            }
            let _ = tx.send(());
            Ok(())
        })
    });
    let sub = b
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    *slot.lock().await = Some(sub);
    b.publish(&topic, body(b"x")).await.expect("publish");
    // Within a second: it must not wait out the unsubscribe timeout for itself.
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("the handler finished promptly");
    b.disconnect().await.expect("disconnect");
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn errors_name_the_server_and_never_the_password() {
    let port = closed_port();
    let url = format!("amqp://app:hunter2@127.0.0.1:{port}/prod");
    let b = RabbitBroker::new(RabbitOptions::from_address(&url)).expect("made without a server");
    assert_eq!(b.name(), "rabbitmq");
    assert_eq!(b.address(), format!("127.0.0.1:{port}"));
    assert!(!format!("{b:?}").contains("hunter2"));
    let err = b.connect().await.expect_err("nothing listens there");
    assert_eq!(err.code, 503, "{err}");
    assert!(
        err.detail.starts_with(&format!(
            "rabbitmq at 127.0.0.1:{port}, vhost \"prod\": cannot connect"
        )),
        "{err}"
    );
    assert!(err.detail.contains("rabbitmq-server -detached"), "{err}");
    assert!(!err.detail.contains("hunter2"), "{err}");
    let err = b
        .publish("t", body(b"x"))
        .await
        .expect_err("publishing connects first");
    assert_eq!(err.code, 503, "{err}");
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let opts = RabbitOptions {
        max_message_size: 1024,
        ..RabbitOptions::from_address(&format!("127.0.0.1:{}", closed_port()))
    };
    let b = RabbitBroker::new(opts).expect("broker");
    let err = b
        .publish("big", body(&[0u8; 1025]))
        .await
        .expect_err("too large");
    assert_eq!(err.code, 413, "{err}");
    assert!(
        err.detail.contains("1025 bytes") && err.detail.contains("1024"),
        "{err}"
    );
    let long = "t".repeat(300);
    let err = b.publish(&long, body(b"x")).await.expect_err("long topic");
    assert_eq!(err.code, 400, "{err}");
    let err = b.publish("", body(b"x")).await.expect_err("empty topic");
    assert_eq!(err.code, 400, "{err}");
    let (h, _rx) = collector();
    let err = b
        .subscribe(&"t".repeat(250), h, group("workers", true))
        .await
        .expect_err("queue name too long");
    assert_eq!(err.code, 400, "{err}");
    for url in [
        "nonsense",
        "http://127.0.0.1:5672/",
        "amqp://127.0.0.1:notaport/",
    ] {
        let err = RabbitBroker::new(RabbitOptions {
            url: url.into(),
            ..Default::default()
        })
        .expect_err(url);
        assert_eq!(err.code, 400, "{err}");
        assert!(err.detail.contains("not an AMQP URL"), "{err}");
    }
}
