//! The `Debug` handler every server serves, as Go Micro's do: `Debug.Health` answers
//! `{"status":"ok"}` while the server runs, for probes on transports without a health protocol
//! of their own.

use serde::{Deserialize, Serialize};

use crate::{Handler, Response};

/// `Debug.Health`'s request: empty.
#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct HealthRequest {}

/// `Debug.Health`'s reply.
#[derive(Clone, PartialEq, ::prost::Message, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` while serving.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub status: String,
}

crate::proto_message!(HealthRequest, "debug.HealthRequest", []);
crate::proto_message!(
    HealthResponse,
    "debug.HealthResponse",
    [("status", "string")]
);

pub(crate) fn handler() -> Handler {
    Handler::new("Debug").unary("Health", |_req: crate::Request<HealthRequest>| {
        Box::pin(async {
            Ok(Response::new(HealthResponse {
                status: "ok".into(),
            }))
        })
    })
}
