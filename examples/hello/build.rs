// examples/hello/build.rs
fn main() -> Result<(), Box<dyn std::error::Error>> {
    micro_build::compile_protos(&["proto/hello.proto"], &["proto"])?;
    Ok(())
}
