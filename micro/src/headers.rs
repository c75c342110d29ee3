//! Header names of Go Micro's mucp protocol, and turning metadata into headers and back.

use micro_core::{Error, Metadata};

pub use micro_core::headers::*;

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
