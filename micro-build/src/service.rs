//! The prost `ServiceGenerator` that writes, per proto service, a typed client, a handler trait
//! and the function that turns an implementation of that trait into a `micro::Handler`.
//!
//! The generated code only names types and forwards calls: how a call is encoded, routed and
//! answered lives in the `micro` crate, so that what users read in `OUT_DIR` stays short.

use std::fmt::Write as _;

use heck::ToSnakeCase;
use prost_build::{Comments, Method, Service, ServiceGenerator};

/// How a method exchanges messages, from the `stream` keywords in the proto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStream,
    /// A stream of requests and one response (client streaming), or streams both ways.
    Stream,
}

impl Kind {
    fn of(method: &Method) -> Self {
        match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStream,
            (true, _) => Kind::Stream,
        }
    }

    /// What a person reads in the generated docs.
    fn describe(self, method: &Method) -> &'static str {
        match (self, method.server_streaming) {
            (Kind::Unary, _) => "unary",
            (Kind::ServerStream, _) => "server streaming",
            (Kind::Stream, false) => "client streaming",
            (Kind::Stream, true) => "bidirectional streaming",
        }
    }
}

/// Writes the Micro client, handler trait and registration function for each service.
#[derive(Debug, Clone)]
pub(crate) struct MicroServiceGenerator {
    /// Path of the runtime crate in the generated code (`::micro`).
    pub(crate) micro_path: String,
    /// Whether to write `<Service>Client`.
    pub(crate) build_client: bool,
    /// Whether to write the handler trait and `<service>_handler`.
    pub(crate) build_server: bool,
}

impl ServiceGenerator for MicroServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        if self.build_client {
            self.client(&service, buf);
        }
        if self.build_server {
            self.handler_trait(&service, buf);
            self.registration(&service, buf);
        }
    }
}

impl MicroServiceGenerator {
    fn client(&self, service: &Service, buf: &mut String) {
        let micro = &self.micro_path;
        let client = format!("{}Client", service.name);

        summary_then_comments(
            buf,
            &[&format!(
                "Client for the `{}` service: one async method per RPC.",
                service.proto_name
            )],
            &service.comments,
        );
        let _ = writeln!(buf, "#[derive(Debug, Clone)]");
        let _ = writeln!(buf, "pub struct {client} {{");
        let _ = writeln!(buf, "    client: {micro}::Client,");
        let _ = writeln!(buf, "    service: ::std::string::String,");
        let _ = writeln!(buf, "}}");

        let _ = writeln!(buf, "impl {client} {{");
        let _ = writeln!(
            buf,
            "    /// Calls the service registered under the name `service` (e.g. `\"{}\"`) through `client`.",
            service.package
        );
        let _ = writeln!(
            buf,
            "    pub fn new(service: impl ::core::convert::Into<::std::string::String>, client: {micro}::Client) -> Self {{"
        );
        let _ = writeln!(buf, "        Self {{ client, service: service.into() }}");
        let _ = writeln!(buf, "    }}");
        let _ = writeln!(buf, "    /// The Micro client that calls go through.");
        let _ = writeln!(buf, "    pub fn client(&self) -> &{micro}::Client {{");
        let _ = writeln!(buf, "        &self.client");
        let _ = writeln!(buf, "    }}");
        let _ = writeln!(buf, "    /// The name of the service this client calls.");
        let _ = writeln!(buf, "    pub fn service(&self) -> &str {{");
        let _ = writeln!(buf, "        &self.service");
        let _ = writeln!(buf, "    }}");

        let proto = match service.package.as_str() {
            "" => service.proto_name.clone(),
            package => format!("{package}.{}", service.proto_name),
        };
        for method in &service.methods {
            let kind = Kind::of(method);
            let endpoint = endpoint(service, method);
            let (input, output) = (&method.input_type, &method.output_type);
            doc_lines(
                buf,
                &[&format!("Calls `{endpoint}` ({}).", kind.describe(method))],
                &method.comments,
            );
            let (request, result, call) = match kind {
                Kind::Unary => (
                    input.as_str(),
                    format!("{micro}::Response<{output}>"),
                    "unary",
                ),
                Kind::ServerStream => (
                    input.as_str(),
                    format!("{micro}::Stream<{input}, {output}>"),
                    "server_stream",
                ),
                Kind::Stream => (
                    "()",
                    format!("{micro}::Stream<{input}, {output}>"),
                    "stream",
                ),
            };
            if kind == Kind::Stream {
                let _ = writeln!(
                    buf,
                    "    ///\n    /// The request only carries metadata and call options: send the messages on the returned stream, then close it."
                );
            }
            let _ = writeln!(
                buf,
                "    pub async fn {name}(&self, request: impl {micro}::IntoRequest<{request}>) -> ::core::result::Result<{result}, {micro}::Error> {{",
                name = method.name,
            );
            let _ = writeln!(
                buf,
                "        self.client.{call}(&self.service, {endpoint:?}, request.into_request().with_proto_service({proto:?})).await"
            );
            let _ = writeln!(buf, "    }}");
        }
        let _ = writeln!(buf, "}}");
    }

