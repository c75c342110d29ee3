//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use micro_core::broker::Message;
use micro_core::{MetadataLimits, Result};
use rdkafka::message::{Header, OwnedHeaders};

/// Record headers as (name, value) pairs, a value possibly absent.
pub type RecordHeaders<'a> = [(&'a str, Option<&'a [u8]>)];

/// The message a subscriber delivers for a record with these headers (name, value), key and
/// payload.
pub fn record_message(
    headers: Option<&RecordHeaders<'_>>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    key_header: Option<&str>,
    limits: MetadataLimits,
) -> Result<Message> {
    let owned = headers.map(|hs| {
        hs.iter().fold(
            OwnedHeaders::new_with_capacity(hs.len()),
            |acc, (key, value)| acc.insert(Header { key, value: *value }),
        )
    });
    crate::subscriber::record_message(owned.as_ref(), key, payload, key_header, limits)
}

/// A message published and received again: its record headers as the publisher writes
/// them, read as a subscriber reads them.
pub fn round_trip(msg: &Message, limits: MetadataLimits) -> Result<Message> {
    let headers = crate::broker::record_headers(msg)?;
    crate::subscriber::record_message(Some(&headers), None, Some(&msg.body), None, limits)
}
