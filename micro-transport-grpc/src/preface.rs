//! The HTTP/2 client preface, read by the listener itself so that a connection that never
//! sends it (or sends it a byte at a time) is closed after a bound, then handed on to hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first 24 bytes of `io` (fewer if it ends first) within `limit` and gives back
/// a stream that yields them again before the rest. `None` when the limit passed, the peer
/// closed before sending anything, or reading failed. Bytes that are not the preface are
/// handed on all the same: hyper answers them as it would any bad start.
pub(crate) async fn read_preface<I>(mut io: I, limit: Duration) -> Option<Rewind<I>>
where
    I: AsyncRead + Unpin,
{
    let mut head = [0u8; PREFACE.len()];
    let mut len = 0;
    let read = async {
        while len < head.len() {
            match io.read(&mut head[len..]).await? {
                0 => break,
                n => len += n,
            }
        }
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) if len > 0 => Some(Rewind {
            head,
            len,
            pos: 0,
            io,
        }),
        _ => None,
    }
}

/// A stream whose first bytes were read already: they come out again first.
pub(crate) struct Rewind<I> {
    head: [u8; PREFACE.len()],
    len: usize,
    pos: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.head[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_bytes_read_come_out_again_before_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(PREFACE).await.unwrap_or_default();
        client.write_all(b"rest").await.unwrap_or_default();
        drop(client);
        let rewound = read_preface(server, Duration::from_secs(5)).await;
        let mut all = Vec::new();
        let Some(mut rewound) = rewound else {
            panic!("no preface read");
        };
        rewound.read_to_end(&mut all).await.unwrap_or_default();
        assert_eq!(all, [&PREFACE[..], b"rest"].concat());
    }

    #[tokio::test]
    async fn a_peer_that_sends_part_of_it_and_stops_is_given_up_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"PRI * HT").await.unwrap_or_default();
        let read = read_preface(server, Duration::from_millis(50)).await;
        assert!(read.is_none());
        drop(client);
    }

    #[tokio::test]
    async fn a_short_start_then_close_is_handed_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /").await.unwrap_or_default();
        drop(client);
        let read = read_preface(server, Duration::from_secs(5)).await;
        assert!(read.is_some_and(|r| r.len == 5));
    }
}
