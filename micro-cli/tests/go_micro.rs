//! `micro` drives a Go Micro service: the registry entry is the one Go Micro v4 writes to etcd
//! (byte for byte, `"metadata":null` included, see INTEROP.md), and the node is a double of Go
//! Micro's mucp server on a raw socket: it answers `POST /` as Go Micro does (status 200, the
//! JSON codec's trailing newline, errors in `Micro-Error`, a bare string for an unknown
//! method) and records what `micro` sent.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_conformance::program::output_within;
use micro_registry_etcd::testing::EtcdServer;
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(30);

/// The requests the double received: (its head's lines, body).
type Seen = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// Serves Go Micro's mucp on a loopback port until the test ends; returns its address.
fn go_micro_server(seen: Seen) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let seen = seen.clone();
            std::thread::spawn(move || serve(stream, seen));
        }
    });
    address
}

/// One keep-alive connection: answers requests until the peer closes it.
fn serve(stream: TcpStream, seen: Seen) {
    let _ = stream.set_read_timeout(Some(BOUND));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let header = |name: &str| {
            head.iter().find_map(|l| {
                let (key, value) = l.split_once(": ")?;
                key.eq_ignore_ascii_case(name).then(|| value.to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).to_string();
        let endpoint = header("micro-endpoint").unwrap_or_default();
        seen.lock()
            .expect("seen")
            .push((head.clone(), body.clone()));
        let (reply, error) = match endpoint.as_str() {
            "Greeter.Hello" => {
                let name = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["name"].as_str().map(str::to_string))
                    .unwrap_or_default();
                (format!("{{\"msg\":\"Hello {name}\"}}\n"), None)
            }
            // A handler slower than the caller's deadline.
            "Greeter.Slow" => {
                std::thread::sleep(Duration::from_secs(3));
                ("{}\n".to_string(), None)
            }
            "Debug.Health" => ("{\"status\":\"ok\"}\n".to_string(), None),
            other => (
                String::new(),
                Some(format!("rpc: can't find method {other}")),
            ),
        };
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reply.len()
        );
        if let Some(error) = error {
            response.push_str(&format!("Micro-Error: {error}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&reply);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn micro(args: &[&str]) -> Output {
    output_within(common::micro(args), None, BOUND)
}

#[tokio::test]
async fn micro_calls_describes_and_checks_a_go_micro_service(
) -> Result<(), Box<dyn std::error::Error>> {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return Ok(());
    };
    let seen: Seen = Arc::default();
    let node = go_micro_server(seen.clone());
    // What Go Micro v4.11 writes for its helloworld service (INTEROP.md), at this node.
    let id = "helloworld-41d122df-e93b-4a05-bd85-e4215f8bb8c9";
    let entry = format!(
        r#"{{"name":"helloworld","version":"latest","metadata":null,"endpoints":[{{"request":{{"name":"Request","type":"Request","values":[{{"name":"name","type":"string","values":null}}]}},"response":{{"name":"Response","type":"Response","values":[{{"name":"msg","type":"string","values":null}}]}},"metadata":{{"description":"say hello"}},"name":"Greeter.Hello"}}],"nodes":[{{"metadata":{{"broker":"http","protocol":"mucp","registry":"etcd","server":"mucp","transport":"http"}},"id":"{id}","address":"{node}"}}]}}"#
    );
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    client
        .put(format!("/micro/registry/helloworld/{id}"), entry, None)
        .await?;

    let address = etcd.address();
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let run = |args: &[&str]| {
            let mut all = vec!["--registry", "etcd", "--registry_address", address.as_str()];
            all.extend_from_slice(args);
            micro(&all)
        };
        let text = |out: &Output| String::from_utf8_lossy(&out.stdout).to_string();
        let err = |out: &Output| String::from_utf8_lossy(&out.stderr).to_string();

        let listed = run(&["services"]);
        assert!(
            text(&listed)
                .lines()
                .any(|l| l.starts_with("helloworld") && l.ends_with(" 1")),
            "{}",
            text(&listed)
        );

        let described = run(&["describe", "helloworld"]);
        let described = text(&described);
        assert!(described.contains("Request{name string}"), "{described}");
        assert!(described.contains("description=say hello"), "{described}");

        let reply = run(&[
            "call",
            "helloworld",
            "Greeter.Hello",
            r#"{"name":"John"}"#,
            "-H",
            "Trace-Id=t-1",
        ]);
        assert!(reply.status.success(), "{}", err(&reply));
        let reply: Value = serde_json::from_str(&text(&reply)).map_err(|e| e.to_string())?;
        assert_eq!(reply["msg"], "Hello John");

        // What reached the Go Micro server: Go Micro's request headers and the metadata.
        let requests = seen.lock().map_err(|e| e.to_string())?.clone();
        let (head, body) = requests
            .iter()
            .find(|(head, _)| {
                head.iter()
                    .any(|l| l.eq_ignore_ascii_case("micro-endpoint: Greeter.Hello"))
            })
            .ok_or("the call never reached the server")?;
        for expected in [
            "POST / HTTP/1.1",
            "Micro-Service: helloworld",
            "Micro-Method: Greeter.Hello",
            "Content-Type: application/json",
            "Trace-Id: t-1",
        ] {
            let found = head.iter().any(|l| l.eq_ignore_ascii_case(expected));
            assert!(found, "{expected} missing from {head:?}");
        }
        for name in ["micro-id: ", "timeout: "] {
            let found = head
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with(name));
            assert!(found, "{name} missing from {head:?}");
        }
        assert_eq!(body, r#"{"name":"John"}"#);

        let health = run(&["health", "helloworld"]);
        assert!(health.status.success(), "{}", err(&health));
        assert!(text(&health).contains("SERVING"), "{}", text(&health));

        let slow = run(&[
            "call",
            "helloworld",
            "Greeter.Slow",
            "{}",
            "--timeout",
            "300ms",
        ]);
        assert_eq!(slow.status.code(), Some(1));
        assert!(err(&slow).contains("408"), "{}", err(&slow));

        let missing = run(&["call", "helloworld", "Greeter.Nope", "{}"]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(
            err(&missing).contains("can't find method Greeter.Nope"),
            "{}",
            err(&missing)
        );
        Ok(())
    })
    .await?;
    result.map_err(Into::into)
}
