//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use micro_core::transport::Message;
use micro_core::{rpc, Result};

use crate::HttpOptions;

/// One stream message as a frame, as the streams write it.
pub fn encode_frame(msg: &Message, opts: &HttpOptions) -> Result<Bytes> {
    crate::frame::encode(msg, opts)
}

/// The frame parser of the streams, fed bytes by hand.
pub struct FrameDecoder(crate::frame::FrameDecoder);

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameDecoder")
    }
}

impl FrameDecoder {
    /// A decoder with the limits of `opts`.
    pub fn new(opts: &HttpOptions) -> Self {
        FrameDecoder(crate::frame::FrameDecoder::new(opts, "fuzz".into()))
    }

    /// Appends bytes received.
    pub fn push(&mut self, data: &[u8]) {
        self.0.push(data);
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn parse(&mut self) -> Result<Option<Message>> {
        self.0.parse()
    }

    /// The body ended: an error when it ended inside a frame.
    pub fn end(&self) -> Result<()> {
        self.0.end()
    }
}

/// The typed request and timeout a unary request's HTTP head carries.
pub fn request_of(headers: &HeaderMap, body: Bytes) -> Result<(rpc::Request, Option<Duration>)> {
    crate::headers::request_of(headers, body)
}

/// The HTTP head the client writes for a unary request.
pub fn request_head(req: &rpc::Request, timeout: Duration) -> Result<HeaderMap> {
    crate::headers::request_head(req, timeout)
}
