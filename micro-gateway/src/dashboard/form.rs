//! Request forms and shape sketches from an endpoint's JSON Schema (what
//! `micro::registry::json_schema` makes of the registry's description). The schema is read
//! as plain JSON Schema: objects, lists, enums and scalars get fields of their own; anything
//! else (maps, `oneOf`, a message described no further) a JSON text box, so every request
//! stays expressible.
//!
//! Each field is an element with `data-kind` and `data-name`; `dashboard.js` reads them back
//! into JSON, so the markup here and the reader there change together.

use std::fmt::Write as _;

use micro::core::registry::Value as Shape;
use serde_json::{Map, Value};

use super::html::escape;

/// How deep nested fields go; deeper values are JSON text boxes.
const MAX_DEPTH: usize = 8;
/// Fields on one form; the rest are JSON text boxes.
const MAX_FIELDS: usize = 300;
/// The longest sketch of a shape.
const MAX_SKETCH: usize = 400;

/// What a schema asks for, as far as the form is concerned.
enum Kind<'a> {
    Object(&'a Map<String, Value>),
    Array(&'a Value),
    Enum(Vec<&'a str>),
    Bool,
    Integer,
    /// A 64-bit integer: protobuf's JSON writes it as a string (and reads either).
    Int64,
    Number,
    Text,
    Json,
}

impl Kind<'_> {
    fn name(&self) -> &'static str {
        match self {
            Kind::Object(_) => "object",
            Kind::Array(_) => "array",
            Kind::Enum(_) => "enum",
            Kind::Bool => "bool",
            Kind::Integer => "integer",
            Kind::Int64 => "int64",
            Kind::Number => "number",
            Kind::Text => "text",
            Kind::Json => "json",
        }
    }
}

/// The schema's types, `null` left out (a wrapper type's "or nothing" is an empty field).
fn types(schema: &Value) -> Vec<&str> {
    let mut types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    types.retain(|t| *t != "null");
    types.sort_unstable();
    types
}

fn kind(schema: &Value) -> Kind<'_> {
    if let Some(Value::Array(values)) = schema.get("enum") {
        let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() && names.len() == values.len() {
            return Kind::Enum(names);
        }
        return Kind::Json;
    }
    if schema.get("oneOf").is_some() || schema.get("anyOf").is_some() {
        return Kind::Json;
    }
    match types(schema).as_slice() {
        ["object"] => match (schema.get("properties"), schema.get("additionalProperties")) {
            (Some(Value::Object(properties)), None) => Kind::Object(properties),
            _ => Kind::Json,
        },
        ["array"] => match schema.get("items") {
            Some(items @ Value::Object(_)) => Kind::Array(items),
            _ => Kind::Json,
        },
        ["boolean"] => Kind::Bool,
        ["integer"] => Kind::Integer,
        ["integer", "string"] => Kind::Int64,
        ["number"] | ["number", "string"] => Kind::Number,
        ["string"] => Kind::Text,
        _ => Kind::Json,
    }
}

/// An object's properties in the order the registry's description lists its fields (the
/// proto's order), where it has them; the rest after, as the schema has them.
fn ordered<'a>(
    properties: &'a Map<String, Value>,
    shape: Option<&'a Shape>,
) -> Vec<(&'a str, &'a Value, Option<&'a Shape>)> {
    let fields = shape.map_or(&[][..], |s| s.values.as_slice());
    let mut out: Vec<(&str, &Value, Option<&Shape>)> = fields
        .iter()
        .filter_map(|f| {
            let (name, property) = properties.get_key_value(&f.name)?;
            Some((name.as_str(), property, Some(f)))
        })
        .collect();
    for (name, property) in properties {
        if !fields.iter().any(|f| &f.name == name) {
            out.push((name.as_str(), property, None));
        }
    }
    out
}

/// The fields of a request form for `schema` (an object schema: its properties), in the
/// order of `shape`, the registry's description it was made from.
pub(super) fn fields(schema: &Value, shape: Option<&Shape>) -> String {
    let mut form = Form::default();
    match kind(schema) {
        Kind::Object(properties) => {
            for (name, property, shape) in ordered(properties, shape) {
                form.field(name, property, shape, 1);
            }
            if properties.is_empty() {
                form.out
                    .push_str("<p class=\"note\">This request has no fields.</p>\n");
            }
        }
        _ => form.field("request", schema, shape, 1),
    }
    form.out
}

#[derive(Default)]
struct Form {
    out: String,
    /// Ids handed out so far: each label points at its own control.
    ids: usize,
    /// Fields made so far, bounded by [`MAX_FIELDS`].
    fields: usize,
}

impl Form {
    fn id(&mut self) -> String {
        self.ids += 1;
        format!("f{}", self.ids)
    }

