//! What the test files share: options for the machine's NATS, and a sweep of streams that
//! earlier test runs left behind.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use micro_broker_nats::testing::running_server;
use micro_broker_nats::{JetStreamOptions, NatsOptions};

/// The prefix of every stream the tests create on the shared server.
pub(crate) const TEST_STREAM_PREFIX: &str = "MICROTEST";

/// Core NATS options for the machine's NATS; `None` when the test should skip (already said
/// why); a panic when services are required and NATS is missing.
pub(crate) fn core_options() -> Option<NatsOptions> {
    let address = running_server()?;
    Some(NatsOptions {
        connect_timeout: Duration::from_secs(3),
        ..NatsOptions::from_address(&address)
    })
}

/// JetStream options for the machine's NATS, with quick redelivery. Sweeps old test streams
/// first (once per test process).
pub(crate) async fn jetstream_options() -> Option<NatsOptions> {
    let opts = core_options()?;
    sweep_old_streams(&opts).await;
    Some(opts.with_jetstream(test_jetstream()))
}

/// JetStream settings for tests: their own stream prefix, quick nacks, short timeouts.
pub(crate) fn test_jetstream() -> JetStreamOptions {
    JetStreamOptions {
        stream_prefix: TEST_STREAM_PREFIX.into(),
        nack_delay: Duration::from_millis(100),
        request_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

/// Deletes test streams older than an hour: each check makes a stream of its own, and the
/// shared server keeps them. Streams of runs in progress are younger, so they stay.
async fn sweep_old_streams(opts: &NatsOptions) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let Ok(client) = async_nats::connect(opts.servers.clone()).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut old = Vec::new();
    let mut streams = js.streams();
    let listed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(info)) = streams.next().await {
            if info.config.name.starts_with(TEST_STREAM_PREFIX)
                && now - info.created.unix_timestamp() > 3600
            {
                old.push(info.config.name.clone());
            }
        }
    })
    .await;
    if listed.is_err() {
        return;
    }
    for name in old {
        let _ = tokio::time::timeout(Duration::from_secs(3), js.delete_stream(&name)).await;
    }
}
