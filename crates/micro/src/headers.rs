//! Header names of Go Micro's mucp protocol, and turning metadata into headers and back.

use micro_core::{Error, Metadata};

pub use micro_core::headers::*;

/// Reads a header in its `Micro-X` or `X-Micro-X` form.
pub fn get<'a>(header: &'a Metadata, name: &str) -> Option<&'a str> {
    header
        .get(name)
        .or_else(|| header.get(&format!("X-{name}")))
        .filter(|v| !v.is_empty())
}

/// Whether a header belongs to the protocol rather than to the caller's metadata.
pub fn is_protocol(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("micro-")
        || lower.starts_with("x-micro-")
        || matches!(
            lower.as_str(),
            "content-type" | "accept" | "timeout" | "content-length" | "accept-encoding" | "date"
        )
}

/// The metadata in a message header: everything that is not protocol.
pub fn metadata_of(header: &Metadata) -> Metadata {
    header.iter().filter(|(k, _)| !is_protocol(k)).collect()
}

/// The error a message carries, if any (`EOS` is not an error and gives `None`).
pub fn error_of(header: &Metadata) -> Option<Error> {
    match get(header, ERROR) {
        None | Some(EOS) => None,
        Some(text) => Some(Error::parse(text)),
    }
}

/// Whether a message ends its stream.
pub fn is_eos(header: &Metadata) -> bool {
    get(header, ERROR) == Some(EOS)
}
