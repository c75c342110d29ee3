//! The `proto_message!` calls that give every generated message its `micro::Message` impl.
//!
//! prost writes the struct and pbjson its serde impls; what the runtime still needs is the glue
//! that lets a codec reach both, plus the description of its fields that goes into the
//! registry's endpoints (nested messages, enum values and oneofs included). Both come from the
//! descriptor set, so this is a plain walk over it.

use std::collections::HashMap;
use std::fmt::Write as _;

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
};
use serde_json::{json, Value as JsonValue};

/// Every message and enum of the descriptor set by full name (`.pkg.Outer.Inner`): what a
/// field's type name points at, for describing nested messages and enums.
pub(crate) struct Types<'a> {
    messages: HashMap<String, &'a DescriptorProto>,
    enums: HashMap<String, &'a EnumDescriptorProto>,
}

impl<'a> Types<'a> {
    pub(crate) fn of(set: &'a FileDescriptorSet) -> Self {
        let mut types = Types {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            let scope = format!(".{}", file.package());
            let scope = scope.trim_end_matches('.');
            types.add(scope, &file.message_type, &file.enum_type);
        }
        types
    }

    fn add(
        &mut self,
        scope: &str,
        messages: &'a [DescriptorProto],
        enums: &'a [EnumDescriptorProto],
    ) {
        for e in enums {
            self.enums.insert(format!("{scope}.{}", e.name()), e);
        }
        for m in messages {
            let name = format!("{scope}.{}", m.name());
            self.add(&name, &m.nested_type, &m.enum_type);
            self.messages.insert(name, m);
        }
    }
}

/// How many levels of fields a message's description holds (its own fields are the first),
/// and how many values in all: a deep or wide graph of messages is described this far, the
/// rest by type name only. Go Micro's own descriptions stop at three levels.
const MAX_LEVELS: usize = 5;
const MAX_VALUES: usize = 256;

/// Appends one `proto_message!` call per message (nested ones included) declared in `file`.
///
/// `micro_path` is the path of the runtime crate, `::micro` unless the user renamed it.
pub(crate) fn append_message_impls(
    file: &FileDescriptorProto,
    types: &Types<'_>,
    micro_path: &str,
    out: &mut String,
) {
    let package = file.package();
    for message in &file.message_type {
        append_message(message, package, "", types, micro_path, out);
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
    types: &Types<'_>,
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
    let mut describer = Describer {
        types,
        path: vec![format!(".{full_name}")],
        budget: MAX_VALUES,
    };
    let shape = json!({
        "name": message.name(),
        "type": message.name(),
        "values": describer.fields(message, &full_name, 1),
    });
    // Go Micro's registry JSON of the message, as a raw string unless it needs escapes.
    let shape = shape.to_string();
    let literal = if shape.contains('"') && !shape.contains("\"#") {
        format!("r#\"{shape}\"#")
    } else {
        format!("{shape:?}")
    };
    // Written already formatted the way rustfmt would, since this text is appended after prost
    // has run prettyplease over its own output.
    let one_line = format!("{micro_path}::proto_message!({rust_type}, {full_name:?}, {literal});");
    if one_line.len() <= 100 {
        let _ = writeln!(out, "{one_line}");
    } else {
        let _ = writeln!(out, "{micro_path}::proto_message!(");
        let _ = writeln!(out, "    {rust_type},");
        let _ = writeln!(out, "    {full_name:?},");
        let _ = writeln!(out, "    {literal}");
        let _ = writeln!(out, ");");
    }

    let nested_scope = format!("{rust_scope}{}::", rust_module_name(message.name()));
    for nested in &message.nested_type {
        append_message(nested, &full_name, &nested_scope, types, micro_path, out);
    }
}

/// Writes the registry's description of a message's fields (Go Micro's `Value` tree):
///
/// - a field is `{"name", "type"}`, its type as [`field_kind`] names it;
/// - a message field also has its message's fields as `values` (not a well-known type, which
///   is known by name, nor a message already being described, which would never end);
/// - an enum field has one `{"name": VALUE, "type": "enum"}` per value;
/// - the fields of a `oneof` are grouped in `{"name": oneof, "type": "oneof", "values": [..]}`
///   where its first field stands (proto3 `optional` fields are fields like any other).
struct Describer<'a> {
    types: &'a Types<'a>,
    /// The messages being described, outermost first.
    path: Vec<String>,
    /// How many more values may be written.
    budget: usize,
}

