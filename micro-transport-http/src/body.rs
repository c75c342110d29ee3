//! Reading bodies within limits, and a body fed from a channel for streams.

use std::any::Any;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use micro_core::transport::Admitted;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Longer than the limit; holds how many bytes were read before giving up (0 when the
    /// declared `Content-Length` already said so).
    TooLarge(u64),
    /// The deadline passed first.
    TimedOut,
    /// The connection failed.
    Failed(hyper::Error),
    /// The server holds as many request bytes as it may (its `503`).
    Busy(micro_core::Error),
}

/// Reads `body` whole, as long as it stays within `limit` bytes, arrives before `deadline` and
/// fits in what the server's load may still hold (each piece counted on `admitted` as it comes).
pub(crate) async fn read_to_limit(
    body: &mut Incoming,
    limit: usize,
    deadline: Instant,
    admitted: &mut Admitted,
) -> Result<Bytes, ReadError> {
    if body.size_hint().exact().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(0));
    }
    let mut parts: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Failed(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > limit {
                return Err(ReadError::TooLarge(len as u64));
            }
            admitted.hold(data.len()).map_err(ReadError::Busy)?;
            parts.push(data);
        }
    }
    // Most bodies arrive in one piece: hand that piece on without copying.
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    let mut whole = BytesMut::with_capacity(len);
    for part in parts {
        whole.extend_from_slice(&part);
    }
    Ok(whole.freeze())
}

/// Reads and discards the rest of `body`, `seen` bytes of which were read already. Returns the
/// body's total length if it ended within `cap` bytes and before `deadline`.
pub(crate) async fn drain(
    body: &mut Incoming,
    mut seen: u64,
    cap: usize,
    deadline: Instant,
) -> Option<u64> {
    loop {
        match timeout_at(deadline, body.frame()).await {
            Ok(None) => return Some(seen),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    seen += data.len() as u64;
                    if seen > cap as u64 {
                        return None;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return None,
        }
    }
}

/// A body whose data frames come from a channel: the sending half of a stream. It ends when
/// every sender is dropped.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    // Something that must live as long as the body, such as the server's "request in flight"
    // guard for its connection.
    _hold: Option<Box<dyn Any + Send + Sync>>,
}

impl ChannelBody {
    /// A body of capacity `buffer` frames, and the sender that feeds it.
    pub(crate) fn new(
        buffer: usize,
        hold: Option<Box<dyn Any + Send + Sync>>,
    ) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(buffer);
        (tx, ChannelBody { rx, _hold: hold })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}
