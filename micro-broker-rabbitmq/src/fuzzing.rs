//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use lapin::types::parsing::parse_field_table;
use lapin::types::ShortString;
use lapin::BasicProperties;
use micro_core::{Metadata, MetadataLimits, Result};

/// The headers of a received message whose header table is `table` in AMQP's wire encoding
/// (parsed by lapin's own parser), with `content_type` as its AMQP content type; `None` when
/// `table` is not a field table.
pub fn from_wire(
    table: &[u8],
    content_type: Option<&str>,
    limits: MetadataLimits,
) -> Option<Result<Metadata>> {
    let (_, table) = parse_field_table(table).ok()?;
    let mut props = BasicProperties::default().with_headers(table);
    if let Some(ct) = content_type.and_then(|c| ShortString::try_new(c).ok()) {
        props = props.with_content_type(ct);
    }
    Some(crate::headers::from_properties(&props, limits))
}

/// A message's headers published and received again; the error says which header AMQP
/// cannot carry.
pub fn round_trip(
    header: &Metadata,
    limits: MetadataLimits,
) -> std::result::Result<Metadata, String> {
    let props = crate::headers::to_properties(header, false)?;
    crate::headers::from_properties(&props, limits).map_err(|e| e.to_string())
}
