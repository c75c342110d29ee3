//! Brokers: publish N messages of 256 B and consume them, raw client against Micro's broker
//! plugin on the same backend.
//!
//! Each run subscribes one consumer, then publishes N messages with a bounded number of
//! publishes in flight (the window: a publish is in flight until the client library says it
//! is done, i.e. until its confirm, delivery report or HTTP reply), and never more than
//! [`CREDIT`] messages ahead of the consumer, so that a fast publisher cannot overrun a
//! consumer that drops what it cannot keep up with (core NATS does). The time is taken from
//! the first publish until the consumer has counted the N-th message. Raw and Micro use the
//! same window, credit, message size and backend settings for each broker, and a Micro
//! message carries one header (`Content-Type`), as does the raw one wherever the protocol
//! has headers.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use micro::core::broker::{Delivery, Handler, Message, SubscribeOptions};
use micro::core::Broker;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::sync::Notify;

use crate::report::{Section, Table, Target};
use crate::stats;
use crate::Settings;

/// The size of every message body.
const MESSAGE_BYTES: usize = 256;
/// At most this many messages published and not yet consumed.
const CREDIT: usize = 10_000;
/// The content type every message declares.
const CONTENT_TYPE: &str = "application/octet-stream";

/// Counts what a consumer received and notes when the last one came.
#[derive(Debug)]
struct Tally {
    target: usize,
    received: AtomicUsize,
    finished: Mutex<Option<Instant>>,
    done: Notify,
}

impl Tally {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Tally {
            target,
            received: AtomicUsize::new(0),
            finished: Mutex::new(None),
            done: Notify::new(),
        })
    }

    /// One message arrived (with `len` body bytes; a wrong size is not counted).
    fn hit(&self, len: usize) {
        if len != MESSAGE_BYTES {
            return;
        }
        let n = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target {
            *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            self.done.notify_one();
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Acquire)
    }
}

/// A Micro broker handler that counts into `tally`.
fn counting_handler(tally: Arc<Tally>) -> Handler {
    Arc::new(move |d: Delivery| {
        tally.hit(d.message.body.len());
        Box::pin(async { Ok(()) })
    })
}

/// The message Micro publishes.
fn micro_message(body: &Bytes) -> Message {
    let mut msg = Message {
        body: body.clone(),
        ..Default::default()
    };
    msg.header.insert("Content-Type", CONTENT_TYPE);
    msg
}

/// Publishes `n` messages with `publish(i)`, at most `window` in flight and at most
/// [`CREDIT`] ahead of `tally`; then waits (up to `patience`) for the consumer to have them all.
/// Returns the time from the first publish to the last message consumed.
async fn pump<F, Fut>(
    n: usize,
    window: usize,
    tally: &Tally,
    patience: Duration,
    publish: F,
) -> Result<Duration, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for i in 0..n {
        while in_flight.len() >= window {
            if let Some(r) = in_flight.next().await {
                r?;
            }
        }
        while i.saturating_sub(tally.received()) > CREDIT {
            tokio::select! {
                Some(r) = in_flight.next(), if !in_flight.is_empty() => r?,
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        in_flight.push(publish(i));
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    if tally.received() < n
        && tokio::time::timeout(patience, tally.done.notified())
            .await
            .is_err()
    {
        return Err(format!(
            "the consumer had {} of {n} messages {:.0} s after the publishing ended",
            tally.received(),
            patience.as_secs_f64()
        ));
    }
    let finished = tally
        .finished
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(Instant::now);
    Ok(finished.saturating_duration_since(start))
}

/// The shorter of two runs; the first failure wins over any time.
fn best(a: Result<Duration, String>, b: Result<Duration, String>) -> Result<Duration, String> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a.min(b)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// A topic name no earlier run used.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Whether something listens on `addr`.
async fn reachable(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("nothing answers on {addr}: {e}")),
        Err(_) => Err(format!("{addr} did not answer within 2 s")),
    }
}

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kafka,
    Rabbit,
    Nats,
    Http,
}

