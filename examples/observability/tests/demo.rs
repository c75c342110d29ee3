//! Runs the demo binary and checks what the README promises: one trace per order across
//! shop, broker, orders and inventory, and the Micro metrics on `/metrics`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn the_demo_prints_one_trace_per_order_and_the_metrics() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_observability-demo"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("METRICS_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the demo finishes within 60 s")
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // service, span, parent, kind, name: grouped by trace.
    let mut traces: BTreeMap<String, Vec<[String; 5]>> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.contains(" trace=")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |w: &str, key: &str| w.strip_prefix(key).unwrap_or_default().to_string();
        traces.entry(field(words[1], "trace=")).or_default().push([
            words[0].to_string(),
            field(words[2], "span="),
            field(words[3], "parent="),
            words[4].to_string(),
            words[5..].join(" "),
        ]);
    }
    assert_eq!(traces.len(), 3, "one trace per order:\n{stdout}");
    for spans in traces.values() {
        let what: Vec<String> = spans
            .iter()
            .map(|[service, _, _, kind, _]| format!("{service} {kind}"))
            .collect();
        assert_eq!(
            what,
            [
                "inventory server",
                "orders client",
                "orders client",
                "orders consumer",
                "shop producer",
                "shop internal"
            ],
            "{stdout}"
        );
        // Each span's parent is the next one printed (parents end after their children).
        for pair in spans.windows(2) {
            assert_eq!(pair[0][2], pair[1][1], "{stdout}");
        }
        assert!(spans[5][4].starts_with("checkout"));
    }

    let metric = |series: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{series} missing:\n{stdout}"))
            .to_string()
    };
    let subscriber = "micro_subscriber_messages_total";
    assert_eq!(
        metric(&format!(
            "{subscriber}{{code=\"200\",status=\"success\",topic=\"orders.placed\"}}"
        )),
        "2"
    );
    assert_eq!(
        metric(&format!(
            "{subscriber}{{code=\"409\",status=\"failure\",topic=\"orders.placed\"}}"
        )),
        "1"
    );
    let server = "micro_server_requests_total";
    assert_eq!(
        metric(&format!("{server}{{code=\"200\",endpoint=\"Inventory.Reserve\",service=\"inventory\",status=\"success\"}}")),
        "2"
    );
}
