//! The `proto_message!` calls that give every generated message its `micro::Message` impl.
//!
//! prost writes the struct and pbjson its serde impls; what the runtime still needs is the glue
//! that lets a codec reach both, plus the field list that goes into the registry's endpoint
//! description. Both come from the descriptor set, so this is a plain walk over it.

use std::fmt::Write as _;

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

/// Appends one `proto_message!` call per message (nested ones included) declared in `file`.
///
/// `micro_path` is the path of the runtime crate, `::micro` unless the user renamed it.
pub(crate) fn append_message_impls(file: &FileDescriptorProto, micro_path: &str, out: &mut String) {
    let package = file.package();
    for message in &file.message_type {
        append_message(message, package, "", micro_path, out);
    }
}

/// Appends the call for `message` and recurses into its nested messages.
///
/// `proto_scope` is the dotted proto name the message lives in (`greeter` or
/// `greeter.Outer`); `rust_scope` is the Rust module path prost put it in relative to the
/// package module (empty, or `outer::`).
fn append_message(
    message: &DescriptorProto,
    proto_scope: &str,
    rust_scope: &str,
    micro_path: &str,
    out: &mut String,
) {
    // Map fields are repeated messages of a synthetic `XxxEntry` type; prost turns them into a
    // `HashMap` and generates no struct for the entry, so there is nothing to implement.
    if is_map_entry(message) {
        return;
    }
    let full_name = join_proto(proto_scope, message.name());
    let rust_type = format!("{rust_scope}{}", rust_type_name(message.name()));

    let fields: Vec<String> = message
        .field
        .iter()
        .map(|field| {
            format!(
                "({:?}, {:?})",
                field.name(),
                field_kind(field, message, &full_name)
            )
        })
        .collect();
    // Written already formatted the way rustfmt would, since this text is appended after prost
    // has run prettyplease over its own output.
    let one_line = format!(
        "{micro_path}::proto_message!({rust_type}, {full_name:?}, [{}]);",
        fields.join(", ")
    );
    if one_line.len() <= 100 {
        let _ = writeln!(out, "{one_line}");
    } else {
        let _ = writeln!(out, "{micro_path}::proto_message!(");
        let _ = writeln!(out, "    {rust_type},");
        let _ = writeln!(out, "    {full_name:?},");
        let _ = writeln!(out, "    [");
        for field in &fields {
            let _ = writeln!(out, "        {field},");
        }
        let _ = writeln!(out, "    ]");
        let _ = writeln!(out, ");");
    }

    let nested_scope = format!("{rust_scope}{}::", rust_module_name(message.name()));
    for nested in &message.nested_type {
        append_message(nested, &full_name, &nested_scope, micro_path, out);
    }
}

/// The type name a field has in the registry's endpoint description.
///
/// Scalars keep their proto name (`string`, `int32`, `bytes`), messages and enums their short
/// name, repeated fields get Go Micro's `[]` prefix and maps read `map<K, V>`.
fn field_kind(field: &FieldDescriptorProto, parent: &DescriptorProto, parent_name: &str) -> String {
    let repeated = field.label() == Label::Repeated;
    if repeated && field.r#type() == Type::Message {
        if let Some(entry) = map_entry_of(field, parent, parent_name) {
            let key = entry.field.iter().find(|f| f.number() == 1);
            let value = entry.field.iter().find(|f| f.number() == 2);
            if let (Some(key), Some(value)) = (key, value) {
                return format!("map<{}, {}>", single_kind(key), single_kind(value));
            }
        }
    }
    let kind = single_kind(field);
    if repeated {
        format!("[]{kind}")
    } else {
        kind
    }
}

/// The type name of one value of `field`, ignoring whether it repeats.
fn single_kind(field: &FieldDescriptorProto) -> String {
    let scalar = match field.r#type() {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Message | Type::Enum | Type::Group => {
            let type_name = field.type_name();
            return type_name
                .rsplit('.')
                .next()
                .unwrap_or(type_name)
                .to_string();
        }
    };
    scalar.to_string()
}