/// The brokers by the names `--brokers` takes.
pub(crate) const NAMES: [&str; 4] = ["kafka", "rabbitmq", "nats", "http"];

/// One broker: its raw and Micro runs.
struct Case {
    kind: Kind,
    /// Its name in [`NAMES`].
    key: &'static str,
    /// Rounds of the full run (each runs raw, then Micro): more for the brokers whose runs are
    /// short, and so more at the mercy of a slow moment of the machine.
    rounds: u32,
    name: &'static str,
    raw: &'static str,
    micro: &'static str,
    window: usize,
}

const KAFKA: Case = Case {
    kind: Kind::Kafka,
    key: "kafka",
    rounds: 2,
    name: "Kafka (librdkafka mock cluster)",
    raw: "rdkafka FutureProducer + StreamConsumer",
    micro: "micro-broker-kafka",
    window: 1000,
};
const RABBITMQ: Case = Case {
    kind: Kind::Rabbit,
    key: "rabbitmq",
    rounds: 2,
    name: "RabbitMQ (127.0.0.1:5672)",
    raw: "lapin, publisher confirms",
    micro: "micro-broker-rabbitmq",
    window: 256,
};
const NATS: Case = Case {
    kind: Kind::Nats,
    key: "nats",
    rounds: 5,
    name: "NATS core (127.0.0.1:4222)",
    raw: "async-nats",
    micro: "micro-broker-nats",
    window: 256,
};
const HTTP: Case = Case {
    kind: Kind::Http,
    key: "http",
    rounds: 3,
    name: "HTTP (loopback)",
    raw: "hyper client POST to a hyper server",
    micro: "micro-broker-http (MemoryRegistry)",
    window: 32,
};

/// The goal for one broker, in words.
fn goal(case: &Case) -> String {
    let raw = case.raw.split(',').next().unwrap_or(case.raw);
    format!("{} throughput >= 0.9x {raw}", case.micro)
}

