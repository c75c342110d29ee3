//! The framing of stream messages inside a long-lived HTTP/2 body:
//! `[u32 BE header length][header: JSON object of string to string][u32 BE body length][body]`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use micro_core::transport::Message;
use micro_core::{Error, Result};
use tokio::time::{timeout_at, Instant};

use crate::{HttpOptions, ID};

/// Encodes `msg` as one frame, refusing one the peer would refuse.
pub(crate) fn encode(msg: &Message, opts: &HttpOptions) -> Result<Bytes> {
    let header: BTreeMap<&str, &str> = msg.header.iter().collect();
    let header = serde_json::to_vec(&header)
        .map_err(|e| Error::internal(ID, format!("encoding a stream frame header: {e}")))?;
    if header.len() > opts.max_header_bytes {
        return Err(Error::payload_too_large(
            ID,
            format!(
                "stream message header of {} bytes exceeds the limit of {} bytes",
                header.len(),
                opts.max_header_bytes
            ),
        ));
    }
    if msg.body.len() > opts.max_body_bytes {
        return Err(Error::payload_too_large(
            ID,
            format!(
                "stream message body of {} bytes exceeds the limit of {} bytes",
                msg.body.len(),
                opts.max_body_bytes
            ),
        ));
    }
    let too_long = |_| Error::payload_too_large(ID, "stream message longer than 4 GiB");
    let header_len = u32::try_from(header.len()).map_err(too_long)?;
    let body_len = u32::try_from(msg.body.len()).map_err(too_long)?;
    let mut frame = BytesMut::with_capacity(8 + header.len() + msg.body.len());
    frame.put_u32(header_len);
    frame.put_slice(&header);
    frame.put_u32(body_len);
    frame.put_slice(&msg.body);
    Ok(frame.freeze())
}

/// Reads frames from the peer's body, one message at a time.
pub(crate) struct FrameReader {
    body: Incoming,
    decoder: FrameDecoder,
    ended: bool,
    // Once a frame is broken, the stream is: every later read reports the same error.
    broken: Option<Error>,
    // When the frame under way must be complete.
    deadline: Option<Instant>,
    frame_timeout: Duration,
}

/// The bytes of a stream received so far, and the frames in them: the half of
/// [`FrameReader`] that does not wait, so it can be fed bytes in any chunks (the fuzz targets
/// do).
pub(crate) struct FrameDecoder {
    buf: BytesMut,
    max_header: usize,
    max_headers: usize,
    max_body: usize,
    peer: String,
}

impl FrameReader {
    /// A reader of `body`; `first_within` bounds the wait for the first message (the server's
    /// for a stream's opening), later ones may be quiet for as long as they like.
    pub(crate) fn new(
        body: Incoming,
        opts: &HttpOptions,
        peer: String,
        first_within: Option<Duration>,
    ) -> Self {
        FrameReader {
            body,
            decoder: FrameDecoder::new(opts, peer),
            ended: false,
            broken: None,
            deadline: first_within.map(|d| Instant::now() + d),
            frame_timeout: opts.body_read_timeout,
        }
    }

    /// The next message; `None` once the peer ended its body between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Message>> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        match self.read().await {
            Ok(msg) => Ok(msg),
            Err(e) => {
                self.broken = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn read(&mut self) -> Result<Option<Message>> {
        let d = &mut self.decoder;
        loop {
            if let Some(msg) = d.parse()? {
                self.deadline = (!d.is_empty()).then(|| Instant::now() + self.frame_timeout);
                return Ok(Some(msg));
            }
            if self.ended {
                return d.end().map(|()| None);
            }
            // Waiting for the next message has no limit (streams may be quiet for long);
            // a message that has started must finish within the body timeout.
            let next = match self.deadline {
                None => Ok(self.body.frame().await),
                Some(deadline) => timeout_at(deadline, self.body.frame()).await,
            };
            match next {
                Err(_) => {
                    return Err(Error::timeout(
                        ID,
                        format!(
                            "stream message from {} did not arrive whole within {:?}",
                            d.peer, self.frame_timeout
                        ),
                    ))
                }
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    return Err(Error::internal(
                        ID,
                        format!("reading the stream from {}: {e}", d.peer),
                    ))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if d.is_empty() && !data.is_empty() {
                            self.deadline = Some(Instant::now() + self.frame_timeout);
                        }
                        d.push(&data);
                    }
                }
            }
        }
    }
}

