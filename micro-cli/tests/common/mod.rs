//! What the `micro` tests share.

use std::process::Command;

/// `micro` with `args`, in an environment that names no plugin (each test's flags do).
pub(crate) fn micro(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_micro"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MICRO_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args);
    cmd
}