/// Runs every broker and builds the section.
pub(crate) async fn run(settings: &Settings) -> Section {
    let n = settings.messages;
    let patience = if settings.quick {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(60)
    };
    let mut section = Section::new(
        "Brokers",
        format!(
            "Publish {n} messages of {MESSAGE_BYTES} B to one topic and consume them with one \
             subscriber, timed from the first publish until the subscriber has counted all \
             {n}. Publishes run concurrently up to the window (a publish is in flight until \
             the library reports it done: Kafka's delivery report, RabbitMQ's publisher \
             confirm, the HTTP reply; core NATS publishes complete when buffered), and never \
             more than {CREDIT} ahead of the subscriber. Micro's side is the plugin's \
             `Broker::publish`/`subscribe` (one `Content-Type` header per message; raw \
             messages carry it too where the protocol has headers). Raw and Micro share the \
             backend settings: Kafka `acks=all` with the idempotent producer (Micro's \
             defaults), one-partition topics created on the mock up front, consumers that \
             assign themselves the partition from its end (Micro's subscriber without a \
             queue); RabbitMQ persistent messages through a topic exchange into an \
             exclusive, auto-deleted queue, prefetch 64, each message acked; NATS core with \
             headers; HTTP POSTs over pooled keep-alive connections (Micro's http broker \
             wraps the body in its JSON envelope, base64, as Go Micro does). {}",
            if settings.quick {
                "One round each."
            } else {
                "Raw and Micro run in turns, in rounds (column `rounds`); the fastest round \
                 of each counts."
            }
        ),
    );
    let mut table = Table::new(&[
        "broker",
        "client",
        "window",
        "rounds",
        "messages/s",
        "time",
        "Micro vs raw",
    ]);

    // librdkafka's mock runs on its own threads until dropped at the end of the section.
    let mock =
        MockCluster::new(1).map_err(|e| format!("cannot start librdkafka's mock cluster: {e}"));
    let rabbit = reachable("127.0.0.1:5672").await;
    let nats = reachable("127.0.0.1:4222").await;
    for case in [KAFKA, RABBITMQ, NATS, HTTP] {
        if !settings.brokers.iter().any(|b| b == case.key) {
            continue;
        }
        let rounds = if settings.quick { 1 } else { case.rounds };
        let available = match case.kind {
            Kind::Rabbit => rabbit.clone(),
            Kind::Nats => nats.clone(),
            Kind::Kafka | Kind::Http => Ok(()),
        };
        if let Err(why) = available {
            section.targets.push(Target {
                goal: goal(&case),
                measured: "skipped".into(),
                met: None,
            });
            section.skipped(case.name, why);
            table.row(vec![
                case.name.to_string(),
                "-".into(),
                case.window.to_string(),
                rounds.to_string(),
                "skipped".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        // Raw and Micro take turns, so neither always runs on a warmer (or more tired)
        // backend; each keeps its best round.
        let (mut raw, mut micro) = (Ok(Duration::MAX), Ok(Duration::MAX));
        for round in 1..=rounds {
            eprintln!("micro-bench: brokers {} raw, round {round}", case.name);
            let r = match case.kind {
                Kind::Kafka => kafka_raw(kafka_topic(&mock), n, case.window, patience).await,
                Kind::Rabbit => rabbit_raw(n, case.window, patience).await,
                Kind::Nats => nats_raw(n, case.window, patience).await,
                Kind::Http => http_raw(n, case.window, patience).await,
            };
            raw = best(raw, r);
            eprintln!("micro-bench: brokers {} micro, round {round}", case.name);
            let m = match case.kind {
                Kind::Kafka => kafka_micro(kafka_topic(&mock), n, case.window, patience).await,
                Kind::Rabbit => rabbit_micro(n, case.window, patience).await,
                Kind::Nats => nats_micro(n, case.window, patience).await,
                Kind::Http => http_micro(n, case.window, patience).await,
            };
            micro = best(micro, m);
            if raw.is_err() || micro.is_err() {
                break;
            }
        }
        let rate = |d: &Duration| n as f64 / d.as_secs_f64().max(1e-9);
        let mut cells = |client: &str, r: &Result<Duration, String>, vs: String| match r {
            Ok(d) => table.row(vec![
                case.name.to_string(),
                client.to_string(),
                case.window.to_string(),
                rounds.to_string(),
                stats::count(rate(d)),
                stats::latency(*d),
                vs,
            ]),
            Err(_) => table.row(vec![
                case.name.to_string(),
                client.to_string(),
                case.window.to_string(),
                rounds.to_string(),
                "failed".into(),
                "-".into(),
                "-".into(),
            ]),
        };
        cells(&format!("raw: {}", case.raw), &raw, "1.00x".into());
        let vs = match (&raw, &micro) {
            (Ok(r), Ok(m)) => stats::ratio(rate(m), rate(r)),
            _ => "n/a".into(),
        };
        cells(&format!("Micro: {}", case.micro), &micro, vs);
        if let Err(why) = &raw {
            section.failed(&format!("{} raw", case.name), why);
        }
        if let Err(why) = &micro {
            section.failed(&format!("{} Micro", case.name), why);
        }
        let (measured, met) = match (&raw, &micro) {
            (Ok(r), Ok(m)) => {
                let x = rate(m) / rate(r);
                (format!("{x:.2}x"), Some(x >= 0.9))
            }
            _ => ("not measured".to_string(), None),
        };
        section.targets.push(Target {
            goal: goal(&case),
            measured,
            met,
        });
    }
    section.tables.push(table);
    section
}

// ---------------------------------------------------------------------------------------------
// Kafka

/// The mock cluster's bootstrap servers and a new one-partition topic on it.
fn kafka_topic(
    mock: &Result<MockCluster<'static, DefaultProducerContext>, String>,
) -> Result<(String, String), String> {
    let mock = mock.as_ref().map_err(Clone::clone)?;
    let topic = unique("bench");
    mock.create_topic(&topic, 1, 1)
        .map_err(|e| format!("cannot create topic {topic} on the mock: {e}"))?;
    Ok((mock.bootstrap_servers(), topic))
}

async fn kafka_raw(
    target: Result<(String, String), String>,
    n: usize,
    window: usize,
    patience: Duration,
) -> Result<Duration, String> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

    let (servers, topic) = target?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", unique("bench-raw"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let consumer = Arc::new(consumer);
    // Start at the partition's current end, as Micro's subscriber does.
    let (c, t) = (consumer.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        let (_, high) = c
            .fetch_watermarks(&t, 0, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {t}: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Offset(high))
            .map_err(|e| format!("assignment: {e}"))?;
        c.assign(&tpl).map_err(|e| format!("assign: {e}"))
    })
    .await
    .map_err(|e| format!("assigning panicked: {e}"))??;
    let tally = Tally::new(n);
    let (c, t2) = (consumer.clone(), tally.clone());
    let reader = tokio::spawn(async move {
        while t2.received() < t2.target {
            match c.recv().await {
                Ok(m) => t2.hit(m.payload().map_or(0, <[u8]>::len)),
                Err(e) => eprintln!("micro-bench: raw kafka consumer: {e}"),
            }
        }
    });

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let body = vec![7u8; MESSAGE_BYTES];
    let result = pump(n, window, &tally, patience, |_| {
        let record = FutureRecord::<(), [u8]>::to(&topic)
            .payload(&body[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "Content-Type",
                value: Some(CONTENT_TYPE),
            }));
        let sent = producer.send(record, Duration::from_secs(30));
        async move {
            sent.await
                .map(|_| ())
                .map_err(|(e, _)| format!("publish: {e}"))
        }
    })
    .await;
    reader.abort();
    result
}

