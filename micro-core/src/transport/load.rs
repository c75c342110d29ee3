//! Bounds on what a server holds at once: connections ([`Connections`]), and calls in flight
//! with the request bytes they hold ([`Load`]). Past a bound a server refuses new work at once
//! (a closed connection, a `503`) rather than queueing it in memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Error, Result};

/// How much a server takes on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Calls (unary calls and streams) in flight at once; a call past it gets a `503`.
    pub max_calls: usize,
    /// Request bytes held at once by the unary calls in flight, counted as their bodies
    /// arrive; the call whose body would pass it gets a `503`.
    pub max_request_bytes: usize,
}

impl Default for LoadLimits {
    /// 10 000 calls and 256 MiB.
    fn default() -> Self {
        LoadLimits {
            max_calls: 10_000,
            max_request_bytes: 256 << 20,
        }
    }
}

/// The calls a server has in flight and the request bytes they hold, within [`LoadLimits`].
/// Transports ask it as each call arrives ([`Load::admit`]), before reading its body.
#[derive(Debug)]
pub struct Load {
    limits: LoadLimits,
    calls: AtomicUsize,
    bytes: AtomicUsize,
    id: String,
}

impl Load {
    /// A server's load within `limits`; `id` names the server in its `503`s.
    pub fn new(id: impl Into<String>, limits: LoadLimits) -> Arc<Load> {
        Arc::new(Load {
            limits,
            calls: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            id: id.into(),
        })
    }

    /// Takes one call on, or a `503` when [`LoadLimits::max_calls`] are in flight already.
    /// The call counts until the [`Admitted`] is dropped.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted> {
        let max = self.limits.max_calls;
        let taken = self
            .calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Error::new(
                &self.id,
                503,
                format!(
                    "the server is busy: {max} calls in flight already; try another node or later"
                ),
            ));
        }
        Ok(Admitted {
            load: Some(self.clone()),
            bytes: 0,
        })
    }

    /// Calls in flight now.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Acquire)
    }

    /// Request bytes held now.
    pub fn request_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The limits.
    pub fn limits(&self) -> LoadLimits {
        self.limits
    }
}

/// One call a [`Load`] took on; dropping it ends the call and frees the bytes it holds.
#[derive(Debug)]
pub struct Admitted {
    load: Option<Arc<Load>>,
    bytes: usize,
}

impl Admitted {
    /// A call outside any bound (for a handler without a [`Load`]).
    pub fn unbounded() -> Admitted {
        Admitted {
            load: None,
            bytes: 0,
        }
    }

    /// Counts `n` more request bytes held by this call, or a `503` when that would pass
    /// [`LoadLimits::max_request_bytes`] for the server (the bytes are then not counted).
    pub fn hold(&mut self, n: usize) -> Result<()> {
        let Some(load) = &self.load else {
            return Ok(());
        };
        let max = load.limits.max_request_bytes;
        let taken = load
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&total| total <= max)
            });
        if taken.is_err() {
            return Err(Error::new(
                &load.id,
                503,
                format!(
                    "the server is busy: the calls in flight hold {max} bytes of requests at most; try another node or later"
                ),
            ));
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            load.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
            load.calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The connections a server has open, at most a maximum: [`Connections::open`] gives a guard
/// per connection, or `None` when the server is full (the caller closes the new connection).
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: AtomicUsize,
}

impl Connections {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            open: AtomicUsize::new(0),
        })
    }

    /// Counts one more connection open until the guard is dropped, or `None` when `max` are.
    pub fn open(self: &Arc<Self>) -> Option<OpenConnection> {
        let max = self.max;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(OpenConnection(self.clone()))
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most that may be open at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection of [`Connections`]; dropping it counts it closed.
#[derive(Debug)]
pub struct OpenConnection(Arc<Connections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_get_a_503_until_one_ends() {
        let load = Load::new(
            "greeter",
            LoadLimits {
                max_calls: 2,
                max_request_bytes: 100,
            },
        );
        let a = load.admit().unwrap_or_else(|e| panic!("{e}"));
        let _b = load.admit().unwrap_or_else(|e| panic!("{e}"));
        let e = load.admit().err().unwrap_or_default();
        assert_eq!((e.code, e.id.as_str()), (503, "greeter"), "{e}");
        assert!(e.detail.contains("2 calls in flight"), "{e}");
        drop(a);
        assert!(load.admit().is_ok());
        assert_eq!(load.calls(), 1);
    }

    #[test]
    fn request_bytes_are_bounded_across_calls_and_freed_with_them() {
        let load = Load::new(
            "greeter",
            LoadLimits {
                max_calls: 10,
                max_request_bytes: 100,
            },
        );
        let mut a = load.admit().unwrap_or_else(|e| panic!("{e}"));
        let mut b = load.admit().unwrap_or_else(|e| panic!("{e}"));
        a.hold(60).unwrap_or_else(|e| panic!("{e}"));
        let e = b.hold(41).err().unwrap_or_default();
        assert_eq!(e.code, 503, "{e}");
        b.hold(40).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load.request_bytes(), 100);
        drop(a);
        assert_eq!((load.request_bytes(), load.calls()), (40, 1));
        b.hold(usize::MAX).err().unwrap_or_default();
        drop(b);
        assert_eq!((load.request_bytes(), load.calls()), (0, 0));
        Admitted::unbounded()
            .hold(usize::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn connections_are_counted_out_when_their_guard_drops() {
        let conns = Connections::new(1);
        let first = conns.open();
        assert!(first.is_some());
        assert!(conns.open().is_none());
        drop(first);
        assert!(conns.open().is_some());
        assert_eq!(conns.count(), 0);
    }
}
