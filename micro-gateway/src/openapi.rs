//! `GET /openapi.json`: an OpenAPI 3.1 document of every endpoint in the registry, built from
//! the request and response descriptions services register, kept until the registry changes.

use micro::core::registry::{Service as Registration, Value as Shape};
use serde_json::{json, Map, Value};

/// How deep nested messages are described; the registry describes three levels at most.
const MAX_DEPTH: usize = 8;

/// The document for these services (each with its endpoints); `secured` adds bearer
/// authentication, with `public` telling which operations need none.
pub(crate) fn document(
    services: &[Registration],
    secured: bool,
    public: &dyn Fn(&str) -> bool,
) -> Value {
    let mut paths = Map::new();
    for service in services {
        for endpoint in &service.endpoints {
            let subscriber = endpoint
                .metadata
                .get("subscriber")
                .is_some_and(|v| v == "true");
            let path = format!("/api/{}/{}", service.name, endpoint.name);
            if subscriber || endpoint.name.is_empty() || paths.contains_key(&path) {
                continue;
            }
            let stream = endpoint.metadata.get("stream").is_some_and(|v| v == "true");
            let mut operation = json!({
                "operationId": format!("{}.{}", service.name, endpoint.name),
                "summary": format!("{} of {}", endpoint.name, service.name),
                "tags": [service.name],
                "requestBody": {
                    "required": false,
                    "content": {"application/json": {"schema": message(endpoint.request.as_ref())}},
                },
                "responses": {
                    "200": reply(message(endpoint.response.as_ref()), stream),
                    "default": {"$ref": "#/components/responses/Error"},
                },
            });
            if stream {
                operation["description"] = json!(
                    "A streaming endpoint: with `Accept: text/event-stream` each reply is one \
                     Server-Sent Event; over a WebSocket (GET with Upgrade) every stream kind \
                     works, one JSON text message per message each way."
                );
            }
            if secured && public(&endpoint.name) {
                operation["security"] = json!([]);
            }
            paths.insert(path, json!({ "post": operation }));
        }
    }
    for (path, item) in fixed_routes() {
        paths.insert(path.to_string(), item);
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Micro API gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every endpoint of the services in the registry, called with JSON.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": error_schema()},
            "responses": {
                "Error": {
                    "description": "Go Micro's error: the HTTP status follows its code.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        },
    });
    if secured {
        doc["components"]["securitySchemes"] =
            json!({"bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"bearer": []}]);
    }
    doc
}

fn reply(schema: Value, stream: bool) -> Value {
    let mut content = json!({"application/json": {"schema": schema}});
    if stream {
        content["text/event-stream"] = json!({
            "schema": {"type": "string", "description": "one `data:` event per reply (its JSON)"},
        });
    }
    json!({"description": "The reply.", "content": content})
}

/// The routes that do not come from the registry.
fn fixed_routes() -> [(&'static str, Value); 4] {
    let error = json!({"$ref": "#/components/responses/Error"});
    let any = json!({"description": "JSON", "content": {"application/json": {"schema": {}}}});
    [
        (
            "/services",
            json!({"get": {
                "operationId": "gateway.services",
                "summary": "The services in the registry",
                "responses": {"200": any, "default": error},
            }}),
        ),
        (
            "/services/{name}",
            json!({"get": {
                "operationId": "gateway.service",
                "summary": "One service: every version, its nodes and endpoints",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": any, "default": error},
            }}),
        ),
        (
            "/event/{topic}",
            json!({"post": {
                "operationId": "gateway.publish",
                "summary": "Publishes the JSON body on the topic",
                "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
                "responses": {"202": {"description": "Published"}, "default": error},
            }}),
        ),
        (
            "/health",
            json!({"get": {
                "operationId": "gateway.health",
                "summary": "Whether the gateway is up",
                "security": [],
                "responses": {"200": any},
            }}),
        ),
    ]
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "code": {"type": "integer"},
            "detail": {"type": "string"},
            "status": {"type": "string"},
        },
    })
}

/// A request or response message; an endpoint that registered none takes any JSON.
fn message(shape: Option<&Shape>) -> Value {
    match shape {
        Some(shape) => {
            let mut schema = object(&shape.values, 0);
            if !shape.kind.is_empty() {
                schema["title"] = json!(shape.kind);
            }
            schema
        }
        None => json!({}),
    }
}

fn object(fields: &[Shape], depth: usize) -> Value {
    let mut properties = Map::new();
    for field in fields {
        properties.insert(
            field.name.clone(),
            schema(&field.kind, &field.values, depth),
        );
    }
    json!({"type": "object", "properties": properties})
}

/// The JSON Schema of a registry type name (`string`, `[]int64`, `map<string, Inner>`,
/// `Inner` with its fields), as protobuf's JSON mapping writes it.
fn schema(kind: &str, fields: &[Shape], depth: usize) -> Value {
    if let Some(item) = kind.strip_prefix("[]") {
        return json!({"type": "array", "items": schema(item, fields, depth)});
    }
    if let Some(inner) = kind.strip_prefix("map<").and_then(|k| k.strip_suffix('>')) {
        let value = inner.split_once(',').map_or(inner, |(_, v)| v.trim());
        return json!({"type": "object", "additionalProperties": schema(value, fields, depth)});
    }
    match kind {
        "string" => json!({"type": "string"}),
        "bool" => json!({"type": "boolean"}),
        "double" | "float" | "float32" | "float64" => json!({"type": "number"}),
        "int32" | "uint32" | "sint32" | "fixed32" | "sfixed32" | "int" | "uint" => {
            json!({"type": "integer"})
        }
        // Protobuf's JSON writes 64-bit integers as strings and reads either.
        "int64" | "uint64" | "sint64" | "fixed64" | "sfixed64" => {
            json!({"type": ["integer", "string"]})
        }
        "bytes" | "[]byte" => json!({"type": "string", "contentEncoding": "base64"}),
        _ if !fields.is_empty() && depth < MAX_DEPTH => {
            let mut nested = object(fields, depth + 1);
            nested["title"] = json!(kind);
            nested
        }
        // An enum or a message described no further: any JSON, named.
        _ => json!({"title": kind}),
    }
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
    fn registry_types_map_to_json_schema() {
        assert_eq!(schema("string", &[], 0), json!({"type": "string"}));
        assert_eq!(
            schema("[]int32", &[], 0),
            json!({"type": "array", "items": {"type": "integer"}})
        );
        assert_eq!(
            schema("map<string, bool>", &[], 0),
            json!({"type": "object", "additionalProperties": {"type": "boolean"}})
        );
        assert_eq!(
            schema("int64", &[], 0),
            json!({"type": ["integer", "string"]})
        );
        let inner = schema("Inner", &[shape("x", "double", vec![])], 0);
        assert_eq!(inner["title"], "Inner");
        assert_eq!(inner["properties"]["x"], json!({"type": "number"}));
        assert_eq!(schema("Colour", &[], 0), json!({"title": "Colour"}));
    }
}