async fn kafka_micro(
    target: Result<(String, String), String>,
    n: usize,
    window: usize,
    patience: Duration,
) -> Result<Duration, String> {
    use micro_broker_kafka::{KafkaBroker, KafkaOptions, TopicCreation};

    let (servers, topic) = target?;
    let broker = KafkaBroker::new(KafkaOptions {
        topic_creation: TopicCreation::AutoCreate,
        ..KafkaOptions::from_brokers(&servers)
    })
    .map_err(|e| e.to_string())?;
    broker_round(&broker, &topic, n, window, patience).await
}

/// Connects, subscribes a counter, publishes through `Broker::publish`, disconnects.
async fn broker_round(
    broker: &dyn Broker,
    topic: &str,
    n: usize,
    window: usize,
    patience: Duration,
) -> Result<Duration, String> {
    broker
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tally = Tally::new(n);
    let sub = broker
        .subscribe(
            topic,
            counting_handler(tally.clone()),
            SubscribeOptions::default(),
        )
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let body = Bytes::from(vec![7u8; MESSAGE_BYTES]);
    let result = pump(n, window, &tally, patience, |_| {
        let msg = micro_message(&body);
        async move {
            broker
                .publish(topic, msg)
                .await
                .map_err(|e| format!("publish: {e}"))
        }
    })
    .await;
    let _ = sub.unsubscribe().await;
    let _ = broker.disconnect().await;
    result
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The raw runs' own exchange, declared like Micro's (`micro`): a non-durable topic exchange.
const RAW_EXCHANGE: &str = "micro-bench-raw";

async fn rabbit_raw(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};

    let err = |what: &'static str| move |e: lapin::Error| format!("{what}: {e}");
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .map_err(err("connect"))?;
    let topic = unique("bench");

    // The consumer: its own channel, prefetch 64, an exclusive server-named queue.
    let rx = conn.create_channel().await.map_err(err("channel"))?;
    rx.basic_qos(64, BasicQosOptions::default())
        .await
        .map_err(err("qos"))?;
    rx.exchange_declare(
        RAW_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(err("exchange"))?;
    let queue = rx
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(err("queue"))?;
    rx.queue_bind(
        queue.name().clone(),
        RAW_EXCHANGE.into(),
        topic.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(err("bind"))?;
    let mut consumer = rx
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err("consume"))?;
    let tally = Tally::new(n);
    let t2 = tally.clone();
    let reader = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            match delivery {
                Ok(d) => {
                    let len = d.data.len();
                    if let Err(e) = d.ack(BasicAckOptions::default()).await {
                        eprintln!("micro-bench: raw lapin ack: {e}");
                    }
                    t2.hit(len);
                }
                Err(e) => eprintln!("micro-bench: raw lapin consumer: {e}"),
            }
            if t2.received() >= t2.target {
                break;
            }
        }
    });

    // The publisher: a confirm-mode channel, persistent messages with a header.
    let tx = conn.create_channel().await.map_err(err("channel"))?;
    tx.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err("confirms"))?;
    let mut headers = FieldTable::default();
    headers.insert(
        "Content-Type".into(),
        AMQPValue::LongString(CONTENT_TYPE.into()),
    );
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_headers(headers);
    let body = vec![7u8; MESSAGE_BYTES];
    let result = pump(n, window, &tally, patience, |_| {
        let (tx, props, body, topic) = (&tx, props.clone(), &body, &topic);
        async move {
            let confirm = tx
                .basic_publish(
                    RAW_EXCHANGE.into(),
                    topic.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .map_err(|e| format!("publish: {e}"))?;
            match confirm.await.map_err(|e| format!("confirm: {e}"))? {
                Confirmation::Nack(_) => Err("RabbitMQ nacked a message".to_string()),
                _ => Ok(()),
            }
        }
    })
    .await;
    reader.abort();
    let _ = conn.close(200, "done".into()).await;
    result
}

