//! How results are printed: aligned tables for people, JSON for scripts.

use clap::ValueEnum;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

/// Prints one line on standard output; `false` once nobody reads it any more (`| head -1`),
/// so that a command that goes on printing can stop cleanly instead of panicking.
pub(crate) fn line(text: &str) -> bool {
    use std::io::Write as _;

    writeln!(std::io::stdout().lock(), "{text}").is_ok()
}

/// Prints `rows` under `header`, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        line(text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints `value` as pretty JSON.
pub(crate) fn json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            line(&text);
        }
        Err(e) => eprintln!("micro: cannot print JSON: {e}"),
    }
}

/// Prints a reply body: pretty JSON when it is JSON, else the bytes as they are.
pub(crate) fn body(bytes: &[u8]) {
    use std::io::Write as _;

    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => json(&value),
        Err(_) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.write_all(b"\n");
        }
    }
}
