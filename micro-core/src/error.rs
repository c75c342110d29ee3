use std::fmt;

use serde::{Deserialize, Serialize};

/// Go Micro's error: who raised it (`id`), an HTTP-like `code`, a `detail` for people and the
/// code's `status` text.
///
/// It travels in the `Micro-Error` header as JSON, e.g.
/// `{"id":"greeter.Greeter.Hello","code":400,"detail":"name is empty","status":"Bad Request"}`.
///
/// `Debug` reads like `Display` (`400 Bad Request from greeter.Greeter.Hello: name is empty`),
/// so that `fn main() -> micro::Result<()>` ends with a line a person can read; `{:#?}` shows
/// the fields.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Error {
    /// Who raised the error, usually `<service>.<Endpoint>` or `micro.client`.
    #[serde(default)]
    pub id: String,
    /// An HTTP status code: 400, 404, 408, 500 and so on.
    #[serde(default)]
    pub code: i32,
    /// What went wrong, for a person to read.
    #[serde(default)]
    pub detail: String,
    /// The standard text for `code` ("Not Found").
    #[serde(default)]
    pub status: String,
}

/// The gRPC status codes that [`Error`] maps to and from (numbering as in the gRPC spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Error {
    /// An error with the given id, code and detail; `status` is the code's standard text.
    pub fn new(id: impl Into<String>, code: i32, detail: impl Into<String>) -> Self {
        Error {
            id: id.into(),
            code,
            detail: detail.into(),
            status: status_text(code).to_string(),
        }
    }

    /// 400 for a setting that does not read or names nothing known (a `MICRO_*` variable, a
    /// flag, a plugin): its status reads `Invalid Configuration`, so a `main` that fails at
    /// start says `400 Invalid Configuration from micro.plugins: unknown registry "etcdd"; ..`.
    pub fn configuration(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            status: "Invalid Configuration".to_string(),
            ..Self::new(id, 400, detail)
        }
    }
    /// 400: the request was malformed.
    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 400, detail)
    }
    /// 401: the caller is not authenticated.
    pub fn unauthorized(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 401, detail)
    }
    /// 403: the caller may not do this.
    pub fn forbidden(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 403, detail)
    }
    /// 404: no such service, endpoint or thing.
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 404, detail)
    }
    /// 405: the method is not allowed.
    pub fn method_not_allowed(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 405, detail)
    }
    /// 408: the deadline passed.
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 408, detail)
    }
    /// 409: a conflict with the current state.
    pub fn conflict(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 409, detail)
    }
    /// 413: the request body is larger than the receiver accepts.
    pub fn payload_too_large(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 413, detail)
    }
    /// 500: the server failed, or the call could not be carried (a transport error).
    pub fn internal(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 500, detail)
    }

    /// Whether a client should retry the call on another node: 408, 500 (which covers transport
    /// errors), and 502/503/504 (a peer that is down or overloaded).
    pub fn is_retryable(&self) -> bool {
        matches!(self.code, 408 | 500 | 502 | 503 | 504)
    }

    /// The error as Go Micro's JSON.
    pub fn to_json(&self) -> String {
        // Serialising four plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an error as a peer sent it: Go Micro's JSON, or, when that does not parse, a bare
    /// string (Go Micro answers `rpc: can't find method X` that way), kept as the detail of a 500.
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str::<Error>(text) {
            Ok(mut e) if e.code != 0 || !e.id.is_empty() || !e.detail.is_empty() => {
                if e.code == 0 {
                    e.code = 500;
                }
                if e.status.is_empty() {
                    e.status = status_text(e.code).to_string();
                }
                e
            }
            _ => Error::internal("", text),
        }
    }

    /// The HTTP status for this error (500 when `code` is not one).
    pub fn http_status(&self) -> u16 {
        if (400..600).contains(&self.code) {
            self.code as u16
        } else {
            500
        }
    }

    /// The gRPC code for this error.
    pub fn grpc_code(&self) -> GrpcCode {
        match self.code {
            400 => GrpcCode::InvalidArgument,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::NotFound,
            405 | 501 => GrpcCode::Unimplemented,
            408 | 504 => GrpcCode::DeadlineExceeded,
            409 => GrpcCode::AlreadyExists,
            412 => GrpcCode::FailedPrecondition,
            413 | 429 | 431 => GrpcCode::ResourceExhausted,
            499 => GrpcCode::Cancelled,
            502 | 503 => GrpcCode::Unavailable,
            _ => GrpcCode::Internal,
        }
    }

    /// The Micro error for a gRPC status; `Unavailable` becomes a retryable 503.
    pub fn from_grpc(id: impl Into<String>, code: GrpcCode, detail: impl Into<String>) -> Self {
        let http = match code {
            GrpcCode::Ok => 200,
            GrpcCode::Cancelled => 499,
            GrpcCode::InvalidArgument | GrpcCode::OutOfRange => 400,
            GrpcCode::Unauthenticated => 401,
            GrpcCode::PermissionDenied => 403,
            GrpcCode::NotFound => 404,
            GrpcCode::DeadlineExceeded => 408,
            GrpcCode::AlreadyExists | GrpcCode::Aborted => 409,
            GrpcCode::FailedPrecondition => 412,
            GrpcCode::ResourceExhausted => 429,
            GrpcCode::Unimplemented => 501,
            GrpcCode::Unavailable => 503,
            GrpcCode::Unknown | GrpcCode::Internal | GrpcCode::DataLoss => 500,
        };
        Self::new(id, http, detail)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status.is_empty() {
            status_text(self.code)
        } else {
            &self.status
        };
        if self.id.is_empty() {
            write!(f, "{} {}: {}", self.code, status, self.detail)
        } else {
            write!(
                f,
                "{} {} from {}: {}",
                self.code, status, self.id, self.detail
            )
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.debug_struct("Error")
                .field("id", &self.id)
                .field("code", &self.code)
                .field("detail", &self.detail)
                .field("status", &self.status)
                .finish()
        } else {
            fmt::Display::fmt(self, f)
        }
    }
}

