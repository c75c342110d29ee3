//! The publisher and subscriber binaries, as separate processes, on each broker the machine
//! has: http (found through mDNS on loopback), NATS, RabbitMQ, Redis, MQTT (Mosquitto) and
//! Kafka (librdkafka's mock cluster).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn reachable(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .is_ok()
}

fn spawn(bin: &str, env: &[(&str, &str)], args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin);
    for var in [
        "MICRO_BROKER",
        "MICRO_BROKER_ADDRESS",
        "MICRO_REGISTRY",
        "MICRO_MDNS_INTERFACE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Proc(cmd.spawn().unwrap_or_else(|e| panic!("start {bin}: {e}")))
}

/// A subscriber that exits after 3 messages, and a publisher that keeps publishing until then.
fn round_trip(broker_env: &[(&str, &str)], queue: bool) {
    let topic = format!(
        "example.test.{}.{}",
        std::process::id(),
        broker_env.first().map(|e| e.1).unwrap_or("x")
    );
    let mut sub_args = vec!["--topic", &topic, "--count", "3"];
    if queue {
        sub_args.extend(["--queue", "workers"]);
    }
    let mut subscriber = spawn(
        env!("CARGO_BIN_EXE_pubsub-subscriber"),
        broker_env,
        &sub_args,
    );
    let _publisher = spawn(
        env!("CARGO_BIN_EXE_pubsub-publisher"),
        broker_env,
        &["--topic", &topic, "--count", "600", "--interval", "100ms"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = subscriber.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber did not get 3 messages within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "subscriber exited with {status}");
    let mut out = String::new();
    use std::io::Read;
    subscriber
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let received = out.lines().filter(|l| l.starts_with("received ")).count();
    assert!(received >= 3, "{out}");
}

#[test]
fn http_broker_over_mdns() {
    round_trip(&[("MICRO_BROKER", "http")], false);
    round_trip(&[("MICRO_BROKER", "http")], true);
}

#[test]
fn nats_broker() {
    if !reachable(4222) {
        assert!(!required(), "NATS is not running on 127.0.0.1:4222");
        eprintln!("SKIPPED: NATS is not running on 127.0.0.1:4222");
        return;
    }
    round_trip(
        &[
            ("MICRO_BROKER", "nats"),
            ("MICRO_BROKER_ADDRESS", "127.0.0.1:4222"),
        ],
        true,
    );
}

#[test]
fn rabbitmq_broker() {
    if !reachable(5672) {
        assert!(!required(), "RabbitMQ is not running on 127.0.0.1:5672");
        eprintln!("SKIPPED: RabbitMQ is not running on 127.0.0.1:5672");
        return;
    }
    round_trip(
        &[
            ("MICRO_BROKER", "rabbitmq"),
            ("MICRO_BROKER_ADDRESS", "127.0.0.1:5672"),
        ],
        true,
    );
}

#[test]
fn redis_broker() {
    if !reachable(6379) {
        assert!(!required(), "Redis is not running on 127.0.0.1:6379");
        eprintln!("SKIPPED: Redis is not running on 127.0.0.1:6379");
        return;
    }
    // Go Micro's pub/sub layout; queue groups share messages by claim keys.
    round_trip(
        &[
            ("MICRO_BROKER", "redis"),
            ("MICRO_BROKER_ADDRESS", "127.0.0.1:6379"),
        ],
        true,
    );
}

#[test]
fn mqtt_broker() {
    if !reachable(1883) {
        assert!(!required(), "no MQTT server on 127.0.0.1:1883");
        eprintln!("SKIPPED: no MQTT server on 127.0.0.1:1883");
        return;
    }
    // The queue group is a shared subscription.
    round_trip(
        &[
            ("MICRO_BROKER", "mqtt"),
            ("MICRO_BROKER_ADDRESS", "127.0.0.1:1883"),
        ],
        true,
    );
}

#[test]
fn kafka_broker_on_a_mock_cluster() {
    // librdkafka's mock cluster listens on loopback for as long as this test process lives,
    // so the two child processes can use it like any Kafka cluster.
    let mock = rdkafka::mocking::MockCluster::new(1).expect("start the mock cluster");
    let servers = mock.bootstrap_servers();
    let env = [
        ("MICRO_BROKER", "kafka"),
        ("MICRO_BROKER_ADDRESS", servers.as_str()),
        // The mock has no CreateTopics API; it creates topics when asked for their metadata.
        ("MICRO_KAFKA_TOPIC_CREATION", "auto"),
    ];
    round_trip(&env, true);
    round_trip(&env, false);
}
