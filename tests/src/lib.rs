//! Integration tests of Micro for Rust.