impl Describer<'_> {
    fn fields(
        &mut self,
        message: &DescriptorProto,
        full_name: &str,
        level: usize,
    ) -> Vec<JsonValue> {
        let mut values: Vec<JsonValue> = Vec::new();
        let mut oneofs: HashMap<i32, usize> = HashMap::new();
        // A message's own fields are always listed; the budget bounds how far below they go.
        self.budget = self.budget.saturating_sub(message.field.len());
        for field in &message.field {
            let value = self.field(field, message, full_name, level);
            let group = field.oneof_index.filter(|_| !field.proto3_optional());
            match group {
                Some(index) => match oneofs.get(&index) {
                    Some(&at) => {
                        if let Some(JsonValue::Array(members)) = values[at].get_mut("values") {
                            members.push(value);
                        }
                    }
                    None => {
                        let name = usize::try_from(index)
                            .ok()
                            .and_then(|i| message.oneof_decl.get(i))
                            .map_or("", |o| o.name());
                        oneofs.insert(index, values.len());
                        values.push(json!({"name": name, "type": "oneof", "values": [value]}));
                    }
                },
                None => values.push(value),
            }
        }
        values
    }

    fn field(
        &mut self,
        field: &FieldDescriptorProto,
        parent: &DescriptorProto,
        parent_name: &str,
        level: usize,
    ) -> JsonValue {
        let kind = field_kind(field, parent, parent_name);
        // A map's values are described as its value type.
        let described = map_entry_of(field, parent, parent_name)
            .and_then(|entry| entry.field.iter().find(|f| f.number() == 2))
            .unwrap_or(field);
        let values = self.children(described, level);
        if values.is_empty() {
            json!({"name": field.name(), "type": kind})
        } else {
            json!({"name": field.name(), "type": kind, "values": values})
        }
    }

    /// The fields of a message field's message, or the values of an enum field's enum.
    fn children(&mut self, field: &FieldDescriptorProto, level: usize) -> Vec<JsonValue> {
        let type_name = field.type_name();
        match field.r#type() {
            Type::Enum => {
                let Some(e) = self.types.enums.get(type_name) else {
                    return Vec::new();
                };
                // All of them or none: a partial list would refuse good values.
                if e.value.len() > self.budget {
                    return Vec::new();
                }
                self.budget -= e.value.len();
                e.value
                    .iter()
                    .map(|v| json!({"name": v.name(), "type": "enum"}))
                    .collect()
            }
            Type::Message if level < MAX_LEVELS && self.budget > 0 => {
                let known = type_name.starts_with(".google.protobuf.");
                let open = self.path.iter().any(|p| p == type_name);
                let Some(message) = self
                    .types
                    .messages
                    .get(type_name)
                    .filter(|_| !known && !open)
                else {
                    return Vec::new();
                };
                self.path.push(type_name.to_string());
                let values = self.fields(message, type_name.trim_start_matches('.'), level + 1);
                self.path.pop();
                values
            }
            _ => Vec::new(),
        }
    }
}