async fn rabbit_micro(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};

    let broker =
        RabbitBroker::new(RabbitOptions::from_address(AMQP_URL)).map_err(|e| e.to_string())?;
    broker_round(&broker, &unique("bench"), n, window, patience).await
}

// ---------------------------------------------------------------------------------------------
// NATS

const NATS_ADDR: &str = "127.0.0.1:4222";

async fn nats_raw(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    let client = async_nats::connect(NATS_ADDR)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let subject = unique("bench");
    let mut sub = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    // The server has the subscription once a flush came back.
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    let tally = Tally::new(n);
    let t2 = tally.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            t2.hit(m.payload.len());
            if t2.received() >= t2.target {
                break;
            }
        }
    });
    let body = Bytes::from(vec![7u8; MESSAGE_BYTES]);
    let result = pump(n, window, &tally, patience, |_| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", CONTENT_TYPE);
        let (client, subject, body) = (&client, &subject, body.clone());
        async move {
            client
                .publish_with_headers(subject.clone(), headers, body)
                .await
                .map_err(|e| format!("publish: {e}"))
        }
    })
    .await;
    reader.abort();
    result
}

async fn nats_micro(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    use micro_broker_nats::{NatsBroker, NatsOptions};

    let broker =
        NatsBroker::new(NatsOptions::from_address(NATS_ADDR)).map_err(|e| e.to_string())?;
    broker_round(&broker, &unique("bench"), n, window, patience).await
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn http_raw(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let tally = Tally::new(n);
    let t2 = tally.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tally = t2.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tally = tally.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            tally.hit(body.len());
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::new())))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri: http::Uri = format!("http://{addr}/")
        .parse()
        .map_err(|e| format!("uri: {e}"))?;
    let body = Bytes::from(vec![7u8; MESSAGE_BYTES]);
    let result = pump(n, window, &tally, patience, |_| {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(body.clone()));
        let client = &client;
        async move {
            let req = req.map_err(|e| format!("request: {e}"))?;
            let rsp = client
                .request(req)
                .await
                .map_err(|e| format!("POST: {e}"))?;
            let status = rsp.status();
            rsp.into_body()
                .collect()
                .await
                .map_err(|e| format!("reply: {e}"))?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the server answered {status}"))
            }
        }
    })
    .await;
    server.abort();
    result
}

async fn http_micro(n: usize, window: usize, patience: Duration) -> Result<Duration, String> {
    use micro_broker_http::{HttpBroker, HttpBrokerOptions};

    let registry: Arc<dyn micro::core::Registry> = Arc::new(micro::registry::MemoryRegistry::new());
    let broker =
        HttpBroker::new(registry, HttpBrokerOptions::default()).map_err(|e| e.to_string())?;
    broker_round(&broker, &unique("bench"), n, window, patience).await
}
