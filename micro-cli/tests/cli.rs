//! The `micro` binary, run as its own process against greeter services in this process: on
//! mDNS (loopback) with one mucp and one gRPC node, and on a private etcd with pub/sub over the
//! http broker and a registry watch. Output and exit status are checked, and so are the
//! errors a user meets (unknown service or endpoint, bad JSON, a dead node, a usage error).

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::micro;
use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::{plugins, Service};
use micro_conformance::program::output_within;
use micro_registry_etcd::testing::EtcdServer;
use serde_json::Value;

/// Every wait in these tests ends within this.
const BOUND: Duration = Duration::from_secs(30);

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `micro` to its end (bounded), with `input` on its standard input.
fn run(args: &[&str], input: Option<&str>) -> Output {
    output_within(micro(args), input.map(str::as_bytes), BOUND)
}

/// `&str`s of `args`, for [`run`].
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Runs `micro` until it succeeds (a new service may still be announcing itself), bounded.
fn run_until_ok(args: &[&str]) -> Output {
    let deadline = Instant::now() + BOUND;
    loop {
        let out = run(args, None);
        if out.status.success() {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "micro {args:?} kept failing: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A greeter called `name` on `registry` and `transport`, started.
async fn greeter(name: &str, registry: &str, address: Option<&str>, transport: &str) -> Service {
    let registry = plugins::registry(registry, address).expect("the registry");
    let service = Service::builder(name)
        .ignore_env()
        .registry(registry)
        .transport(plugins::transport(transport).expect("the transport"))
        .handler(greeter_handler(GreeterService))
        .build()
        .expect("build the greeter");
    service.start().await.expect("start the greeter");
    service
}

/// A child process that is killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `micro args` in the background; its stdout lines arrive on the channel, and the
/// first line of its stderr is awaited (the subscription or watch has started then).
fn background(args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = micro(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start micro");
    let out = child.stdout.take().expect("stdout");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let (ready, started) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = err.read_line(&mut first);
        let _ = ready.send(first);
        // Keep reading so the child never blocks on a full pipe.
        let _ = err.read_to_end(&mut Vec::new());
    });
    let first = started
        .recv_timeout(BOUND)
        .expect("micro said nothing on stderr");
    assert!(
        first.starts_with("subscribed to")
            || first.starts_with("watching")
            || first.starts_with("gateway at"),
        "micro {args:?} did not start: {first}"
    );
    (Running(child), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_mucp_and_grpc_nodes_over_mdns() -> TestResult {
    let name = format!("cli-greeter-{}", std::process::id());
    let mucp = greeter(&name, "mdns", None, "http").await;
    let grpc = greeter(&name, "mdns", None, "grpc").await;
    let with = |args: &[&str]| -> Vec<String> {
        ["--registry", "mdns"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let result = tokio::task::spawn_blocking(move || -> TestResult {
        let call = |v: Vec<String>| run_until_ok(&strs(&v));

        // Both nodes are listed once both announced themselves.
        let deadline = Instant::now() + BOUND;
        loop {
            let out = call(with(&["-o", "json", "services"]));
            let listed: Value = serde_json::from_str(&stdout(&out))?;
            let nodes = listed
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["service"] == name.as_str()))
                .map(|r| r["nodes"].clone());
            if nodes == Some(Value::from(2)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "services never showed 2 nodes: {listed}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let table = stdout(&call(with(&["services"])));
        assert!(table.starts_with("SERVICE"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&name) && l.ends_with(" 2")),
            "{table}"
        );

        let described: Value =
            serde_json::from_str(&stdout(&call(with(&["describe", &name, "-o", "json"]))))?;
        let endpoints: Vec<&str> = described[0]["endpoints"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(endpoints.contains(&"Greeter.Hello"), "{described}");
        let protocols: Vec<&str> = described[0]["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|n| n["metadata"]["protocol"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(protocols.len(), 2, "{described}");
        assert!(
            protocols.contains(&"grpc") && protocols.contains(&"mucp"),
            "{described}"
        );
        let text = stdout(&call(with(&["describe", &name])));
        assert!(text.contains("HelloRequest{name string}"), "{text}");

        // Calls reach either node, each with its own transport; a few tries meet both.
        for _ in 0..4 {
            let reply = call(with(&[
                "call",
                &name,
                "Greeter.Hello",
                r#"{"name":"John"}"#,
            ]));
            let reply: Value = serde_json::from_str(&stdout(&reply))?;
            assert_eq!(reply["message"], "Hello John");
        }
        let from_stdin = run(
            &strs(&with(&["call", &name, "Greeter.Hello"])),
            Some(r#"{"name":"Stdin"}"#),
        );
        assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
        assert!(stdout(&from_stdin).contains("Hello Stdin"));

        let streamed = call(with(&[
            "stream",
            &name,
            "Greeter.Stream",
            r#"{"name":"S","count":2}"#,
        ]));
        assert_eq!(
            stdout(&streamed),
            "{\"message\":\"Hello S #1\"}\n{\"message\":\"Hello S #2\"}"
        );
        let chat = run(
            &strs(&with(&["stream", &name, "Greeter.Chat"])),
            Some("{\"name\":\"a\"}\n{\"name\":\"b\"}\n"),
        );
        assert!(chat.status.success(), "{}", stderr(&chat));
        assert_eq!(
            stdout(&chat),
            "{\"message\":\"Hello a\"}\n{\"message\":\"Hello b\"}"
        );

        let health = call(with(&["health", &name, "-o", "json"]));
        let health: Value = serde_json::from_str(&stdout(&health))?;
        let statuses: Vec<(&str, &str)> = health
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| Some((r["protocol"].as_str()?, r["status"].as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(statuses.len(), 2, "{health}");
        assert!(statuses.iter().all(|(_, s)| *s == "SERVING"), "{health}");

        // The gateway, in its own process, reaches the same nodes; curl calls it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let (_gateway, _) = background(&strs(&with(&["gateway", "--address", &address])));
        let mut curl = Command::new("curl");
        curl.args(["-s", "--max-time", "20", "-d", r#"{"name":"Gateway"}"#])
            .arg(format!("http://{address}/api/{name}/Greeter.Hello"));
        let reply = output_within(curl, None, BOUND);
        let reply: Value = serde_json::from_slice(&reply.stdout)?;
        assert_eq!(reply["message"], "Hello Gateway", "{reply}");

        // What a user gets wrong: each a clear message and exit status 1 (2 for usage).
        let expect_failure = |args: Vec<String>, says: &str| {
            let joined = strs(&args);
            let out = run(&joined, None);
            assert_eq!(out.status.code(), Some(1), "{joined:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(says), "{joined:?}: {}", stderr(&out));
        };
        expect_failure(
            with(&["call", &name, "Greeter.Hello", r#"{"name":""}"#]),
            "400 Bad Request",
        );
        expect_failure(
            with(&["call", &name, "Greeter.Nope", "{}"]),
            "404 Not Found",
        );
        expect_failure(
            with(&["call", "no-such-service", "Greeter.Hello", "{}"]),
            "no-such-service",
        );
        expect_failure(
            with(&["call", &name, "Greeter.Hello", "{bad"]),
            "not valid JSON",
        );
        expect_failure(
            with(&[
                "call",
                &name,
                "Greeter.Hello",
                "{}",
                "--address",
                "127.0.0.1:1",
            ]),
            "127.0.0.1:1",
        );
        expect_failure(with(&["describe", "no-such-service"]), "404");
        let usage = run(&["--registy", "mdns", "services"], None);
        assert_eq!(usage.status.code(), Some(2));
        assert!(stderr(&usage).contains("--registry"), "{}", stderr(&usage));
        Ok(())
    })
    .await?;
    grpc.stop().await?;
    mucp.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_publish_and_subscribe_over_etcd() -> TestResult {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return Ok(());
    };
    let address = etcd.address();
    let flags: Vec<String> = ["--registry", "etcd", "--registry_address", &address]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let with = move |args: &[&str]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    };
    let name = format!("cli-etcd-greeter-{}", std::process::id());

    // The watch sees the service arrive.
    let watch_args = with(&["registry", "watch", &name, "--count", "1", "-o", "json"]);
    let (_watch, events) = background(&strs(&watch_args));
    let service = greeter(&name, "etcd", Some(&address), "http").await;
    let event = events.recv_timeout(BOUND)?;
    let event: Value = serde_json::from_str(&event)?;
    assert_eq!(event["action"], "create", "{event}");
    assert_eq!(event["service"]["name"], name.as_str(), "{event}");

    let result = tokio::task::spawn_blocking(move || -> TestResult {
        let go = |v: Vec<String>| run(&strs(&v), None);
        let reply = go(with(&[
            "call",
            &name,
            "Greeter.Hello",
            r#"{"name":"etcd"}"#,
        ]));
        assert!(reply.status.success(), "{}", stderr(&reply));
        assert!(stdout(&reply).contains("Hello etcd"));

        // A subscriber on the http broker (found through etcd) gets what is published.
        let topic = format!("cli.test.{}", std::process::id());
        let sub_args = with(&["subscribe", &topic, "--count", "1", "-o", "json"]);
        let (_subscriber, messages) = background(&strs(&sub_args));
        let published = go(with(&["publish", &topic, r#"{"id":"42"}"#]));
        assert!(published.status.success(), "{}", stderr(&published));
        let message: Value = serde_json::from_str(&messages.recv_timeout(BOUND)?)?;
        assert_eq!(
            message["body"],
            serde_json::json!({"id": "42"}),
            "{message}"
        );
        assert_eq!(message["topic"], topic.as_str());
        assert_eq!(
            message["header"]["Content-Type"], "application/json",
            "{message}"
        );

        let bad = go(with(&["publish", &topic, "not json"]));
        assert_eq!(bad.status.code(), Some(1));
        assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));
        Ok(())
    })
    .await?;
    service.stop().await?;
    result
}

#[test]
fn completions_for_bash() {
    let bash = run(&["completions", "bash"], None);
    assert!(bash.status.success());
    assert!(
        stdout(&bash).contains("_micro()"),
        "no bash completion function"
    );
    let help = stdout(&run(&["--help"], None));
    for command in [
        "services",
        "describe",
        "call",
        "stream",
        "publish",
        "subscribe",
        "health",
    ] {
        assert!(help.contains(command), "--help lacks {command}:\n{help}");
    }
}

#[test]
fn a_dead_registry_is_a_clear_error_not_a_hang() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let address = format!("127.0.0.1:{port}");
    let out = run(
        &[
            "--registry",
            "etcd",
            "--registry_address",
            &address,
            "services",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("micro: "), "{}", stderr(&out));
}

#[test]
fn publish_and_subscribe_over_nats() {
    // The machine's NATS (the test script starts it); the registry is not needed by NATS.
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        let required = std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1");
        assert!(
            !required,
            "MICRO_TEST_REQUIRE_SERVICES=1 but NATS is not on 127.0.0.1:4222"
        );
        eprintln!("skipping: NATS is not on 127.0.0.1:4222");
        return;
    }
    let nats = [
        "--registry",
        "memory",
        "--broker",
        "nats",
        "--broker_address",
        "127.0.0.1:4222",
    ];
    let topic = format!("cli.nats.{}", std::process::id());
    let mut args: Vec<&str> = nats.to_vec();
    args.extend(["subscribe", &topic, "--count", "2"]);
    let (_subscriber, messages) = background(&args);
    for body in [r#"{"n":1}"#, r#"{"n":2}"#] {
        let mut args: Vec<&str> = nats.to_vec();
        args.extend(["publish", &topic, body]);
        let out = run(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let got: Vec<String> = (0..2)
        .map(|_| messages.recv_timeout(BOUND).expect("a message over NATS"))
        .collect();
    assert_eq!(got, [r#"{"n":1}"#, r#"{"n":2}"#]);
}

/// `micro mcp` speaks MCP's JSON-RPC on standard input and output, and nothing else goes to
/// standard output.
#[test]
fn mcp_answers_json_rpc_on_stdio() {
    let input = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    ]
    .join("\n")
        + "\n";
    let out = run(&["--registry", "memory", "mcp"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line of stdout is JSON-RPC"))
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "micro-mcp");
    assert_eq!(answers[1]["id"], 2);
    assert!(answers[1]["result"]["tools"].is_array(), "{answers:?}");
}