    fn handler_trait(&self, service: &Service, buf: &mut String) {
        let micro = &self.micro_path;
        summary_then_comments(
            buf,
            &[
                &format!(
                    "Handler for the `{}` service: implement it with `#[{micro}::async_trait]`",
                    service.proto_name
                ),
                &format!(
                    "and serve it with [`{}_handler`].",
                    service.name.to_snake_case()
                ),
            ],
            &service.comments,
        );
        let _ = writeln!(buf, "#[{micro}::async_trait]");
        let _ = writeln!(
            buf,
            "pub trait {}: ::core::marker::Send + ::core::marker::Sync + 'static {{",
            service.name
        );
        for method in &service.methods {
            let kind = Kind::of(method);
            let endpoint = endpoint(service, method);
            let (input, output) = (&method.input_type, &method.output_type);
            doc_lines(
                buf,
                &[&format!("Serves `{endpoint}` ({}).", kind.describe(method))],
                &method.comments,
            );
            let params = match kind {
                Kind::Unary => format!("request: {micro}::Request<{input}>"),
                Kind::ServerStream => format!(
                    "request: {micro}::Request<{input}>, stream: {micro}::ServerStream<{input}, {output}>"
                ),
                Kind::Stream => format!("stream: {micro}::ServerStream<{input}, {output}>"),
            };
            let result = match kind {
                Kind::Unary => format!("{micro}::Response<{output}>"),
                Kind::ServerStream | Kind::Stream => "()".to_string(),
            };
            let _ = writeln!(
                buf,
                "    async fn {}(&self, {params}) -> ::core::result::Result<{result}, {micro}::Error>;",
                method.name
            );
        }
        let _ = writeln!(buf, "}}");
    }

    fn registration(&self, service: &Service, buf: &mut String) {
        let micro = &self.micro_path;
        let trait_name = &service.name;
        let function = format!("{}_handler", trait_name.to_snake_case());

        let _ = writeln!(
            buf,
            "/// Builds the `{micro}::Handler` that serves the `{}` service with `handler`.",
            service.proto_name
        );
        let _ = writeln!(
            buf,
            "pub fn {function}<H: {trait_name}>(handler: H) -> {micro}::Handler {{"
        );
        if service.methods.is_empty() {
            let _ = writeln!(buf, "    let _ = handler;");
        } else {
            let _ = writeln!(buf, "    let handler = ::std::sync::Arc::new(handler);");
        }
        let _ = writeln!(buf, "    {micro}::Handler::new({:?})", service.proto_name);
        let _ = writeln!(buf, "        .file_descriptor_set(FILE_DESCRIPTOR_SET)");
        for method in &service.methods {
            let kind = Kind::of(method);
            let (input, output) = (&method.input_type, &method.output_type);
            let (register, params, args) = match kind {
                Kind::Unary => (
                    "unary",
                    format!("request: {micro}::Request<{input}>"),
                    "request",
                ),
                Kind::ServerStream => (
                    "server_stream",
                    format!(
                        "request: {micro}::Request<{input}>, stream: {micro}::ServerStream<{input}, {output}>"
                    ),
                    "request, stream",
                ),
                Kind::Stream => (
                    "stream",
                    format!("stream: {micro}::ServerStream<{input}, {output}>"),
                    "stream",
                ),
            };
            let _ = writeln!(buf, "        .{register}({:?}, {{", method.proto_name);
            let _ = writeln!(
                buf,
                "            let handler = ::std::sync::Arc::clone(&handler);"
            );
            let _ = writeln!(buf, "            move |{params}| {{");
            let _ = writeln!(
                buf,
                "                let handler = ::std::sync::Arc::clone(&handler);"
            );
            let _ = writeln!(
                buf,
                "                ::std::boxed::Box::pin(async move {{ handler.{}({args}).await }}) as {micro}::BoxFuture<'static, _>",
                method.name
            );
            let _ = writeln!(buf, "            }}");
            let _ = writeln!(buf, "        }})");
            let (description, example) = describe(&method.comments, &endpoint(service, method));
            for (key, value) in [("description", description), ("example", example)] {
                if let Some(value) = value {
                    let _ = writeln!(
                        buf,
                        "        .endpoint_metadata({:?}, {key:?}, {value:?})",
                        method.proto_name
                    );
                }
            }
        }
        let _ = writeln!(buf, "}}");
    }
}

