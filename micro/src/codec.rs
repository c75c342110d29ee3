//! The codecs a client or server speaks, picked by `Content-Type`, and helpers to make types
//! into [`Message`]s.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use micro_core::codec::{erased_serde, unsupported};
use micro_core::{Codec, Error, Message, Result};

/// `application/octet-stream`: raw bytes, for [`Bytes`] messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    fn content_type(&self) -> &str {
        "application/octet-stream"
    }

    fn encode(&self, msg: &dyn Message) -> Result<Bytes> {
        msg.as_raw().ok_or_else(|| unsupported(self, msg))
    }

    fn decode(&self, data: &[u8], msg: &mut dyn Message) -> Result<()> {
        if msg.set_raw(Bytes::copy_from_slice(data)) {
            Ok(())
        } else {
            Err(unsupported(self, msg))
        }
    }
}

/// The codecs on offer, the first being the default for requests without a `Content-Type`.
#[derive(Clone)]
pub struct Codecs {
    list: Vec<Arc<dyn Codec>>,
}

impl fmt::Debug for Codecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|c| c.content_type()))
            .finish()
    }
}

impl Default for Codecs {
    /// Every codec compiled in: protobuf first (Go Micro's default), then JSON, raw bytes, and
    /// Go Micro's legacy `application/proto-rpc` and `application/json-rpc`.
    fn default() -> Self {
        let list: Vec<Arc<dyn Codec>> = vec![
            #[cfg(feature = "proto")]
            Arc::new(micro_codec_proto::ProtoCodec),
            #[cfg(feature = "json")]
            Arc::new(micro_codec_json::JsonCodec),
            Arc::new(BytesCodec),
            // Go Micro's legacy framings, read and written for Go Micro clients that fall back
            // to them (nodes without `protocol` metadata, old versions).
            #[cfg(feature = "proto")]
            Arc::new(micro_codec_proto::ProtoRpcCodec),
            #[cfg(feature = "json")]
            Arc::new(micro_codec_json::JsonRpcCodec),
        ];
        Codecs { list }
    }
}

impl Codecs {
    /// A set holding only `codec`.
    pub fn new(codec: Arc<dyn Codec>) -> Self {
        Codecs { list: vec![codec] }
    }

    /// Adds a codec (a plugin's, say); it replaces one of the same content type.
    pub fn with(mut self, codec: Arc<dyn Codec>) -> Self {
        self.list
            .retain(|c| c.content_type() != codec.content_type());
        self.list.push(codec);
        self
    }

    /// The codec for a `Content-Type` header value (parameters such as `; charset=utf-8` are
    /// ignored); the default codec when the value is empty.
    pub fn get(&self, content_type: &str) -> Result<Arc<dyn Codec>> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        if ct.is_empty() {
            return self
                .list
                .first()
                .cloned()
                .ok_or_else(|| Error::internal("micro.codec", "no codec is configured"));
        }
        self.list
            .iter()
            .find(|c| {
                c.content_type().eq_ignore_ascii_case(ct)
                    || c.aliases().iter().any(|a| a.eq_ignore_ascii_case(ct))
            })
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    "micro.codec",
                    415,
                    format!(
                        "unsupported content type {ct:?}; this peer speaks {}",
                        self.content_types().join(", ")
                    ),
                )
            })
    }

    /// The content types on offer.
    pub fn content_types(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|c| c.content_type().to_string())
            .collect()
    }
}

/// A serde type sent as a message (JSON and other serde codecs): `Json(MyEvent { .. })`.
/// The type needs no `Default`: it is decoded whole ([`Decodable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// A message type that is decoded with no value to start from: what requests, replies and
/// events are read as. Every [`Message`] with a `Default` is one (all generated messages), and
/// so is [`Json`] of any serde type, `Default` or not.
pub trait Decodable: Message + Sized {
    /// Decodes `data`, written by `codec`, into a new message.
    fn decode_with(codec: &dyn Codec, data: &[u8]) -> Result<Self>;
}

impl<T: Message + Default> Decodable for T {
    fn decode_with(codec: &dyn Codec, data: &[u8]) -> Result<Self> {
        let mut message = T::default();
        codec.decode(data, &mut message)?;
        Ok(message)
    }
}

impl<T> Decodable for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn decode_with(codec: &dyn Codec, data: &[u8]) -> Result<Self> {
        let mut slot = Slot::<T>(None);
        codec.decode(data, &mut slot)?;
        match slot.0.take() {
            Some(value) => Ok(Json(value)),
            // A codec that neither filled it nor said why.
            None => Err(unsupported(codec, &slot)),
        }
    }
}

/// Where a serde type without `Default` is decoded to: empty until the codec fills it.
struct Slot<T>(Option<T>);

impl<T> Message for Slot<T>
where
    T: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn deserialize_from(
        &mut self,
        de: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Option<std::result::Result<(), erased_serde::Error>> {
        Some(erased_serde::deserialize(de).map(|v| self.0 = Some(v)))
    }
}

impl<T> Message for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn as_serialize(&self) -> Option<&dyn erased_serde::Serialize> {
        Some(&self.0)
    }

    fn deserialize_from(
        &mut self,
        de: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Option<std::result::Result<(), erased_serde::Error>> {
        Some(erased_serde::deserialize(de).map(|v| self.0 = v))
    }
}