    /// One field named `name` (empty for a list's item).
    fn field(&mut self, name: &str, schema: &Value, shape: Option<&Shape>, depth: usize) {
        self.fields += 1;
        let mut kind = kind(schema);
        let nested = matches!(kind, Kind::Object(_) | Kind::Array(_));
        if nested && (depth > MAX_DEPTH || self.fields > MAX_FIELDS) {
            kind = Kind::Json;
        }
        let label = if name.is_empty() { "item" } else { name };
        let title = schema
            .get("title")
            .and_then(Value::as_str)
            .map(|t| format!(" <small>{}</small>", escape(t)))
            .unwrap_or_default();
        let attrs = format!(
            "data-kind=\"{}\" data-name=\"{}\"",
            kind.name(),
            escape(name)
        );
        match kind {
            Kind::Object(properties) => {
                let _ = writeln!(
                    self.out,
                    "<fieldset class=\"field\" {attrs}><legend>{}{title}</legend>",
                    escape(label)
                );
                for (child, property, shape) in ordered(properties, shape) {
                    self.field(child, property, shape, depth + 1);
                }
                self.out.push_str("</fieldset>\n");
            }
            Kind::Array(items) => {
                let add = self.id();
                let _ = write!(
                    self.out,
                    "<fieldset class=\"field\" {attrs}><legend>{}{title} <small>list</small>\
                     </legend>\n<ol class=\"items\"></ol>\n<template>",
                    escape(label)
                );
                self.out.push_str("<li>");
                // A list's description is its item's.
                self.field("", items, shape, depth + 1);
                self.out.push_str(
                    "<button type=\"button\" class=\"remove\">Remove</button></li></template>\n",
                );
                let _ = writeln!(
                    self.out,
                    "<button type=\"button\" class=\"add\" id=\"{add}\">Add {}</button></fieldset>",
                    escape(label)
                );
            }
            kind => {
                let id = self.id();
                let help = schema
                    .get("description")
                    .and_then(Value::as_str)
                    .map(|d| (format!("{id}-help"), d));
                let described = help
                    .as_ref()
                    .map(|(hid, _)| format!(" aria-describedby=\"{hid}\""))
                    .unwrap_or_default();
                let control = control(&kind, &id, &described);
                let _ = write!(
                    self.out,
                    "<div class=\"field\" {attrs}><label for=\"{id}\">{}{title} <small>{}</small>\
                     </label> {control}",
                    escape(label),
                    hint(&kind, schema, shape)
                );
                if let Some((hid, text)) = help {
                    let _ = write!(self.out, " <small id=\"{hid}\">{}</small>", escape(text));
                }
                self.out.push_str("</div>\n");
            }
        }
    }
}

/// The control of a scalar (or JSON) field.
fn control(kind: &Kind<'_>, id: &str, described: &str) -> String {
    match kind {
        Kind::Enum(names) => {
            let mut out =
                format!("<select id=\"{id}\"{described}><option value=\"\">(default)</option>");
            for name in names {
                let _ = write!(out, "<option>{}</option>", escape(name));
            }
            out.push_str("</select>");
            out
        }
        Kind::Bool => format!("<input id=\"{id}\" type=\"checkbox\"{described}>"),
        Kind::Integer => format!("<input id=\"{id}\" type=\"number\" step=\"1\"{described}>"),
        Kind::Int64 => format!("<input id=\"{id}\" inputmode=\"numeric\"{described}>"),
        Kind::Number => format!("<input id=\"{id}\" type=\"number\" step=\"any\"{described}>"),
        Kind::Text => format!("<input id=\"{id}\"{described}>"),
        _ => {
            format!("<textarea id=\"{id}\" rows=\"2\" spellcheck=\"false\"{described}></textarea>")
        }
    }
}

/// The type words after a field's label, as HTML.
fn hint(kind: &Kind<'_>, schema: &Value, shape: Option<&Shape>) -> String {
    match kind {
        Kind::Enum(_) => "enum".to_string(),
        Kind::Bool => "boolean".to_string(),
        Kind::Integer => "integer".to_string(),
        Kind::Int64 => "64-bit integer".to_string(),
        Kind::Number => "number".to_string(),
        Kind::Text => match schema.get("contentEncoding").and_then(Value::as_str) {
            Some("base64") => "base64".to_string(),
            _ => match schema.get("format").and_then(Value::as_str) {
                Some(format) => escape(format),
                None => "string".to_string(),
            },
        },
        _ => format!("JSON: {}", escape(&sketch(schema, shape))),
    }
}

