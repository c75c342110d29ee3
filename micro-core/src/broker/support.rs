//! What broker plugins share around their subscriptions: running a handler so that its panic
//! is an error, and the delays between reconnects.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;

use super::{Delivery, Handler};
use crate::{Error, Result};

/// Runs `handler` on `delivery`; a panic (making the future or running it) becomes an
/// internal error from `id`, so one bad message cannot end a subscription.
pub async fn call_handler(handler: &Handler, delivery: Delivery, id: &str) -> Result<()> {
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
        Ok(future) => future,
        Err(panic) => return Err(panicked(panic, id)),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(panicked(panic, id)),
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>, id: &str) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    Error::internal(id, format!("the subscriber panicked: {what}"))
}

/// Reconnect delays: 100 ms doubling to 5 s, back to 100 ms after [`Backoff::reset`].
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = Duration::from_millis(100u64.saturating_mul(1 << self.attempt.min(6)));
        self.attempt = self.attempt.saturating_add(1);
        delay.min(Duration::from_secs(5))
    }

    /// Starts again from the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
