// examples/hello/src/lib.rs
//! The messages, client and handler trait `micro-build` generated from `proto/hello.proto`.

pub mod hello {
    micro::include_proto!("hello");
}
