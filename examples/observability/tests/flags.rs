//! The observability programs answer `--help` and `--version` (the services with Micro's
//! settings), and refuse a flag they do not know.

use std::path::Path;

use micro_conformance::program::answers_help_and_version;

#[test]
fn every_program() {
    for (exe, name, micro_flags) in [
        (
            env!("CARGO_BIN_EXE_inventory-server"),
            "inventory-server",
            true,
        ),
        (env!("CARGO_BIN_EXE_orders-server"), "orders-server", true),
        (env!("CARGO_BIN_EXE_shop-client"), "shop-client", true),
        (
            env!("CARGO_BIN_EXE_observability-demo"),
            "observability-demo",
            false,
        ),
    ] {
        answers_help_and_version(Path::new(exe), name, micro_flags);
    }
}
