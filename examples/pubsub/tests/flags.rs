//! The pub/sub programs answer `--help` (with Micro's settings) and `--version`, and refuse a
//! flag they do not know.

use std::path::Path;

use micro_conformance::program::answers_help_and_version;

#[test]
fn pubsub_publisher() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_pubsub-publisher")),
        "pubsub-publisher",
        true,
    );
}

#[test]
fn pubsub_subscriber() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_pubsub-subscriber")),
        "pubsub-subscriber",
        true,
    );
}
