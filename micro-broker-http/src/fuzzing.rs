//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use std::borrow::Cow;

use micro_core::broker::Message;
use micro_core::{Error, MetadataLimits, Result};

use crate::wire::DecodeError;

/// The envelope Go Micro's http broker writes for `msg` on `topic`.
pub fn encode(topic: &str, msg: &Message) -> Vec<u8> {
    crate::wire::encode(topic, msg)
}

/// Reads an envelope as the receiving server does: headers past `limits` are the 431 the
/// server answers, anything else a 400 saying why.
pub fn decode(json: &[u8], limits: MetadataLimits) -> Result<Message> {
    crate::wire::decode(json, limits).map_err(error)
}

/// The general (serde_json) reader alone, errors as [`decode`]'s.
pub fn decode_general(json: &[u8], limits: MetadataLimits) -> Result<Message> {
    crate::wire::decode_general(json, limits).map_err(error)
}

fn error(e: DecodeError) -> Error {
    match e {
        DecodeError::Headers(e) => e,
        other => Error::bad_request("fuzz", other.to_string()),
    }
}

/// The compact reader alone: `None` when it leaves the envelope to the general reader.
pub fn decode_compact(json: &[u8], limits: MetadataLimits) -> Option<Result<Message>> {
    crate::wire::decode_compact(json, limits)
}

/// The value of `key` in a URL query, unescaped as Go's `url.QueryUnescape` does.
pub fn query_value<'q>(query: &'q str, key: &str) -> Option<Cow<'q, str>> {
    crate::wire::query_value(query, key)
}

/// `s` escaped as Go's `url.QueryEscape` does.
pub fn query_escape(s: &str) -> String {
    crate::wire::query_escape(s)
}
