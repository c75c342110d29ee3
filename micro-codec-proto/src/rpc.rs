//! `application/proto-rpc`: Go Micro's legacy proto-rpc framing, for Go Micro clients that fall
//! back to it (nodes without `protocol` metadata, old versions).

use bytes::{BufMut, Bytes, BytesMut};
use micro_core::{Codec, Error, Message, Result};

use crate::ProtoCodec;

/// The content type this codec speaks.
const CONTENT_TYPE: &str = "application/proto-rpc";

/// Go Micro's proto-rpc: a header message, then the body, each a netstring (a 4-byte
/// big-endian length, then the bytes). The header is `protorpc.Request {service_method = 1,
/// seq = 2 (fixed64)}` going to a server and `protorpc.Response {.., error = 3}` coming back.
///
/// What is written carries an empty header, which both shapes read (Micro's own headers name
/// the endpoint); what is read may carry either. A response header with an `error` is that
/// error. The body is the message in protobuf, as [`ProtoCodec`] writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtoRpcCodec;

/// The fields of `protorpc.Request` and `protorpc.Response` (the request lacks `error`).
#[derive(Clone, PartialEq, prost::Message)]
struct Header {
    #[prost(string, tag = "1")]
    service_method: String,
    #[prost(fixed64, tag = "2")]
    seq: u64,
    #[prost(string, tag = "3")]
    error: String,
}

const ID: &str = "micro.codec.proto-rpc";

impl Codec for ProtoRpcCodec {
    fn content_type(&self) -> &str {
        CONTENT_TYPE
    }

    fn encode(&self, msg: &dyn Message) -> Result<Bytes> {
        let body = ProtoCodec.encode(msg)?;
        let len = u32::try_from(body.len())
            .map_err(|_| Error::bad_request(ID, "a proto-rpc body is at most 4 GiB"))?;
        let mut out = BytesMut::with_capacity(8 + body.len());
        out.put_u32(0);
        out.put_u32(len);
        out.put_slice(&body);
        Ok(out.freeze())
    }

    fn decode(&self, data: &[u8], msg: &mut dyn Message) -> Result<()> {
        let (header, rest) = netstring(data)?;
        let (body, _) = netstring(rest)?;
        let header = <Header as prost::Message>::decode(header).map_err(|e| {
            Error::bad_request(ID, format!("the proto-rpc header does not decode: {e}"))
        })?;
        if !header.error.is_empty() {
            return Err(Error::parse(&header.error));
        }
        ProtoCodec.decode(body, msg)
    }
}

/// The bytes of the netstring at the start of `data`, and what follows it.
fn netstring(data: &[u8]) -> Result<(&[u8], &[u8])> {
    let short = || Error::bad_request(ID, "a proto-rpc message ends before its netstring does");
    let (len, rest) = data.split_first_chunk::<4>().ok_or_else(short)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(short());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HelloRequest { name }` in protobuf, by hand.
    #[derive(Debug, Default, PartialEq)]
    struct Hello(String);

    impl Message for Hello {
        fn encode_protobuf(&self) -> Option<Vec<u8>> {
            let mut out = vec![0x0a, self.0.len() as u8];
            out.extend_from_slice(self.0.as_bytes());
            Some(out)
        }
        fn decode_protobuf(&mut self, data: &[u8]) -> Option<std::result::Result<(), String>> {
            match data {
                [0x0a, len, name @ ..] if *len as usize == name.len() => {
                    self.0 = String::from_utf8_lossy(name).into_owned();
                    Some(Ok(()))
                }
                [] => Some(Ok(())),
                _ => Some(Err("not a Hello".into())),
            }
        }
    }

    fn netstrings(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn reads_what_a_go_micro_client_sends_and_writes_what_it_reads() -> Result<()> {
        // protorpc.Request{ServiceMethod: "Greeter.Hello", Seq: 7}, then the body.
        let mut header = vec![0x0a, 13];
        header.extend_from_slice(b"Greeter.Hello");
        header.push(0x11);
        header.extend_from_slice(&7u64.to_le_bytes());
        let request = netstrings(&[&header, b"\x0a\x04John"]);
        let mut hello = Hello::default();
        ProtoRpcCodec.decode(&request, &mut hello)?;
        assert_eq!(hello, Hello("John".into()));

        let reply = ProtoRpcCodec.encode(&Hello("Hello John".into()))?;
        assert_eq!(&reply[..], &netstrings(&[b"", b"\x0a\x0aHello John"])[..]);
        // And it reads back, as our client reads a reply.
        let mut back = Hello::default();
        ProtoRpcCodec.decode(&reply, &mut back)?;
        assert_eq!(back.0, "Hello John");
        Ok(())
    }

    #[test]
    fn an_error_header_is_the_error_and_bad_framing_a_400() {
        // protorpc.Response{Error: "..."} with Go Micro's error JSON in it.
        let error = br#"{"id":"greeter","code":404,"detail":"no such thing","status":"Not Found"}"#;
        let mut header = vec![0x1a, error.len() as u8];
        header.extend_from_slice(error);
        let reply = netstrings(&[&header, b""]);
        let e = ProtoRpcCodec
            .decode(&reply, &mut Hello::default())
            .expect_err("an error");
        assert_eq!((e.code, e.detail.as_str()), (404, "no such thing"));

        for bad in [
            &b""[..],
            b"\x00\x00",
            b"\x00\x00\x00\x09abc",
            b"\x00\x00\x00\x00\xff\xff\xff\xff",
        ] {
            let e = ProtoRpcCodec
                .decode(bad, &mut Hello::default())
                .expect_err("bad framing");
            assert_eq!(e.code, 400, "{e}");
        }
    }
}