impl std::error::Error for Error {}

/// The standard text of an HTTP status code, as Go Micro puts it in `status`.
pub fn status_text(code: i32) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_reads_like_display_for_main() {
        let e = Error::bad_request("greeter.Greeter.Hello", "name is empty");
        let shown = "400 Bad Request from greeter.Greeter.Hello: name is empty";
        assert_eq!(format!("{e:?}"), shown);
        assert_eq!(e.to_string(), shown);
        assert!(format!("{e:#?}").contains("detail: \"name is empty\""));
    }

    #[test]
    fn json_matches_go_micro() {
        let e = Error::bad_request("greeter.Greeter.Hello", "name is empty");
        assert_eq!(
            e.to_json(),
            r#"{"id":"greeter.Greeter.Hello","code":400,"detail":"name is empty","status":"Bad Request"}"#
        );
        assert_eq!(Error::parse(&e.to_json()), e);
    }

    #[test]
    fn bare_string_errors_become_500() {
        let e = Error::parse("rpc: can't find method Nope");
        assert_eq!(e.code, 500);
        assert_eq!(e.detail, "rpc: can't find method Nope");
        assert!(e.is_retryable());
    }

    #[test]
    fn constructors_and_mappings() {
        let cases = [
            (Error::bad_request("x", "d"), 400, GrpcCode::InvalidArgument),
            (
                Error::unauthorized("x", "d"),
                401,
                GrpcCode::Unauthenticated,
            ),
            (Error::forbidden("x", "d"), 403, GrpcCode::PermissionDenied),
            (Error::not_found("x", "d"), 404, GrpcCode::NotFound),
            (
                Error::method_not_allowed("x", "d"),
                405,
                GrpcCode::Unimplemented,
            ),
            (Error::timeout("x", "d"), 408, GrpcCode::DeadlineExceeded),
            (Error::conflict("x", "d"), 409, GrpcCode::AlreadyExists),
            (Error::internal("x", "d"), 500, GrpcCode::Internal),
        ];
        for (e, code, grpc) in cases {
            assert_eq!(e.code, code);
            assert_eq!(e.http_status() as i32, code);
            assert_eq!(e.grpc_code(), grpc);
            assert_eq!(e.status, status_text(code));
        }
        assert!(Error::timeout("x", "d").is_retryable());
        assert!(!Error::not_found("x", "d").is_retryable());
        let unavailable = Error::from_grpc("x", GrpcCode::Unavailable, "down");
        assert!(unavailable.is_retryable());
        assert_eq!(Error::from_grpc("x", GrpcCode::NotFound, "d").code, 404);
    }

    #[test]
    fn display_is_readable() {
        let e = Error::not_found("micro.client", "service greeter: not found");
        assert_eq!(
            e.to_string(),
            "404 Not Found from micro.client: service greeter: not found"
        );
    }
}
