//! JSON Schemas of request and response messages, from the [`Value`](super::Value) tree that
//! services register for each endpoint (the only description Go Micro services give), as
//! protobuf's canonical JSON mapping writes those messages. The API gateway's OpenAPI
//! document and the MCP gateway's tools both use them.

use serde_json::{json, Map, Value};

use super::Value as Shape;

/// How deep nested messages are described; a recursive message stops being described there.
const MAX_DEPTH: usize = 8;

/// The schema of a request or response message: always an object (MCP requires it of
/// `inputSchema` and `outputSchema`); one the service did not describe takes any object.
///
/// ```
/// use micro::registry::{json_schema, Value};
///
/// let hello = Value {
///     name: "HelloRequest".into(),
///     kind: "HelloRequest".into(),
///     values: vec![Value { name: "name".into(), kind: "string".into(), values: vec![] }],
/// };
/// let schema = serde_json::Value::Object(json_schema::message(Some(&hello)));
/// assert_eq!(schema["properties"]["name"]["type"], "string");
/// ```
pub fn message(shape: Option<&Shape>) -> Map<String, Value> {
    let mut schema = match shape {
        Some(shape) => object(&shape.values, 0),
        None => Map::from_iter([("type".to_string(), json!("object"))]),
    };
    if let Some(shape) = shape.filter(|s| !s.kind.is_empty()) {
        schema.insert("title".into(), json!(shape.kind));
    }
    schema
}

/// An object with `fields`. The fields of a oneof group (`type: "oneof"`) are properties like
/// the others, each saying which others it excludes (`dependentSchemas`: with `text` set,
/// `number` must be absent), so the object itself needs no `oneOf`, which some tool-calling
/// models refuse at the top of a schema.
fn object(fields: &[Shape], depth: usize) -> Map<String, Value> {
    let mut properties = Map::new();
    let mut exclusive = Map::new();
    for f in fields.iter().filter(|f| !f.name.is_empty()) {
        if f.kind != "oneof" {
            properties.insert(f.name.clone(), field(&f.kind, &f.values, depth));
            continue;
        }
        let members: Vec<&str> = f
            .values
            .iter()
            .filter(|m| !m.name.is_empty())
            .map(|m| m.name.as_str())
            .collect();
        for member in f.values.iter().filter(|m| !m.name.is_empty()) {
            let mut schema = field(&member.kind, &member.values, depth);
            if let Value::Object(schema) = &mut schema {
                let note = format!(
                    "One of `{}`: set at most one of {}.",
                    f.name,
                    members.join(", ")
                );
                schema.insert("description".into(), json!(note));
            }
            properties.insert(member.name.clone(), schema);
            let others: Map<String, Value> = members
                .iter()
                .filter(|other| **other != member.name)
                .map(|other| (other.to_string(), json!(false)))
                .collect();
            exclusive.insert(member.name.clone(), json!({"properties": others}));
        }
    }
    let mut object = Map::from_iter([
        ("type".to_string(), json!("object")),
        ("properties".to_string(), Value::Object(properties)),
    ]);
    if !exclusive.is_empty() {
        object.insert("dependentSchemas".into(), Value::Object(exclusive));
    }
    object
}

/// The schema of one field's type name: `string`, `[]int64`, `map<string, Inner>`, or a
/// message name with its fields.
fn field(kind: &str, fields: &[Shape], depth: usize) -> Value {
    if let Some(item) = kind.strip_prefix("[]").filter(|k| *k != "byte") {
        return json!({"type": "array", "items": field(item, fields, depth)});
    }
    if let Some(inner) = kind.strip_prefix("map<").and_then(|k| k.strip_suffix('>')) {
        let value = inner.split_once(',').map_or(inner, |(_, v)| v.trim());
        return json!({"type": "object", "additionalProperties": field(value, fields, depth)});
    }
    if !fields.is_empty() && fields.iter().all(|v| v.kind == "enum") {
        // Protobuf's JSON writes an enum as its value's name (and reads the number too).
        let names: Vec<&str> = fields.iter().map(|v| v.name.as_str()).collect();
        return json!({"type": "string", "enum": names, "title": kind});
    }
    if let Some(known) = scalar(kind).or_else(|| well_known(kind)) {
        return known;
    }
    if fields.is_empty() || depth >= MAX_DEPTH {
        // An enum described by name only, or a message described no further: any value.
        return json!({});
    }
    let mut nested = object(fields, depth + 1);
    nested.insert("title".into(), json!(kind));
    Value::Object(nested)
}