/// Implements [`Message`] for a prost message that also has serde impls (from pbjson), with
/// its description for the registry's endpoints. `micro-build` writes these calls, with the
/// description as Go Micro's registry JSON (nested messages, enum values and oneofs
/// included); by hand, a list of fields will do:
///
/// `proto_message!(HelloRequest, "greeter.HelloRequest", [("name", "string")]);`
#[macro_export]
macro_rules! proto_message {
    (@impl $ty:ty, $full_name:expr, $describe:expr) => {
        impl $crate::Message for $ty {
            fn type_name(&self) -> &'static str {
                $full_name
            }
            fn as_serialize(&self) -> ::core::option::Option<&dyn $crate::__private::erased_serde::Serialize> {
                ::core::option::Option::Some(self)
            }
            fn deserialize_from(
                &mut self,
                de: &mut dyn $crate::__private::erased_serde::Deserializer<'_>,
            ) -> ::core::option::Option<::core::result::Result<(), $crate::__private::erased_serde::Error>> {
                ::core::option::Option::Some($crate::__private::erased_serde::deserialize(de).map(|v| *self = v))
            }
            fn encode_protobuf(&self) -> ::core::option::Option<::std::vec::Vec<u8>> {
                ::core::option::Option::Some($crate::__private::prost::Message::encode_to_vec(self))
            }
            fn decode_protobuf(&mut self, data: &[u8]) -> ::core::option::Option<::core::result::Result<(), ::std::string::String>> {
                ::core::option::Option::Some($crate::__private::decode_prost(self, data))
            }
            fn describe() -> $crate::registry::Value {
                $describe
            }
        }
    };
    ($ty:ty, $full_name:expr, [$(($field:expr, $kind:expr)),* $(,)?]) => {
        $crate::proto_message!(@impl $ty, $full_name, $crate::__private::describe($full_name, &[$(($field, $kind)),*]));
    };
    ($ty:ty, $full_name:expr, $shape:literal) => {
        $crate::proto_message!(@impl $ty, $full_name, $crate::__private::describe_json($full_name, $shape));
    };
}

/// Support for generated code; not a stable API.
#[doc(hidden)]
pub mod private {
    use micro_core::registry::Value;

    /// Decodes protobuf bytes into `msg`, replacing it.
    pub fn decode_prost<M: prost::Message + Default>(
        msg: &mut M,
        data: &[u8],
    ) -> Result<(), String> {
        *msg = M::decode(data).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The endpoint description `micro-build` wrote as JSON; the bare name if it does not
    /// read (it always does: micro-build wrote it with serde_json).
    pub fn describe_json(full_name: &str, shape: &str) -> Value {
        serde_json::from_str(shape).unwrap_or_else(|_| describe(full_name, &[]))
    }

    /// The endpoint description of a message with these fields.
    pub fn describe(full_name: &str, fields: &[(&str, &str)]) -> Value {
        let short = full_name
            .rsplit('.')
            .next()
            .unwrap_or(full_name)
            .to_string();
        Value {
            name: short.clone(),
            kind: short,
            values: fields
                .iter()
                .map(|(name, kind)| Value {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    values: Vec::new(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A serde type with no `Default`.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
    }

    #[test]
    fn json_values_decode_whole_without_default() -> Result<()> {
        let codecs = Codecs::default();
        let json = codecs.get("application/json")?;
        let order = Json::<Order>::decode_with(&*json, br#"{"id":7}"#)?;
        assert_eq!(order, Json(Order { id: 7 }));
        let bad = Json::<Order>::decode_with(&*json, br#"{"id":"seven"}"#);
        assert_eq!(bad.map_err(|e| e.code), Err(400));
        // Protobuf cannot carry a serde type: an error naming it, not a default value.
        let proto = codecs.get("application/protobuf")?;
        let e = Json::<Order>::decode_with(&*proto, b"").expect_err("not protobuf");
        assert!(e.detail.contains("Order"), "{e}");
        Ok(())
    }

    #[test]
    fn picks_codecs_by_content_type() {
        let codecs = Codecs::default();
        assert_eq!(
            codecs.get("").expect("default").content_type(),
            "application/protobuf"
        );
        assert_eq!(
            codecs
                .get("application/json; charset=utf-8")
                .expect("json")
                .content_type(),
            "application/json"
        );
        let err = codecs.get("text/xml").expect_err("unknown");
        assert_eq!(err.code, 415);
        assert!(err.detail.contains("application/json"), "{}", err.detail);
    }

    #[test]
    fn json_wrapper_round_trips() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Event {
            id: u32,
        }
        let codec = codecs_json();
        let bytes = codec.encode(&Json(Event { id: 7 })).expect("encode");
        let mut out = Json(Event { id: 0 });
        codec.decode(&bytes, &mut out).expect("decode");
        assert_eq!(out.0, Event { id: 7 });
    }

    fn codecs_json() -> Arc<dyn Codec> {
        Codecs::default()
            .get("application/json")
            .expect("json codec")
    }
}
