//! `application/json-rpc`: Go Micro's legacy JSON-RPC framing, for Go Micro clients that fall
//! back to it (nodes without `protocol` metadata, old versions).

use bytes::Bytes;
use micro_core::codec::{erased_serde, unsupported};
use micro_core::{Codec, Error, Message, Result};
use serde_json::Value;

use crate::JsonCodec;

/// The content type this codec speaks.
const CONTENT_TYPE: &str = "application/json-rpc";

const ID: &str = "micro.codec.json-rpc";

/// Go Micro's JSON-RPC (Go's `net/rpc/jsonrpc` shapes): a request is
/// `{"method": "Greeter.Hello", "params": [<message>], "id": ..}`, a reply
/// `{"id": .., "result": <message>, "error": null}`, an error `"error": "<text>"`.
///
/// A codec does not know which way a message goes, so what is written has both shapes at
/// once, `{"method":"","params":[m],"id":null,"result":m,"error":null}`: a Go server reads
/// its `params`, a Go client its `result`, and each ignores the other fields (Micro's own
/// headers name the endpoint). What is read may be either; an `error` is that error. The
/// message itself is JSON, as [`JsonCodec`] writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonRpcCodec;

impl Codec for JsonRpcCodec {
    fn content_type(&self) -> &str {
        CONTENT_TYPE
    }

    fn encode(&self, msg: &dyn Message) -> Result<Bytes> {
        let inner = JsonCodec.encode(msg)?;
        let mut out = Vec::with_capacity(2 * inner.len() + 64);
        out.extend_from_slice(br#"{"method":"","params":["#);
        out.extend_from_slice(&inner);
        out.extend_from_slice(br#"],"id":null,"result":"#);
        out.extend_from_slice(&inner);
        out.extend_from_slice(br#","error":null}"#);
        Ok(Bytes::from(out))
    }

    fn decode(&self, data: &[u8], msg: &mut dyn Message) -> Result<()> {
        let bad = |why: String| Error::bad_request(ID, why);
        let Value::Object(mut envelope) = serde_json::from_slice(data)
            .map_err(|e| bad(format!("not a JSON-RPC message: {e}")))?
        else {
            return Err(bad("a JSON-RPC message is a JSON object".into()));
        };
        match envelope.remove("error") {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => return Err(Error::parse(&text)),
            Some(other) => return Err(Error::parse(&other.to_string())),
        }
        let inner = match (envelope.remove("params"), envelope.remove("result")) {
            (Some(Value::Array(mut params)), _) if !params.is_empty() => params.swap_remove(0),
            (_, Some(result)) => result,
            _ => return Err(bad("a JSON-RPC message without params or result".into())),
        };
        let name = msg.type_name();
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(inner);
        match msg.deserialize_from(&mut erased) {
            Some(result) => result.map_err(|e| bad(format!("cannot decode {name}: {e}"))),
            None => Err(unsupported(self, msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::codec::erased_serde;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Hello {
        name: String,
    }

    impl Message for Hello {
        fn as_serialize(&self) -> Option<&dyn erased_serde::Serialize> {
            Some(self)
        }
        fn deserialize_from(
            &mut self,
            de: &mut dyn erased_serde::Deserializer<'_>,
        ) -> Option<std::result::Result<(), erased_serde::Error>> {
            Some(erased_serde::deserialize(de).map(|v| *self = v))
        }
    }

    #[test]
    fn reads_what_a_go_micro_client_sends_and_writes_both_shapes() -> Result<()> {
        let mut hello = Hello::default();
        let request = br#"{"method":"Greeter.Hello","params":[{"name":"John"}],"id":0}"#;
        JsonRpcCodec.decode(request, &mut hello)?;
        assert_eq!(hello.name, "John");

        let written = JsonRpcCodec.encode(&Hello { name: "Ann".into() })?;
        let value: Value =
            serde_json::from_slice(&written).map_err(|e| Error::internal(ID, e.to_string()))?;
        assert_eq!(value["params"][0]["name"], "Ann");
        assert_eq!(value["result"]["name"], "Ann");
        assert_eq!(
            (value["error"].is_null(), value["id"].is_null()),
            (true, true)
        );
        // A reply from a Go server reads too.
        let mut back = Hello::default();
        JsonRpcCodec.decode(
            br#"{"id":3,"result":{"name":"Bo"},"error":null}"#,
            &mut back,
        )?;
        assert_eq!(back.name, "Bo");
        Ok(())
    }

    #[test]
    fn an_error_is_the_error_and_anything_else_a_400() {
        let reply = br#"{"id":1,"result":null,"error":"{\"id\":\"greeter\",\"code\":404,\"detail\":\"gone\"}"}"#;
        let e = JsonRpcCodec
            .decode(reply, &mut Hello::default())
            .expect_err("an error");
        assert_eq!((e.code, e.detail.as_str()), (404, "gone"));
        for bad in [
            &b"nope"[..],
            b"[1]",
            br#"{"id":1}"#,
            br#"{"params":[{"name":5}]}"#,
        ] {
            let e = JsonRpcCodec
                .decode(bad, &mut Hello::default())
                .expect_err("refused");
            assert_eq!(e.code, 400, "{e}");
        }
    }
}
