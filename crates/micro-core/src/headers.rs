//! Header names of Go Micro's RPC protocol (`mucp`), shared by the client, the server and every
//! transport. Names compare case-insensitively; an `X-` prefixed form (`X-Micro-Error`) is read
//! too.

/// The request id.
pub const ID: &str = "Micro-Id";
/// The target service.
pub const SERVICE: &str = "Micro-Service";
/// The endpoint, `Greeter.Hello`.
pub const ENDPOINT: &str = "Micro-Endpoint";
/// The same as [`ENDPOINT`], sent by Go Micro too.
pub const METHOD: &str = "Micro-Method";
/// The error of a failed call, as JSON; [`EOS`] ends a stream.
pub const ERROR: &str = "Micro-Error";
/// Present on every message of a stream, holding the stream id.
pub const STREAM: &str = "Micro-Stream";
/// The topic of a published message.
pub const TOPIC: &str = "Micro-Topic";
/// The fully qualified proto service of the endpoint (`greeter.Greeter`), when the caller knows
/// it: transports that route by proto names (gRPC's `/greeter.Greeter/Hello`) use it. It is not
/// sent on the wire by the http transport's peers.
pub const PROTO_SERVICE: &str = "Micro-Proto-Service";
/// The codec of the body.
pub const CONTENT_TYPE: &str = "Content-Type";
/// The codec the caller wants back.
pub const ACCEPT: &str = "Accept";
/// The caller's timeout in decimal nanoseconds.
pub const TIMEOUT: &str = "Timeout";
/// The end-of-stream marker in [`ERROR`].
pub const EOS: &str = "EOS";