fn scalar(kind: &str) -> Option<Value> {
    Some(match kind {
        "string" => json!({"type": "string"}),
        "bool" => json!({"type": "boolean"}),
        // Protobuf's JSON also writes "NaN" and "Infinity" as strings.
        "double" | "float" | "float32" | "float64" => json!({"type": ["number", "string"]}),
        "int32" | "uint32" | "sint32" | "fixed32" | "sfixed32" | "int" | "uint" => {
            json!({"type": "integer"})
        }
        // Protobuf's JSON writes 64-bit integers as strings and reads either.
        "int64" | "uint64" | "sint64" | "fixed64" | "sfixed64" => {
            json!({"type": ["integer", "string"]})
        }
        "bytes" | "[]byte" => json!({"type": "string", "contentEncoding": "base64"}),
        _ => return None,
    })
}

/// Protobuf's well-known types in their JSON mapping. The registry carries short names only,
/// so a message of one's own called `Timestamp` is taken for Google's.
fn well_known(kind: &str) -> Option<Value> {
    Some(match kind {
        "Timestamp" => json!({"type": "string", "format": "date-time"}),
        "Duration" => {
            json!({"type": "string", "description": "seconds with an `s` suffix, e.g. \"1.5s\""})
        }
        "FieldMask" => json!({"type": "string"}),
        "Struct" | "Empty" | "Any" => json!({"type": "object"}),
        "ListValue" => json!({"type": "array"}),
        "Value" => json!({}),
        "StringValue" => json!({"type": ["string", "null"]}),
        "BytesValue" => json!({"type": ["string", "null"], "contentEncoding": "base64"}),
        "BoolValue" => json!({"type": ["boolean", "null"]}),
        "Int32Value" | "UInt32Value" => json!({"type": ["integer", "null"]}),
        "Int64Value" | "UInt64Value" => json!({"type": ["integer", "string", "null"]}),
        "DoubleValue" | "FloatValue" => json!({"type": ["number", "string", "null"]}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str, kind: &str, values: Vec<Shape>) -> Shape {
        Shape {
            name: name.into(),
            kind: kind.into(),
            values,
        }
    }

    #[test]
    fn maps_every_kind_of_field() {
        let inner = shape("inner", "Inner", vec![shape("id", "int64", vec![])]);
        let request = shape(
            "Request",
            "Request",
            vec![
                shape("name", "string", vec![]),
                shape("tags", "[]string", vec![]),
                shape("labels", "map<string, int32>", vec![]),
                shape("data", "bytes", vec![]),
                shape("when", "Timestamp", vec![]),
                shape("color", "Color", vec![]),
                shape(
                    "mood",
                    "Mood",
                    vec![shape("HAPPY", "enum", vec![]), shape("SAD", "enum", vec![])],
                ),
                shape(
                    "choice",
                    "oneof",
                    vec![
                        shape("text", "string", vec![]),
                        shape("number", "int32", vec![]),
                    ],
                ),
                inner.clone(),
                shape("children", "[]Inner", inner.values.clone()),
            ],
        );
        let schema = Value::Object(message(Some(&request)));
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["title"], "Request");
        let p = &schema["properties"];
        assert_eq!(p["name"], json!({"type": "string"}));
        assert_eq!(
            p["tags"],
            json!({"type": "array", "items": {"type": "string"}})
        );
        assert_eq!(
            p["labels"],
            json!({"type": "object", "additionalProperties": {"type": "integer"}})
        );
        assert_eq!(p["data"]["contentEncoding"], "base64");
        assert_eq!(p["when"]["format"], "date-time");
        assert_eq!(p["color"], json!({}));
        assert_eq!(
            p["mood"],
            json!({"type": "string", "enum": ["HAPPY", "SAD"], "title": "Mood"})
        );
        assert_eq!(p["text"]["type"], "string");
        assert_eq!(p["number"]["type"], "integer");
        assert!(p.get("choice").is_none());
        assert_eq!(
            schema["dependentSchemas"],
            json!({
                "text": {"properties": {"number": false}},
                "number": {"properties": {"text": false}},
            })
        );
        assert_eq!(
            p["inner"]["properties"]["id"],
            json!({"type": ["integer", "string"]})
        );
        assert_eq!(p["children"]["items"]["title"], "Inner");
    }

    #[test]
    fn an_undescribed_message_takes_any_object() {
        assert_eq!(Value::Object(message(None)), json!({"type": "object"}));
    }

    #[test]
    fn a_recursive_message_ends() {
        let mut node = shape("node", "Node", vec![]);
        for _ in 0..20 {
            node = shape("node", "Node", vec![node]);
        }
        let schema = Value::Object(message(Some(&node)));
        let mut depth = 0;
        let mut at = &schema;
        while let Some(next) = at.get("properties").and_then(|p| p.get("node")) {
            at = next;
            depth += 1;
        }
        assert!(depth <= MAX_DEPTH + 1, "{depth}");
    }
}
