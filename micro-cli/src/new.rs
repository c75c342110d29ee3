//! `micro new NAME`: a new service crate that builds, serves and passes its test as made.

use std::path::{Path, PathBuf};

use heck::{ToSnakeCase as _, ToUpperCamelCase as _};
use micro::{Error, Result};

/// What `new` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The service (and crate) name: lower case letters, digits and `-` (`orders`, `order-api`)
    name: String,
    /// The proto package (the name with `_` for `-` by default)
    #[arg(long, value_name = "PACKAGE")]
    package: Option<String>,
    /// Also subscribe to `<name>.events`, with a test that publishes to it
    #[arg(long)]
    pubsub: bool,
    /// Depend on the Micro checkout at this path instead of the crates.io release
    #[arg(long = "micro-path", value_name = "PATH")]
    micro_path: Option<PathBuf>,
    /// Where to create the crate's directory
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

/// The files of a new service, relative to its directory, and their templates.
const FILES: [(&str, &str); 7] = [
    ("Cargo.toml", include_str!("../templates/Cargo.toml.tmpl")),
    ("build.rs", include_str!("../templates/build.rs.tmpl")),
    ("src/lib.rs", include_str!("../templates/lib.rs.tmpl")),
    ("src/main.rs", include_str!("../templates/main.rs.tmpl")),
    (
        "tests/service.rs",
        include_str!("../templates/test.rs.tmpl"),
    ),
    ("README.md", include_str!("../templates/README.md.tmpl")),
    (
        "proto/PACKAGE.proto",
        include_str!("../templates/proto.tmpl"),
    ),
];

const PUBSUB_LIB: &str = include_str!("../templates/pubsub_lib.rs.tmpl");
const PUBSUB_TEST: &str = include_str!("../templates/pubsub_test.rs.tmpl");
const PUBSUB_README: &str = include_str!("../templates/pubsub_readme.tmpl");

/// Names that would clash with what the crate needs or with cargo's own.
const RESERVED: [&str; 11] = [
    "micro",
    "micro_build",
    "build",
    "deps",
    "examples",
    "incremental",
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
];

/// Rust's keywords, strict and reserved: not a module name.
const KEYWORDS: [&str; 51] = [
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

fn invalid(detail: String) -> Error {
    Error::bad_request("micro.new", detail)
}

/// Writes the crate; returns its directory.
pub(crate) fn create(args: NewArgs) -> Result<PathBuf> {
    let name = args.name.as_str();
    let valid_name = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid_name {
        return Err(invalid(format!(
            "{name:?} cannot name a service crate: use lower case letters, digits and '-', \
             starting with a letter (like orders or order-api)"
        )));
    }
    let package = args
        .package
        .clone()
        .unwrap_or_else(|| name.replace('-', "_"));
    let valid_package = package.starts_with(|c: char| c.is_ascii_lowercase())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid_package {
        return Err(invalid(format!(
            "{package:?} cannot be the proto package here: use lower case letters, digits and \
             '_' (one name, no dots)"
        )));
    }
    let taken = |ident: &str| RESERVED.contains(&ident) || KEYWORDS.contains(&ident);
    if taken(&name.replace('-', "_")) || taken(name) || taken(&package) {
        return Err(invalid(format!(
            "{name:?} (package {package:?}) is a Rust keyword or a name cargo or Micro keeps \
             for itself: choose another"
        )));
    }
    let root = args.dir.join(name);
    if root.exists() {
        return Err(invalid(format!(
            "{} already exists: choose another name or --dir",
            root.display()
        )));
    }
    let (micro_dep, micro_build_dep) = match &args.micro_path {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .map_err(|e| invalid(format!("--micro-path {}: {e}", path.display())))?;
            if !path.join("micro/Cargo.toml").is_file() {
                return Err(invalid(format!(
                    "--micro-path {} is not a Micro checkout (no micro/Cargo.toml)",
                    path.display()
                )));
            }
            (
                format!(
                    "micro = {{ path = {:?}, features = [\"cli\"] }}",
                    path.join("micro").display().to_string()
                ),
                format!(
                    "micro-build = {{ path = {:?} }}",
                    path.join("micro-build").display().to_string()
                ),
            )
        }
        None => (
            "micro = { version = \"0.1\", features = [\"cli\"] }".to_string(),
            "micro-build = \"0.1\"".to_string(),
        ),
    };
    // As prost and micro-build name things, so that the template names what they generate.
    let service = name.to_upper_camel_case().to_upper_camel_case();
    let vars: Vec<(&str, String)> = vec![
        ("{{name}}", name.to_string()),
        ("{{crate}}", name.replace('-', "_")),
        ("{{package}}", package.clone()),
        ("{{Service}}", service.clone()),
        ("{{service_fn}}", service.to_snake_case()),
        ("{{micro_dep}}", micro_dep),
        ("{{micro_build_dep}}", micro_build_dep),
        (
            "{{subscriber}}",
            if args.pubsub {
                "        .subscriber({{crate}}::TOPIC, {{crate}}::on_event)\n".to_string()
            } else {
                String::new()
            },
        ),
        ("{{pubsub_test}}", pick(args.pubsub, PUBSUB_TEST)),
        ("{{pubsub_readme}}", pick(args.pubsub, PUBSUB_README)),
    ];
    for (file, template) in FILES {
        let mut text = template.to_string();
        if file == "src/lib.rs" && args.pubsub {
            text.push_str(PUBSUB_LIB);
        }
        let path = root.join(file.replace("PACKAGE", &package));
        write(&path, &fill(&text, &vars))?;
    }
    Ok(root)
}

fn pick(on: bool, text: &str) -> String {
    if on {
        text.to_string()
    } else {
        String::new()
    }
}

/// `text` with every `{{var}}` replaced; replacements may hold variables of their own (the
/// subscriber line names the crate), so it goes twice.
fn fill(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for _ in 0..2 {
        for (key, value) in vars {
            out = out.replace(key, value);
        }
    }
    out
}

fn write(path: &Path, text: &str) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::internal("micro.new", format!("cannot write {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused() {
        for name in [
            "Demo", "1demo", "de mo", "demo-", "", "a.b", "type", "micro", "build",
        ] {
            let args = NewArgs {
                name: name.into(),
                package: None,
                pubsub: false,
                micro_path: None,
                dir: std::env::temp_dir(),
            };
            let e = create(args).err().map(|e| e.code);
            assert_eq!(e, Some(400), "{name:?}");
        }
    }
}
