//! Every greeter program answers `--help` (with Micro's settings) and `--version`, and a
//! misspelt flag is a usage error rather than a server started on the defaults.

use std::path::Path;

use micro_conformance::program::answers_help_and_version;

#[test]
fn greeter_server() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_greeter-server")),
        "greeter-server",
        true,
    );
}

#[test]
fn greeter_client() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_greeter-client")),
        "greeter-client",
        true,
    );
}

#[test]
fn quickstart() {
    answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_quickstart")),
        "quickstart",
        true,
    );
}
