//! Messages that did not come from Micro: raw bytes and odd AMQP headers published straight to
//! the exchange with lapin are delivered as they are, and nothing stops the subscriber.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use micro_broker_rabbitmq::{options::DEFAULT_URL, RabbitBroker, RabbitOptions};
use micro_core::broker::{Message, SubscribeOptions};
use micro_core::Broker;

mod common;

use common::{collector, next, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_arrive_as_they_are() {
    if !common::rabbitmq_up() {
        return;
    }
    let broker = RabbitBroker::new(RabbitOptions::default()).expect("broker");
    let topic = unique("foreign");
    let (handler, mut rx) = collector();
    let sub = broker
        .subscribe(&topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");

    let conn = Connection::connect(DEFAULT_URL, ConnectionProperties::default())
        .await
        .expect("raw lapin connection");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let raw = |body: Vec<u8>, props: BasicProperties| {
        let channel = channel.clone();
        let topic = topic.clone();
        async move {
            channel
                .basic_publish(
                    "micro".into(),
                    topic.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        }
    };

    // Garbage, with no properties at all.
    let garbage = vec![0xff, 0x00, 0xfe, b'{', 0x80];
    raw(garbage.clone(), BasicProperties::default()).await;
    let d = next(&mut rx, "a message without headers").await;
    assert_eq!(&d.message.body[..], &garbage[..]);
    assert!(d.message.header.is_empty(), "{:?}", d.message.header);
    assert_eq!(d.topic, topic);

    // Every odd header type a foreign client might send, and the AMQP content type.
    let mut nested = FieldTable::default();
    nested.insert("count".into(), AMQPValue::LongInt(2));
    let mut table = FieldTable::default();
    table.insert("flag".into(), AMQPValue::Boolean(false));
    table.insert("big".into(), AMQPValue::LongLongInt(-9_000_000_000));
    table.insert("ratio".into(), AMQPValue::Double(0.25));
    table.insert("small".into(), AMQPValue::ShortShortUInt(7));
    table.insert(
        "price".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 1999,
        }),
    );
    table.insert("when".into(), AMQPValue::Timestamp(1_700_000_000));
    table.insert("nothing".into(), AMQPValue::Void);
    table.insert(
        "raw".into(),
        AMQPValue::ByteArray(ByteArray::from(b"bytes".to_vec())),
    );
    table.insert(
        "latin1".into(),
        AMQPValue::LongString(vec![b'c', b'a', b'f', 0xe9].into()),
    );
    table.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(nested)])),
    );
    table.insert("Trace-Id".into(), AMQPValue::LongString("t-1".into()));
    let props = BasicProperties::default()
        .with_headers(table)
        .with_content_type("application/json".into());
    raw(b"{\"not\": \"micro\"}".to_vec(), props).await;
    let d = next(&mut rx, "a message with odd headers").await;
    let h = &d.message.header;
    let expect = [
        ("flag", "false"),
        ("big", "-9000000000"),
        ("ratio", "0.25"),
        ("small", "7"),
        ("price", "19.99"),
        ("when", "1700000000"),
        ("nothing", ""),
        ("raw", "bytes"),
        ("latin1", "caf\u{fffd}"),
        ("x-death", r#"[{"count":2}]"#),
        ("trace-id", "t-1"),
        ("Content-Type", "application/json"),
    ];
    for (k, v) in expect {
        assert_eq!(h.get(k), Some(v), "header {k} in {h:?}");
    }
    assert_eq!(h.len(), expect.len(), "{h:?}");

    // An empty body, and then a Micro message: the subscriber is still going.
    raw(Vec::new(), BasicProperties::default()).await;
    assert!(next(&mut rx, "an empty message")
        .await
        .message
        .body
        .is_empty());
    let mut msg = Message::default();
    msg.header.insert("Micro-Id", "m-1");
    broker.publish(&topic, msg).await.expect("publish");
    let d = next(&mut rx, "a Micro message after the foreign ones").await;
    assert_eq!(d.message.header.get("micro-id"), Some("m-1"));

    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    let _ = conn.close(200, "done".into()).await;
}
