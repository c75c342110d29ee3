//! Compiles the test protos, with nothing but `micro` for the generated code to use.

fn main() -> std::io::Result<()> {
    micro_build::compile_protos(&["proto/stamped.proto"], &["proto"])
}