impl FrameDecoder {
    pub(crate) fn new(opts: &HttpOptions, peer: String) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_header: opts.max_header_bytes,
            max_headers: opts.max_headers,
            max_body: opts.max_body_bytes,
            peer,
        }
    }

    /// Appends bytes received from the peer.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether no byte of a frame is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The peer ended its body: fine between frames, an error inside one.
    pub(crate) fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(self.error(format!(
            "stream from {} ended in the middle of a frame ({} bytes left over)",
            self.peer,
            self.buf.len()
        )))
    }

    /// Takes one whole frame off the buffer, if there is one.
    pub(crate) fn parse(&mut self) -> Result<Option<Message>> {
        let Some(header_len) = peek_u32(&self.buf, 0) else {
            return Ok(None);
        };
        if header_len > self.max_header {
            return Err(self.too_large("header", header_len, self.max_header));
        }
        let Some(body_len) = peek_u32(&self.buf, 4 + header_len) else {
            return Ok(None);
        };
        if body_len > self.max_body {
            return Err(self.too_large("body", body_len, self.max_body));
        }
        if self.buf.len() < 8 + header_len + body_len {
            return Ok(None);
        }
        self.buf.advance(4);
        let header = self.buf.split_to(header_len);
        self.buf.advance(4);
        let body = self.buf.split_to(body_len).freeze();
        let header: BTreeMap<String, String> = serde_json::from_slice(&header).map_err(|e| {
            self.error(format!(
                "stream message header from {} is not a JSON object of strings: {e}",
                self.peer
            ))
        })?;
        // Parsing that was bounded by the header's size; the count is bounded here.
        if header.len() > self.max_headers {
            return Err(Error::new(
                micro_core::metadata::TOO_MANY_HEADERS,
                micro_core::metadata::HEADERS_TOO_LARGE,
                format!(
                    "a stream message from {} carries {} header entries, more than the {} allowed (MICRO_MAX_HEADERS)",
                    self.peer,
                    header.len(),
                    self.max_headers
                ),
            ));
        }
        Ok(Some(Message {
            header: header.into_iter().collect(),
            body,
        }))
    }

    fn too_large(&self, part: &str, len: usize, limit: usize) -> Error {
        Error::payload_too_large(
            ID,
            format!(
                "stream message {part} of {len} bytes from {} exceeds the limit of {limit} bytes",
                self.peer
            ),
        )
    }

    fn error(&self, detail: String) -> Error {
        Error::bad_request(ID, detail)
    }
}

/// The big-endian u32 at `at`, if the buffer holds it.
fn peek_u32(buf: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(bytes)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let msg = Message {
            header: [("Micro-Stream", "1")].into_iter().collect(),
            body: Bytes::from_static(b"hi"),
        };
        let frame = encode(&msg, &HttpOptions::default()).unwrap_or_default();
        let header = br#"{"Micro-Stream":"1"}"#;
        let mut want = Vec::new();
        want.extend_from_slice(&(header.len() as u32).to_be_bytes());
        want.extend_from_slice(header);
        want.extend_from_slice(&2u32.to_be_bytes());
        want.extend_from_slice(b"hi");
        assert_eq!(&frame[..], &want[..]);
    }

    #[test]
    fn oversized_messages_are_refused_before_sending() {
        let opts = HttpOptions {
            max_body_bytes: 4,
            ..HttpOptions::default()
        };
        let msg = Message {
            header: Default::default(),
            body: Bytes::from_static(b"too long"),
        };
        let e = encode(&msg, &opts).err().unwrap_or_default();
        assert_eq!(e.code, 413);
    }

    #[test]
    fn peek_handles_short_and_huge_offsets() {
        assert_eq!(peek_u32(&[0, 0, 1], 0), None);
        assert_eq!(peek_u32(&[0, 0, 1, 0], 0), Some(256));
        assert_eq!(peek_u32(&[0, 0, 1, 0], usize::MAX - 1), None);
    }
}
