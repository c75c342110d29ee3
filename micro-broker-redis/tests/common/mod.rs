//! What the Redis tests share: finding the server, test options, collecting handlers.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use micro_broker_redis::{RedisOptions, StreamOptions};
use micro_core::broker::{Delivery, Handler};
use tokio::sync::mpsc;

/// Where the tests expect Redis (the project's machines run it there).
pub const ADDRESS: &str = "127.0.0.1:6379";
/// How long any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// The key prefix of everything the tests write, apart from other users of the server.
pub const TEST_PREFIX: &str = "microtest:";

/// Whether Redis answers on 127.0.0.1:6379. When it does not, the test fails if
/// MICRO_TEST_REQUIRE_SERVICES=1 and is skipped (saying why) otherwise.
pub fn redis_up() -> bool {
    let Ok(addr) = ADDRESS.parse::<SocketAddr>() else {
        return false;
    };
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        return true;
    }
    let why = format!(
        "Redis is not reachable at {ADDRESS}: start it with `redis-server --bind 127.0.0.1 \
         --daemonize yes` (Debian package redis-server; scripts/test.sh does this)"
    );
    if micro_conformance::services_required() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Pub/sub options for the machine's Redis.
pub fn pubsub_options() -> RedisOptions {
    RedisOptions {
        key_prefix: TEST_PREFIX.into(),
        connect_timeout: Duration::from_secs(3),
        ..RedisOptions::from_address(ADDRESS)
    }
}

/// Streams options with quick redelivery and short streams.
pub fn streams_options() -> RedisOptions {
    pubsub_options().with_streams(StreamOptions {
        max_len: 1000,
        nack_delay: Duration::from_millis(100),
        block: Duration::from_millis(200),
        ..StreamOptions::default()
    })
}

/// A raw client of the machine's Redis, for what Go Micro (or anyone) would write.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{ADDRESS}"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("a raw Redis connection")
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

/// Nothing arrives while `quiet` passes.
pub async fn nothing(rx: &mut mpsc::UnboundedReceiver<Delivery>, quiet: Duration) -> bool {
    tokio::time::timeout(quiet, rx.recv()).await.is_err()
}

/// A topic of its own for one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