/// The synthetic map-entry message a repeated message field refers to, if it is a map.
fn map_entry_of<'a>(
    field: &FieldDescriptorProto,
    parent: &'a DescriptorProto,
    parent_name: &str,
) -> Option<&'a DescriptorProto> {
    let entry_name = field
        .type_name()
        .strip_prefix('.')?
        .strip_prefix(parent_name)?
        .strip_prefix('.')?;
    parent
        .nested_type
        .iter()
        .find(|nested| nested.name() == entry_name && is_map_entry(nested))
}

fn is_map_entry(message: &DescriptorProto) -> bool {
    message
        .options
        .as_ref()
        .is_some_and(|options| options.map_entry())
}

fn join_proto(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

/// The struct name prost gives a message (`hello_request` -> `HelloRequest`).
pub(crate) fn rust_type_name(proto_name: &str) -> String {
    rust_identifier(proto_name.to_upper_camel_case())
}

/// The module name prost gives the nested types of a message (`HelloRequest` -> `hello_request`).
pub(crate) fn rust_module_name(proto_name: &str) -> String {
    rust_identifier(proto_name.to_snake_case())
}

/// Makes a cased name a usable Rust identifier the way prost does: keywords become raw
/// identifiers, the few that cannot be raw get a `_` suffix, and a leading digit a `_` prefix.
fn rust_identifier(name: String) -> String {
    const RAW: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
        "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "dyn", "abstract",
        "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
        "virtual", "yield", "async", "await", "try", "gen",
    ];
    const SUFFIXED: &[&str] = &["_", "super", "self", "Self", "extern", "crate"];
    if RAW.contains(&name.as_str()) {
        format!("r#{name}")
    } else if SUFFIXED.contains(&name.as_str()) {
        format!("{name}_")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{FieldDescriptorProto, MessageOptions};

    fn field(
        name: &str,
        number: i32,
        kind: Type,
        label: Label,
        type_name: &str,
    ) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            type_name: (!type_name.is_empty()).then(|| type_name.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_prost() {
        assert_eq!(rust_type_name("hello_request"), "HelloRequest");
        assert_eq!(rust_type_name("HelloRequest"), "HelloRequest");
        assert_eq!(rust_type_name("Self"), "Self_");
        assert_eq!(rust_module_name("HelloRequest"), "hello_request");
        assert_eq!(rust_module_name("Type"), "r#type");
    }

    #[test]
    fn describes_scalars_messages_repeated_and_maps() {
        let entry = DescriptorProto {
            name: Some("LabelsEntry".into()),
            field: vec![
                field("key", 1, Type::String, Label::Optional, ""),
                field("value", 2, Type::Int32, Label::Optional, ""),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let inner = DescriptorProto {
            name: Some("Inner".into()),
            ..Default::default()
        };
        let outer = DescriptorProto {
            name: Some("Outer".into()),
            field: vec![
                field("name", 1, Type::String, Label::Optional, ""),
                field("tags", 2, Type::String, Label::Repeated, ""),
                field(
                    "inner",
                    3,
                    Type::Message,
                    Label::Optional,
                    ".pkg.Outer.Inner",
                ),
                field(
                    "inners",
                    4,
                    Type::Message,
                    Label::Repeated,
                    ".pkg.Outer.Inner",
                ),
                field(
                    "labels",
                    5,
                    Type::Message,
                    Label::Repeated,
                    ".pkg.Outer.LabelsEntry",
                ),
                field("data", 6, Type::Bytes, Label::Optional, ""),
            ],
            nested_type: vec![entry, inner],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            package: Some("pkg".into()),
            message_type: vec![outer],
            ..Default::default()
        };
        let mut out = String::new();
        append_message_impls(&file, "::micro", &mut out);
        assert_eq!(
            out,
            "::micro::proto_message!(\n    Outer,\n    \"pkg.Outer\",\n    [\n        \
             (\"name\", \"string\"),\n        (\"tags\", \"[]string\"),\n        \
             (\"inner\", \"Inner\"),\n        (\"inners\", \"[]Inner\"),\n        \
             (\"labels\", \"map<string, int32>\"),\n        (\"data\", \"bytes\"),\n    ]\n);\n\
             ::micro::proto_message!(outer::Inner, \"pkg.Outer.Inner\", []);\n"
        );
    }
}
