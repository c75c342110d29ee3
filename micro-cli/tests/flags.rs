//! `micro` answers `--help` (with Micro's settings) and `--version`, and refuses a flag it does
//! not know.

use std::path::Path;

#[test]
fn micro() {
    micro_conformance::program::answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_micro")),
        "micro",
        true,
    );
}