/// The type name a field has in the registry's endpoint description.
///
/// Scalars keep their proto name (`string`, `int32`, `bytes`), messages and enums their short
/// name, repeated fields get Go Micro's `[]` prefix and maps read `map<K, V>`.
fn field_kind(field: &FieldDescriptorProto, parent: &DescriptorProto, parent_name: &str) -> String {
    if let Some(entry) = map_entry_of(field, parent, parent_name) {
        let key = entry.field.iter().find(|f| f.number() == 1);
        let value = entry.field.iter().find(|f| f.number() == 2);
        if let (Some(key), Some(value)) = (key, value) {
            return format!("map<{}, {}>", single_kind(key), single_kind(value));
        }
    }
    let kind = single_kind(field);
    if field.label() == Label::Repeated {
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
    use prost_types::{EnumValueDescriptorProto, MessageOptions, OneofDescriptorProto};

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

    /// The registry description each generated call carries, by message name.
    fn shapes(code: &str) -> Vec<(String, JsonValue)> {
        code.split("proto_message!(")
            .skip(1)
            .filter_map(|call| {
                let name = call.split('"').nth(1)?.to_string();
                let json = call.split_once("r#\"")?.1.split_once("\"#")?.0;
                Some((name, serde_json::from_str(json).ok()?))
            })
            .collect()
    }

    #[test]
    fn describes_nested_messages_enums_oneofs_repeated_and_maps() {
        let entry = DescriptorProto {
            name: Some("LabelsEntry".into()),
            field: vec![
                field("key", 1, Type::String, Label::Optional, ""),
                field(
                    "value",
                    2,
                    Type::Message,
                    Label::Optional,
                    ".pkg.Outer.Inner",
                ),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let inner = DescriptorProto {
            name: Some("Inner".into()),
            field: vec![
                field("mood", 1, Type::Enum, Label::Optional, ".pkg.Mood"),
                // Recursive: described once, then by name only.
                field(
                    "next",
                    2,
                    Type::Message,
                    Label::Optional,
                    ".pkg.Outer.Inner",
                ),
            ],
            ..Default::default()
        };
        let mut text = field("text", 7, Type::String, Label::Optional, "");
        text.oneof_index = Some(0);
        let mut number = field("number", 8, Type::Int64, Label::Optional, "");
        number.oneof_index = Some(0);
        let mut maybe = field("maybe", 9, Type::Bool, Label::Optional, "");
        maybe.oneof_index = Some(1);
        maybe.proto3_optional = Some(true);
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
                    "labels",
                    5,
                    Type::Message,
                    Label::Repeated,
                    ".pkg.Outer.LabelsEntry",
                ),
                field(
                    "when",
                    6,
                    Type::Message,
                    Label::Optional,
                    ".google.protobuf.Timestamp",
                ),
                text,
                number,
                maybe,
            ],
            nested_type: vec![entry, inner],
            oneof_decl: vec![
                OneofDescriptorProto {
                    name: Some("choice".into()),
                    ..Default::default()
                },
                OneofDescriptorProto {
                    name: Some("_maybe".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mood = EnumDescriptorProto {
            name: Some("Mood".into()),
            value: ["HAPPY", "SAD"]
                .iter()
                .map(|name| EnumValueDescriptorProto {
                    name: Some(name.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("pkg".into()),
                message_type: vec![outer],
                enum_type: vec![mood],
                ..Default::default()
            }],
        };
        let mut out = String::new();
        append_message_impls(&set.file[0], &Types::of(&set), "::micro", &mut out);
        assert!(
            out.starts_with("::micro::proto_message!(\n    Outer,\n    \"pkg.Outer\",\n    r#\"{")
        );
        assert!(
            out.contains("::micro::proto_message!(\n    outer::Inner,"),
            "{out}"
        );

        let mood = json!([{"name": "HAPPY", "type": "enum"}, {"name": "SAD", "type": "enum"}]);
        let inner = json!([
            {"name": "mood", "type": "Mood", "values": mood},
            {"name": "next", "type": "Inner"},
        ]);
        let shapes = shapes(&out);
        assert_eq!(
            shapes[0],
            (
                "pkg.Outer".to_string(),
                json!({"name": "Outer", "type": "Outer", "values": [
                    {"name": "name", "type": "string"},
                    {"name": "tags", "type": "[]string"},
                    {"name": "inner", "type": "Inner", "values": inner},
                    {"name": "labels", "type": "map<string, Inner>", "values": inner},
                    {"name": "when", "type": "Timestamp"},
                    {"name": "choice", "type": "oneof", "values": [
                        {"name": "text", "type": "string"},
                        {"name": "number", "type": "int64"},
                    ]},
                    {"name": "maybe", "type": "bool"},
                ]})
            )
        );
        assert_eq!(
            shapes[1],
            (
                "pkg.Outer.Inner".to_string(),
                json!({"name": "Inner", "type": "Inner", "values": inner}),
            )
        );
    }

    #[test]
    fn a_wide_graph_of_messages_is_described_within_bounds() {
        // Ten fields of the next message, six levels down: 10^6 values if described whole.
        let messages: Vec<DescriptorProto> = (0..6)
            .map(|n| DescriptorProto {
                name: Some(format!("M{n}")),
                field: (1..=10)
                    .map(|i| {
                        let (kind, type_name) = match n {
                            5 => (Type::String, String::new()),
                            _ => (Type::Message, format!(".pkg.M{}", n + 1)),
                        };
                        field(&format!("f{i}"), i, kind, Label::Optional, &type_name)
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("pkg".into()),
                message_type: messages,
                ..Default::default()
            }],
        };
        let mut out = String::new();
        append_message_impls(&set.file[0], &Types::of(&set), "::micro", &mut out);
        let (_, m0) = &shapes(&out)[0];
        // Every field of the message itself, and a bounded part of what lies below.
        assert_eq!(m0["values"].as_array().map(Vec::len), Some(10));
        assert_eq!(m0["values"][0]["values"][0]["type"], "M2");
        let count = m0.to_string().matches("\"name\"").count();
        assert!(count < MAX_VALUES + 10 * MAX_LEVELS, "{count} values");
    }
}