/// A short description of a shape: `{name: string, count: integer}`, `[string]`,
/// `"A" | "B"`, `any`.
pub(super) fn sketch(schema: &Value, shape: Option<&Shape>) -> String {
    let mut out = String::new();
    sketch_into(schema, shape, 0, &mut out);
    if out.len() > MAX_SKETCH {
        let mut end = MAX_SKETCH;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn sketch_into(schema: &Value, shape: Option<&Shape>, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH || out.len() > MAX_SKETCH {
        out.push('…');
        return;
    }
    let alternatives = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array);
    if let Some(alternatives) = alternatives {
        out.push_str("one of (");
        for (i, alternative) in alternatives.iter().enumerate() {
            if i > 0 {
                out.push_str(" | ");
            }
            sketch_into(alternative, None, depth + 1, out);
        }
        out.push(')');
        return;
    }
    match kind(schema) {
        Kind::Object(properties) => {
            out.push('{');
            for (i, (name, property, shape)) in ordered(properties, shape).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(name);
                out.push_str(": ");
                sketch_into(property, shape, depth + 1, out);
            }
            out.push('}');
        }
        Kind::Array(items) => {
            out.push('[');
            sketch_into(items, shape, depth + 1, out);
            out.push(']');
        }
        Kind::Enum(names) => {
            let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            out.push_str(&quoted.join(" | "));
        }
        Kind::Bool => out.push_str("boolean"),
        Kind::Integer => out.push_str("integer"),
        Kind::Int64 => out.push_str("int64"),
        Kind::Number => out.push_str("number"),
        Kind::Text => out.push_str("string"),
        Kind::Json => match (types(schema).as_slice(), schema.get("additionalProperties")) {
            (["object"], Some(values)) => {
                out.push_str("{string: ");
                sketch_into(values, shape, depth + 1, out);
                out.push('}');
            }
            ([], _) => out.push_str("any"),
            (types, _) => out.push_str(&types.join(" | ")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer"},
                "big": {"type": ["integer", "string"]},
                "color": {"type": "string", "enum": ["RED", "GREEN"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "inner": {"type": "object", "title": "Inner", "properties": {"on": {"type": "boolean"}}},
                "choice": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            },
        });
        let html = fields(&schema, None);
        assert!(
            html.contains("data-kind=\"text\" data-name=\"name\""),
            "{html}"
        );
        assert!(html.contains("data-kind=\"integer\" data-name=\"count\""));
        assert!(html.contains("data-kind=\"int64\" data-name=\"big\""));
        assert!(html.contains("<option>GREEN</option>"));
        assert!(html.contains("data-kind=\"array\" data-name=\"tags\""));
        assert!(html.contains("<template><li><div class=\"field\" data-kind=\"text\""));
        assert!(html.contains("data-kind=\"json\" data-name=\"labels\""));
        assert!(html.contains("data-kind=\"object\" data-name=\"inner\""));
        assert!(html.contains("data-kind=\"bool\" data-name=\"on\""));
        assert!(html.contains("data-kind=\"json\" data-name=\"choice\""));
        // Every control has its own label.
        let controls = ["<input ", "<select ", "<textarea "]
            .iter()
            .map(|c| html.matches(c).count())
            .sum::<usize>();
        assert_eq!(html.matches("<label for=").count(), controls, "{html}");
        assert_eq!(
            sketch(&schema["properties"]["inner"], None),
            "{on: boolean}"
        );
        assert_eq!(
            sketch(&schema["properties"]["labels"], None),
            "{string: integer}"
        );
        assert_eq!(
            sketch(&schema["properties"]["color"], None),
            "\"RED\" | \"GREEN\""
        );
    }

    #[test]
    fn fields_keep_the_proto_order() {
        let shape = |name: &str, kind: &str, values: Vec<Shape>| Shape {
            name: name.into(),
            kind: kind.into(),
            values,
        };
        let request = shape(
            "StreamRequest",
            "StreamRequest",
            vec![
                shape("name", "string", vec![]),
                shape("count", "int32", vec![]),
            ],
        );
        let schema = Value::Object(micro::registry::json_schema::message(Some(&request)));
        assert_eq!(
            sketch(&schema, Some(&request)),
            "{name: string, count: integer}"
        );
        let html = fields(&schema, Some(&request));
        let name = html.find("data-name=\"name\"").expect("name");
        let count = html.find("data-name=\"count\"").expect("count");
        assert!(name < count, "{html}");
    }

    #[test]
    fn hostile_names_are_text() {
        let schema = json!({
            "type": "object",
            "properties": {"<script>alert(1)</script>": {"type": "string", "title": "\"><img>"}},
        });
        let html = fields(&schema, None);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img>"), "{html}");
    }

    #[test]
    fn deep_and_recursive_shapes_end() {
        let mut schema = json!({"type": "string"});
        for _ in 0..50 {
            schema = json!({"type": "object", "properties": {"next": schema}});
        }
        let html = fields(&schema, None);
        assert!(html.contains("data-kind=\"json\""));
        assert!(sketch(&schema, None).len() <= MAX_SKETCH + '…'.len_utf8());
    }
}
