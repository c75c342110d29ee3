//! Generates the `greeter` package (messages, client, handler trait) from `proto/greeter.proto`.

fn main() -> std::io::Result<()> {
    micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])
}
