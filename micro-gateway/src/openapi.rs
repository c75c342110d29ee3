//! `GET /openapi.json`: an OpenAPI 3.1 document of every endpoint in the registry, built from
//! the request and response descriptions services register, kept until the registry changes.

use micro::core::registry::{Service as Registration, Value as Shape};
use micro::registry::json_schema;
use serde_json::{json, Map, Value};

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
            // The RPC's comment and example, where the service registered them (micro-build
            // does, from the proto).
            let mut description: Vec<&str> = endpoint
                .metadata
                .get("description")
                .map(|d| d.trim())
                .filter(|d| !d.is_empty())
                .into_iter()
                .collect();
            if stream {
                description.push(
                    "A streaming endpoint: with `Accept: text/event-stream` each reply is one \
                     Server-Sent Event; over a WebSocket (GET with Upgrade) every stream kind \
                     works, one JSON text message per message each way.",
                );
            }
            if !description.is_empty() {
                operation["description"] = json!(description.join("\n\n"));
            }
            let example = endpoint.metadata.get("example");
            if let Some(example) = example.and_then(|e| serde_json::from_str::<Value>(e).ok()) {
                operation["requestBody"]["content"]["application/json"]["example"] = example;
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
            json!({
                "post": {
                    "operationId": "gateway.publish",
                    "summary": "Publishes the JSON body on the topic",
                    "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
                    "responses": {"202": {"description": "Published"}, "default": error},
                },
                "get": {
                    "operationId": "gateway.subscribe",
                    "summary": "Subscribes to the topic: each message as a Server-Sent Event",
                    "parameters": [{"name": "topic", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "One `data:` event per message (its JSON), until the client goes away",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "default": error,
                    },
                },
            }),
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

/// A request or response message, as the registry describes it.
fn message(shape: Option<&Shape>) -> Value {
    Value::Object(json_schema::message(shape))
}