/// What a method's proto comment tells tools, as endpoint metadata: the `description` (the
/// comment up to an `@example` line), and the `example` (the JSON request after `@example`,
/// on its line or the next ones). An example that is not JSON is left out, with a warning in
/// the build's output.
fn describe(comments: &Comments, endpoint: &str) -> (Option<String>, Option<String>) {
    let lines = match comments.leading.is_empty() {
        true => &comments.trailing,
        false => &comments.leading,
    };
    let text: Vec<&str> = lines.iter().map(|line| line.trim()).collect();
    let at = text.iter().position(|line| line.starts_with("@example"));
    let description = text[..at.unwrap_or(text.len())].join("\n");
    let description = Some(description.trim().to_string()).filter(|d| !d.is_empty());
    let example = at.and_then(|at| {
        let json = text[at..].join("\n");
        let json = json["@example".len()..].trim();
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(value) => Some(value.to_string()),
            Err(e) => {
                println!("cargo:warning=the @example of {endpoint} is not JSON ({e}); left out");
                None
            }
        }
    });
    (description, example)
}

/// The endpoint name Go Micro uses for a method: `Greeter.Hello`.
fn endpoint(service: &Service, method: &Method) -> String {
    format!("{}.{}", service.proto_name, method.proto_name)
}

/// Writes doc comments: the comments from the proto (if any), then our own `summary` lines
/// after an empty line, so that the proto author's words make the first line rustdoc shows.
/// Detached comments are left out: they document nothing in particular.
fn doc_lines(buf: &mut String, summary: &[&str], comments: &Comments) {
    doc_lines_ordered(buf, summary, comments, false);
}

/// Like [`doc_lines`], but our `summary` comes first: for the client struct and handler trait,
/// whose proto comments describe the service rather than the generated item.
fn summary_then_comments(buf: &mut String, summary: &[&str], comments: &Comments) {
    doc_lines_ordered(buf, summary, comments, true);
}

fn doc_lines_ordered(buf: &mut String, summary: &[&str], comments: &Comments, summary_first: bool) {
    let from_proto = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let has_comments = !from_proto.leading.is_empty() || !from_proto.trailing.is_empty();
    if summary_first {
        for line in summary {
            let _ = writeln!(buf, "/// {line}");
        }
    }
    if has_comments {
        if summary_first {
            let _ = writeln!(buf, "///");
        }
        from_proto.append_with_indent(0, buf);
        if !summary_first {
            let _ = writeln!(buf, "///");
        }
    }
    if !summary_first {
        for line in summary {
            let _ = writeln!(buf, "/// {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comments(leading: &[&str]) -> Comments {
        Comments {
            leading_detached: Vec::new(),
            leading: leading.iter().map(|l| l.to_string()).collect(),
            trailing: Vec::new(),
        }
    }

    #[test]
    fn a_comment_is_the_description_and_its_example_the_example() {
        let (description, example) = describe(
            &comments(&[
                " Creates a post.",
                " Titles are unique.",
                " @example {\"title\": \"Hi\",",
                "   \"tags\": [\"a\"]}",
            ]),
            "Blog.Create",
        );
        assert_eq!(
            description.as_deref(),
            Some("Creates a post.\nTitles are unique.")
        );
        assert_eq!(example.as_deref(), Some(r#"{"tags":["a"],"title":"Hi"}"#));

        let (description, example) = describe(&comments(&[" @example not json"]), "Blog.Create");
        assert_eq!((description, example), (None, None));
        assert_eq!(describe(&comments(&[]), "Blog.Create"), (None, None));
    }
}
