//! What the RabbitMQ tests share: finding the server, private vhosts, collecting handlers.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use micro_core::broker::{Delivery, Handler};
use tokio::sync::mpsc;

/// Where the tests expect RabbitMQ (the project's machines run it there).
pub const ADDRESS: &str = "127.0.0.1:5672";
/// How long any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Whether RabbitMQ answers on 127.0.0.1:5672. When it does not, the test fails if
/// MICRO_TEST_REQUIRE_SERVICES=1 and is skipped (saying why) otherwise.
pub fn rabbitmq_up() -> bool {
    let addr: SocketAddr = match ADDRESS.parse() {
        Ok(a) => a,
        Err(_) => return false,
    };
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        return true;
    }
    let why = format!(
        "RabbitMQ is not reachable at {ADDRESS} (guest/guest): start it with \
         `rabbitmq-server -detached` (Debian package rabbitmq-server; scripts/test.sh does this)"
    );
    if std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// `rabbitmqctl` (in /usr/sbin, which a non-root PATH may lack).
fn rabbitmqctl() -> Command {
    let path = if std::path::Path::new("/usr/sbin/rabbitmqctl").exists() {
        "/usr/sbin/rabbitmqctl"
    } else {
        "rabbitmqctl"
    };
    Command::new(path)
}

/// Runs `rabbitmqctl args...` off the async threads; panics with its output on failure.
pub async fn ctl(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = args.join(" ");
    let out = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || rabbitmqctl().args(&args).output()),
    )
    .await
    .unwrap_or_else(|_| panic!("rabbitmqctl {shown}: no answer within {PATIENCE:?}"))
    .expect("rabbitmqctl task")
    .unwrap_or_else(|e| panic!("rabbitmqctl {shown}: cannot run it: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rabbitmqctl {shown} failed: {text}");
    text
}

/// A vhost of its own for one test, so that closing its connections disturbs nobody else;
/// deleted when dropped.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn create(prefix: &str) -> Vhost {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        ctl(&["add_vhost", &name]).await;
        let vhost = Vhost { name };
        ctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])
        .await;
        vhost
    }

    /// The AMQP URL of this vhost on the local RabbitMQ.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{ADDRESS}/{}", self.name)
    }

    /// Closes every client connection to this vhost, as an operator or a failover would.
    pub async fn close_connections(&self) -> String {
        ctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "test: connection closed on purpose",
        ])
        .await
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl().args(["delete_vhost", &self.name]).output();
    }
}

/// A handler that forwards every delivery to a channel.
pub fn collector() -> (Handler, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

/// The next delivery, failing the test after [`PATIENCE`].
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>, what: &str) -> Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing delivered within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the subscriber went away"))
}

/// A topic of its own for one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
