//! The web dashboard against a real greeter and gateway on loopback, in a real browser:
//! Debian's `chromium`, headless, driven over WebDriver (`chromedriver`, started here on a
//! free loopback port) by fantoccini. The pages' HTML (without JavaScript), escaping and
//! auth are checked with curl.
//!
//! Needs `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`;
//! `scripts/test.sh` installs them). Without them the browser tests say why and pass, unless
//! `MICRO_TEST_REQUIRE_SERVICES=1`, where they fail. Screenshots of each page go to
//! `${MICRO_TEST_ARTIFACTS:-target/test-artifacts}/dashboard/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::core::registry::{Node, RegisterOptions, Service as Registration};
use micro_gateway::{Auth, GatewayOptions};
use serde_json::json;

mod common;

use common::{curl, greeter_behind_gateway, TestResult, BOUND};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// Why the browser cannot run, if it cannot.
fn browser_missing() -> Option<String> {
    if !std::path::Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing; install it with `apt-get install chromium chromium-driver`"
        ));
    }
    match Command::new(CHROMEDRIVER).arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{CHROMEDRIVER} does not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!(
            "{CHROMEDRIVER} cannot run ({e}); install it with `apt-get install chromium-driver`"
        )),
    }
}

/// A headless chromium under a chromedriver of its own; the driver's process group is
/// killed when dropped, whatever the test did.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser, or `None` (after saying why) when there is none and none is required.
    async fn start() -> Result<Option<Browser>, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(why) = browser_missing() {
            assert!(
                !micro_conformance::services_required(),
                "MICRO_TEST_REQUIRE_SERVICES=1 but {why}"
            );
            eprintln!("skipping the browser test: {why}");
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn()?;
        let profile = tempfile::tempdir()?;
        let mut browser = Browser {
            client: None,
            driver,
            _profile: profile,
        };
        browser.wait_for_port(port).await?;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--window-size=1280,1200",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            BOUND,
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .map_err(|_| "chromium did not start within the bound")??;
        browser.client = Some(client);
        Ok(Some(browser))
    }

    /// Waits until chromedriver takes connections (or has died), within [`BOUND`].
    async fn wait_for_port(&mut self, port: u16) -> TestResult {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.driver.try_wait()? {
                return Err(format!("chromedriver exited: {status}").into());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("chromedriver did not listen on port {port}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("connected in start")
    }

    /// Ends the session (chromium quits), then the driver.
    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(BOUND, client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any chromium it left behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots go.
fn artifacts() -> PathBuf {
    let root = std::env::var_os("MICRO_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
        });
    root.join("dashboard")
}

async fn screenshot(client: &Client, name: &str) -> TestResult {
    let png = client.screenshot().await?;
    let dir = artifacts();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}

/// Waits, within [`BOUND`], for an element (XPath, so that text can be part of the wait).
async fn wait_for(client: &Client, xpath: &str) -> Result<fantoccini::elements::Element, String> {
    client
        .wait()
        .at_most(BOUND)
        .every(Duration::from_millis(50))
        .for_element(Locator::XPath(xpath))
        .await
        .map_err(|e| format!("no {xpath} within {BOUND:?}: {e}"))
}

/// The form control that the label starting with `label` is for.
async fn labelled(client: &Client, label: &str) -> Result<fantoccini::elements::Element, String> {
    let xpath = format!("//label[starts-with(normalize-space(.), '{label}')]");
    let found = wait_for(client, &xpath).await?;
    let id = found
        .attr("for")
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the label {label:?} is for no control"))?;
    client
        .find(Locator::Id(&id))
        .await
        .map_err(|e| format!("the label {label:?} is for #{id}, which is missing: {e}"))
}

async fn text_of(client: &Client, id: &str) -> Result<String, String> {
    let element = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| e.to_string())?;
    element.text().await.map_err(|e| e.to_string())
}

async fn value_of(client: &Client, id: &str) -> Result<String, String> {
    let element = client
        .find(Locator::Id(id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(element
        .prop("value")
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default())
}

/// A second greeter-like service called `name` on the greeter's registry and broker.
async fn another(greeter: &micro::Service, name: &str) -> micro::Result<micro::Service> {
    let service = micro::Service::builder(name)
        .ignore_env()
        .registry(greeter.registry().clone())
        .broker(greeter.broker().clone())
        .handler(greeter_handler(GreeterService))
        .build()?;
    service.start().await?;
    Ok(service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_page_lists_filters_and_follows_the_registry() -> TestResult {
    let Some(browser) = Browser::start().await? else {
        return Ok(());
    };
    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let spare = another(&greeter, "spare").await?;
    let base = format!("http://{}", gateway.local_addr());
    let client = browser.client();

    client.goto(&format!("{base}/")).await?;
    wait_for(
        client,
        "//tr[@data-service='greeter']/td[contains(@class, 'health')][.='serving']",
    )
    .await?;
    wait_for(client, "//tr[@data-service='spare']").await?;
    wait_for(client, "//p[@id='live'][@data-state='live']").await?;
    let versions = text_of(client, "service-rows").await?;
    assert!(versions.contains("latest"), "{versions}");
    screenshot(client, "services").await?;

    // The text filter hides what does not match, as you type.
    let filter = labelled(client, "Filter by name").await?;
    filter.send_keys("spa").await?;
    let greeter_row = client
        .find(Locator::Css("tr[data-service='greeter']"))
        .await?;
    let deadline = tokio::time::Instant::now() + BOUND;
    while greeter_row.is_displayed().await? {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter did not hide greeter"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spare_row = client
        .find(Locator::Css("tr[data-service='spare']"))
        .await?;
    assert!(spare_row.is_displayed().await?);
    filter.clear().await?;

    // A server that stops leaves the list by itself.
    spare.stop().await?;
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let left = client
            .find_all(Locator::Css("tr[data-service='spare']"))
            .await?;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped service is still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(client, "//tr[@data-service='greeter']").await?;

    browser.close().await;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_forms_call_the_service_and_show_replies_and_errors() -> TestResult {
    let Some(browser) = Browser::start().await? else {
        return Ok(());
    };
    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let base = format!("http://{}", gateway.local_addr());
    let client = browser.client();

    // The service page: nodes and endpoints with their shapes.
    client
        .goto(&format!("{base}/dashboard/service/greeter"))
        .await?;
    for endpoint in [
        "Greeter.Hello",
        "Greeter.Stream",
        "Greeter.Chat",
        "Greeter.Collect",
    ] {
        wait_for(
            client,
            &format!("//table[@id='endpoints']//a[.='{endpoint}']"),
        )
        .await?;
    }
    wait_for(
        client,
        "//table[@id='endpoints']//tr[@data-endpoint='Greeter.Stream']/td[.='stream']",
    )
    .await?;
    wait_for(
        client,
        "//code[contains(., '{name: string, count: integer}')]",
    )
    .await?;
    wait_for(
        client,
        "//table[contains(@class, 'nodes')]//td[.='serving']",
    )
    .await?;
    screenshot(client, "service").await?;

    // Greeter.Hello, reached from its link.
    client
        .find(Locator::XPath(
            "//table[@id='endpoints']//a[.='Greeter.Hello']",
        ))
        .await?
        .click()
        .await?;
    let name = labelled(client, "name").await?;
    name.send_keys("Ada").await?;
    client.find(Locator::Id("call")).await?.click().await?;
    wait_for(client, "//pre[@id='reply'][contains(., 'Hello Ada')]").await?;
    let outcome = text_of(client, "outcome").await?;
    assert!(outcome.starts_with("200 OK in "), "{outcome}");
    let curl_line = value_of(client, "curl-line").await?;
    assert_eq!(
        curl_line,
        format!("curl -d '{{\"name\":\"Ada\"}}' {base}/api/greeter/Greeter.Hello")
    );
    let micro_line = value_of(client, "micro-line").await?;
    assert_eq!(
        micro_line,
        "micro call greeter Greeter.Hello '{\"name\":\"Ada\"}'"
    );
    screenshot(client, "endpoint").await?;

    // An empty name: the greeter's 400, code and detail.
    name.clear().await?;
    client.find(Locator::Id("call")).await?.click().await?;
    wait_for(client, "//dd[@id='error-code'][starts-with(., '400')]").await?;
    let detail = text_of(client, "error-detail").await?;
    assert_eq!(detail, "name must not be empty");
    assert_eq!(text_of(client, "error-id").await?, "greeter.Greeter.Hello");
    let reply_shown = client
        .find(Locator::Id("reply"))
        .await?
        .is_displayed()
        .await?;
    assert!(!reply_shown, "the last reply is still shown with the error");
    screenshot(client, "endpoint-error").await?;

    // Greeter.Stream: every reply, as it arrives.
    client
        .goto(&format!("{base}/dashboard/service/greeter/Greeter.Stream"))
        .await?;
    labelled(client, "name").await?.send_keys("Bo").await?;
    labelled(client, "count").await?.send_keys("3").await?;
    assert_eq!(
        value_of(client, "request-json").await?,
        "{\"name\":\"Bo\",\"count\":3}"
    );
    client.find(Locator::Id("call")).await?.click().await?;
    wait_for(client, "//p[@id='outcome'][starts-with(., '3 replies in')]").await?;
    let replies = client.find_all(Locator::Css("#replies li")).await?;
    let mut texts = Vec::new();
    for reply in replies {
        texts.push(reply.text().await?);
    }
    assert_eq!(
        texts,
        [1, 2, 3].map(|i| format!("{{\"message\":\"Hello Bo #{i}\"}}"))
    );
    assert!(value_of(client, "micro-line")
        .await?
        .starts_with("micro stream greeter Greeter.Stream"));
    screenshot(client, "stream").await?;

    browser.close().await;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

/// A described field of a registered message.
fn shape(
    name: &str,
    kind: &str,
    values: Vec<micro::core::registry::Value>,
) -> micro::core::registry::Value {
    micro::core::registry::Value {
        name: name.into(),
        kind: kind.into(),
        values,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_build_nested_fields_lists_and_enums_from_the_keyboard() -> TestResult {
    let Some(browser) = Browser::start().await? else {
        return Ok(());
    };
    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    // A registration only (no node answers): the form is what is tested.
    let inner = shape(
        "inner",
        "Inner",
        vec![shape("id", "int64", vec![]), shape("on", "bool", vec![])],
    );
    let part = vec![shape("size", "int32", vec![])];
    let request = shape(
        "MakeRequest",
        "MakeRequest",
        vec![
            shape("title", "string", vec![]),
            shape("tags", "[]string", vec![]),
            inner,
            shape("parts", "[]Part", part),
            shape("labels", "map<string, int32>", vec![]),
            shape(
                "mood",
                "Mood",
                vec![shape("HAPPY", "enum", vec![]), shape("SAD", "enum", vec![])],
            ),
        ],
    );
    let shapes = Registration {
        name: "shapes".into(),
        version: "1.0.0".into(),
        endpoints: vec![micro::core::registry::Endpoint {
            name: "Shapes.Make".into(),
            request: Some(request),
            response: Some(shape("MakeReply", "MakeReply", vec![])),
            metadata: Default::default(),
        }],
        nodes: vec![Node {
            id: "shapes-1".into(),
            address: "127.0.0.1:9".into(),
            metadata: Default::default(),
        }],
        ..Registration::default()
    };
    greeter
        .registry()
        .register(&shapes, RegisterOptions::default())
        .await?;
    let base = format!("http://{}", gateway.local_addr());
    let client = browser.client();
    client
        .goto(&format!("{base}/dashboard/service/shapes/Shapes.Make"))
        .await?;

    labelled(client, "title").await?.send_keys("T").await?;
    // "Add" puts the new item's field under the keyboard.
    let add_tag = client
        .find(Locator::Css("fieldset[data-name='tags'] > button.add"))
        .await?;
    for tag in ["a", "b", "c"] {
        add_tag.click().await?;
        client.active_element().await?.send_keys(tag).await?;
    }
    let remove = client
        .find(Locator::Css(
            "fieldset[data-name='tags'] li:last-child button.remove",
        ))
        .await?;
    remove.click().await?;
    labelled(client, "id").await?.send_keys("42").await?;
    labelled(client, "on").await?.click().await?;
    client
        .find(Locator::Css("fieldset[data-name='parts'] > button.add"))
        .await?
        .click()
        .await?;
    labelled(client, "size").await?.send_keys("7").await?;
    labelled(client, "labels")
        .await?
        .send_keys("{\"k\": 1}")
        .await?;
    labelled(client, "mood")
        .await?
        .select_by_label("SAD")
        .await?;
    assert_eq!(
        value_of(client, "request-json").await?,
        r#"{"title":"T","tags":["a","b"],"inner":{"id":"42","on":true},"parts":[{"size":7}],"labels":{"k":1},"mood":"SAD"}"#
    );
    screenshot(client, "form").await?;

    browser.close().await;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_event_appears_in_a_subscribed_view() -> TestResult {
    let Some(browser) = Browser::start().await? else {
        return Ok(());
    };
    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let base = format!("http://{}", gateway.local_addr());
    let client = browser.client();

    client.goto(&format!("{base}/dashboard/events")).await?;
    let subscribe_topic = client.find(Locator::Id("subscribe-topic")).await?;
    subscribe_topic.send_keys("dashboard.greetings").await?;
    client.find(Locator::Id("subscribe")).await?.click().await?;
    wait_for(
        client,
        "//p[@id='subscribe-status'][@data-state='subscribed']",
    )
    .await?;

    labelled(client, "Topic")
        .await?
        .send_keys("dashboard.greetings")
        .await?;
    let body = labelled(client, "Message (JSON)").await?;
    body.clear().await?;
    body.send_keys("{\"hello\": \"world\"}").await?;
    client.find(Locator::Id("publish")).await?.click().await?;
    wait_for(
        client,
        "//p[@id='publish-result'][starts-with(., 'Published')]",
    )
    .await?;
    wait_for(client, "//ol[@id='messages']/li[.='{\"hello\":\"world\"}']").await?;

    // One published from a service arrives too.
    greeter
        .client()
        .with_content_type("application/json")
        .publish(
            "dashboard.greetings",
            &micro::Json(json!({"from": "greeter"})),
        )
        .await?;
    wait_for(
        client,
        "//ol[@id='messages']/li[.='{\"from\":\"greeter\"}']",
    )
    .await?;
    screenshot(client, "events").await?;

    // Unsubscribing ends the stream.
    client
        .find(Locator::Id("unsubscribe"))
        .await?
        .click()
        .await?;
    wait_for(client, "//p[@id='subscribe-status'][.='Not subscribed.']").await?;

    browser.close().await;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

/// `curl` off the test's runtime.
async fn fetch(args: &[&str], url: String) -> common::Answer {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args, &url)
    })
    .await
    .expect("curl ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_work_without_javascript_and_escape_what_the_registry_says() -> TestResult {
    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let base = format!("http://{}", gateway.local_addr());

    let page = fetch(&[], format!("{base}/")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert!(
        page.body
            .contains("<a href=\"/dashboard/service/greeter\">greeter</a>"),
        "{}",
        page.body
    );
    assert!(page.body.contains(">serving</td>"), "{}", page.body);
    assert!(page.body.contains("<label for=\"filter\">"));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no outside asset: {}",
        page.body
    );

    // The filter works on the server too.
    let filtered = fetch(&[], format!("{base}/?q=nothing-like-it")).await;
    assert!(
        !filtered.body.contains("data-service=\"greeter\""),
        "{}",
        filtered.body
    );

    let service = fetch(&[], format!("{base}/dashboard/service/greeter")).await;
    assert_eq!(service.status, 200);
    assert!(service.body.contains("Greeter.Hello") && service.body.contains("Greeter.Stream"));
    let form = fetch(
        &[],
        format!("{base}/dashboard/service/greeter/Greeter.Hello"),
    )
    .await;
    assert!(form.body.contains("data-name=\"name\""), "{}", form.body);
    let missing = fetch(&[], format!("{base}/dashboard/service/nobody")).await;
    assert_eq!(missing.status, 404);
    assert!(missing
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let assets = fetch(&[], format!("{base}/dashboard/assets/dashboard.js")).await;
    assert_eq!(assets.status, 200);

    // A hostile registration is shown as text.
    let hostile = Registration {
        name: "<script>alert(1)</script>".into(),
        version: "\"><img src=x onerror=alert(2)>".into(),
        nodes: vec![Node {
            id: "evil-1".into(),
            address: "127.0.0.1:9".into(),
            metadata: [(
                "note".to_string(),
                "<b onmouseover=alert(3)>x</b>".to_string(),
            )]
            .into(),
        }],
        ..Registration::default()
    };
    greeter
        .registry()
        .register(&hostile, RegisterOptions::default())
        .await?;
    let page = fetch(&[], format!("{base}/")).await;
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(
        page.body
            .contains("href=\"/dashboard/service/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\""),
        "{}",
        page.body
    );
    let page = fetch(
        &[],
        format!("{base}/dashboard/service/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("&lt;b onmouseover=alert(3)&gt;x&lt;/b&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b onmouseover"), "{}", page.body);
    assert!(
        page.body.contains("not serving"),
        "an unreachable node: {}",
        page.body
    );

    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_auth_rules_and_can_be_off() -> TestResult {
    // Off: `/` is no route.
    let off = GatewayOptions {
        dashboard: false,
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = greeter_behind_gateway("greeter", off).await?;
    let page = fetch(&[], format!("http://{}/", gateway.local_addr())).await;
    assert_eq!(page.status, 404, "{}", page.body);
    gateway.shutdown().await;
    greeter.stop().await?;

    // With tokens: the pages need Gateway.Dashboard and Gateway.Services.
    let auth = |public: &[&str]| {
        let mut auth = Auth::tokens([("s3cret", Vec::<String>::new())]);
        for rule in public {
            auth = auth.public(rule);
        }
        GatewayOptions {
            auth: Some(auth),
            ..GatewayOptions::default()
        }
    };
    for (public, status) in [
        (&[][..], 401),
        (&["Gateway.Dashboard"][..], 401),
        (&["Gateway.Dashboard", "Gateway.Services"][..], 200),
    ] {
        let (gateway, greeter) = greeter_behind_gateway("greeter", auth(public)).await?;
        let url = format!("http://{}/", gateway.local_addr());
        let page = fetch(&[], url.clone()).await;
        assert_eq!(page.status, status, "public {public:?}: {}", page.body);
        assert!(page
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")));
        let with_token = fetch(&["-H", "Authorization: Bearer s3cret"], url).await;
        assert_eq!(with_token.status, 200, "{}", with_token.body);
        if status == 200 {
            assert!(
                page.body.contains("id=\"token\""),
                "the token field: {}",
                page.body
            );
        }
        gateway.shutdown().await;
        greeter.stop().await?;
    }
    Ok(())
}

/// Reads from `socket` into `seen` until it holds `wanted`, within [`BOUND`].
async fn read_until(
    socket: &mut tokio::net::TcpStream,
    seen: &mut Vec<u8>,
    wanted: &str,
) -> TestResult {
    use tokio::io::AsyncReadExt as _;

    let mut chunk = [0u8; 4096];
    let reading = async {
        while !String::from_utf8_lossy(seen).contains(wanted) {
            let n = socket.read(&mut chunk).await?;
            if n == 0 || seen.len() > 1 << 20 {
                return Err(format!("the answer ended without {wanted:?}").into());
            }
            seen.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(BOUND, reading)
        .await
        .map_err(|_| format!("no {wanted:?} within {BOUND:?}"))?
}

/// The event subscription route without a browser, over a plain socket: the answer's head
/// comes once the subscription is made, then each message is a `data:` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_subscriptions_stream_messages() -> TestResult {
    use tokio::io::AsyncWriteExt as _;

    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let mut socket = tokio::net::TcpStream::connect(gateway.local_addr()).await?;
    socket
        .write_all(
            b"GET /event/sse.topic HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Accept: text/event-stream\r\n\r\n",
        )
        .await?;
    let mut seen = Vec::new();
    read_until(&mut socket, &mut seen, "\r\n\r\n").await?;
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    greeter
        .client()
        .with_content_type("application/json")
        .publish("sse.topic", &micro::Json(json!({"n": 1})))
        .await?;
    read_until(&mut socket, &mut seen, "data: {\"n\":1}").await?;
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.contains("data: {\"n\":1}"), "{text}");
    drop(socket);
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

/// A node that names its Prometheus endpoint in its metadata: the service page counts its
/// calls and errors by endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_page_counts_calls_from_the_nodes_metrics() -> TestResult {
    use micro_wrapper_prometheus::{Metrics, METADATA_KEY};

    let (gateway, greeter) = greeter_behind_gateway("greeter", GatewayOptions::default()).await?;
    let metrics = Metrics::new()?;
    let endpoint = metrics.serve("127.0.0.1:0").await?;
    let measured = micro::Service::builder("measured")
        .ignore_env()
        .registry(greeter.registry().clone())
        .broker(greeter.broker().clone())
        .handler_layer(metrics.clone())
        .node_metadata(METADATA_KEY, endpoint.url())
        .handler(greeter_handler(GreeterService))
        .build()?;
    measured.start().await?;
    let base = format!("http://{}", gateway.local_addr());
    for name in ["Ada", "Bo", ""] {
        fetch(
            &["-d", &json!({ "name": name }).to_string()],
            format!("{base}/api/measured/Greeter.Hello"),
        )
        .await;
    }

    let page = fetch(&[], format!("{base}/dashboard/service/measured")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(
            "<tr data-endpoint=\"Greeter.Hello\"><th scope=\"row\">Greeter.Hello</th>\
             <td class=\"calls\">3</td><td class=\"errors\">1</td>"
        ),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(&html_escaped(&endpoint.url())),
        "the node's metadata: {}",
        page.body
    );
    let counts = fetch(&[], format!("{base}/dashboard/metrics/measured")).await;
    assert_eq!(
        counts.json()["endpoints"]["Greeter.Hello"],
        json!({"calls": 3, "errors": 1})
    );
    // The greeter names no metrics: no table.
    let page = fetch(&[], format!("{base}/dashboard/service/greeter")).await;
    assert!(!page.body.contains("id=\"metrics\""), "{}", page.body);

    measured.stop().await?;
    endpoint.shutdown();
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A memory broker that counts the subscriptions open on it.
#[derive(Debug, Default)]
struct CountingBroker {
    inner: micro::broker::MemoryBroker,
    open: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Counted {
    inner: Box<dyn micro::core::broker::Subscription>,
    open: Arc<AtomicUsize>,
}

#[micro::async_trait]
impl micro::core::broker::Subscription for Counted {
    fn topic(&self) -> &str {
        self.inner.topic()
    }

    async fn unsubscribe(&self) -> micro::Result<()> {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.inner.unsubscribe().await
    }
}

#[micro::async_trait]
impl micro::core::Broker for CountingBroker {
    fn name(&self) -> &str {
        "counting"
    }

    fn address(&self) -> String {
        self.inner.address()
    }

    async fn connect(&self) -> micro::Result<()> {
        self.inner.connect().await
    }

    async fn disconnect(&self) -> micro::Result<()> {
        self.inner.disconnect().await
    }

    async fn publish(&self, topic: &str, msg: micro::core::broker::Message) -> micro::Result<()> {
        self.inner.publish(topic, msg).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: micro::core::broker::Handler,
        opts: micro::core::broker::SubscribeOptions,
    ) -> micro::Result<Box<dyn micro::core::broker::Subscription>> {
        let inner = self.inner.subscribe(topic, handler, opts).await?;
        self.open.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Counted {
            inner,
            open: self.open.clone(),
        }))
    }
}

/// Subscriptions are bounded, and each ends (unsubscribed from the broker) when its client
/// goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_subscriptions_are_bounded_and_end_with_their_client() -> TestResult {
    use tokio::io::AsyncWriteExt as _;

    let broker = Arc::new(CountingBroker::default());
    let open = broker.open.clone();
    let service = micro::Service::builder("micro.gateway")
        .ignore_env()
        .registry(Arc::new(micro::registry::MemoryRegistry::new()))
        .broker(broker)
        .build()?;
    let gateway =
        micro_gateway::Gateway::bind("127.0.0.1:0", &service, GatewayOptions::default()).await?;
    let address = gateway.local_addr();
    let subscribe = |topic: String| async move {
        let mut socket = tokio::net::TcpStream::connect(address).await?;
        let request = format!("GET /event/{topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        socket.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        read_until(&mut socket, &mut head, "\r\n\r\n").await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
            socket,
            String::from_utf8_lossy(&head).to_string(),
        ))
    };
    let mut clients = Vec::new();
    for n in 0..micro_gateway::MAX_SUBSCRIPTIONS {
        let (socket, head) = subscribe(format!("bounded.{n}")).await?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        clients.push(socket);
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        micro_gateway::MAX_SUBSCRIPTIONS
    );
    let (_, refused) = subscribe("one.too.many".into()).await?;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    drop(clients);
    let deadline = tokio::time::Instant::now() + BOUND;
    while open.load(Ordering::SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscriptions outlived their clients",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Their places are free again.
    let (_again, head) = subscribe("bounded.again".into()).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    gateway.shutdown().await;
    Ok(())
}
