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

/// Streams options with quick redelivery and short streams. Sweeps streams that earlier test
/// runs left behind first (once per test process).
pub fn streams_options() -> RedisOptions {
    sweep_old_streams();
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

/// Deletes test streams whose newest entry is more than ten minutes old: each check makes
/// streams of its own, and the shared server keeps them. Streams of runs in progress are
/// younger, so they stay.
fn sweep_old_streams() {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Ok(client) = redis::Client::open(format!("redis://{ADDRESS}")) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let Ok((now, _)) = redis::cmd("TIME").query::<(u64, u64)>(&mut conn) else {
        return;
    };
    let Ok(keys) = redis::cmd("KEYS")
        .arg(format!("{TEST_PREFIX}stream:*"))
        .query::<Vec<String>>(&mut conn)
    else {
        return;
    };
    for key in keys {
        // Only the id of the newest entry matters: `[[id, [field, value, ...]]]`.
        let newest: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut conn)
            .unwrap_or_default();
        let millis = newest
            .first()
            .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(millis / 1000) > 600 {
            let _ = redis::cmd("DEL").arg(&key).query::<i64>(&mut conn);
        }
    }
}
