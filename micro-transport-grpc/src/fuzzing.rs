//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use std::time::Duration;

use http::HeaderMap;
use micro_core::{Error, Metadata, Result};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::wire;

/// Reads a `grpc-timeout` value.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    wire::parse_grpc_timeout(value)
}

/// Writes a `grpc-timeout` value.
pub fn format_grpc_timeout(timeout: Duration) -> String {
    wire::format_grpc_timeout(timeout)
}

/// Reads Micro's `Timeout` header of a message.
pub fn timeout_of(header: &Metadata) -> Result<Option<Duration>> {
    wire::timeout_of(header)
}

/// The endpoint a gRPC method path names.
pub fn endpoint_of_path(path: &str) -> Option<String> {
    wire::endpoint_of_path(path)
}

/// The gRPC method path of an endpoint.
pub fn method_path(
    endpoint: &str,
    proto_service: Option<&str>,
    service: Option<&str>,
) -> Result<String> {
    wire::method_path(endpoint, proto_service, service)
}

/// The application metadata of a request's gRPC headers.
pub fn metadata_of_headers(headers: &HeaderMap) -> Metadata {
    wire::metadata_of_headers(headers)
}

/// The error a message header carries (`EOS` is none).
pub fn error_of(header: &Metadata) -> Option<Error> {
    wire::error_of(header)
}

/// The status a server ends a call with for `error`, as its parts: the code, the message and
/// the `micro-error` trailer when there is one.
pub fn status_of_error(error: &Error) -> (i32, String, Option<Vec<u8>>) {
    let status = wire::status_of_error(error);
    let trailer = status
        .metadata()
        .get(wire::ERROR_TRAILER)
        .map(|v| v.as_bytes().to_vec());
    (status.code() as i32, status.message().to_string(), trailer)
}

/// The error a client reads from a status with these parts (an unknown code is `Unknown`; a
/// trailer that cannot be a header value is left off).
pub fn error_of_status(code: i32, message: &str, trailer: Option<&[u8]>, id: &str) -> Error {
    let mut metadata = MetadataMap::new();
    if let Some(v) = trailer.and_then(|t| MetadataValue::try_from(t).ok()) {
        metadata.insert(wire::ERROR_TRAILER, v);
    }
    let status = Status::with_metadata(Code::from_i32(code), message.to_string(), metadata);
    wire::error_of_status(&status, id)
}
