//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use std::str::FromStr;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use micro_core::broker::Message;
use micro_core::{MetadataLimits, Result};

use crate::options::Envelope;

/// NATS headers made of `(name, value)` pairs, skipping those NATS cannot carry; `None` for
/// a message without headers.
pub fn headers(pairs: Option<&[(&str, &str)]>) -> Option<HeaderMap> {
    let pairs = pairs?;
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(name), HeaderValue::from_str(value)) {
            map.append(name, value);
        }
    }
    Some(map)
}

/// The message a subscriber delivers for a received NATS message.
pub fn incoming(
    headers: Option<&HeaderMap>,
    payload: Bytes,
    limits: MetadataLimits,
) -> Result<Message> {
    crate::wire::incoming(headers, payload, limits)
}

/// The NATS headers and payload a publisher sends `msg` with: Micro's headers when
/// `go_micro` is false, Go Micro's JSON envelope when true.
pub fn outgoing(go_micro: bool, msg: &Message) -> Result<(HeaderMap, Bytes)> {
    let envelope = if go_micro {
        Envelope::GoMicro
    } else {
        Envelope::Headers
    };
    crate::wire::outgoing(envelope, msg)
}
