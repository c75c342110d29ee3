//! Runs the generator on real `.proto` files (with the vendored `protoc`) and checks the files
//! it writes. That the output compiles against `micro` is checked by `examples/greeter`.

use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto")
}

/// Compiles `tests/proto/shop.proto` (which imports `common.proto` and a well-known type).
fn generate_shop(builder: micro_build::Builder) -> TempDir {
    let out = tempfile::tempdir().expect("temp dir");
    builder
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&[proto_dir().join("shop.proto")], &[proto_dir()])
        .expect("generate");
    out
}

fn read(dir: &TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `text` without whitespace and trailing commas, so that assertions do not depend on how the
/// formatter broke the lines.
fn squash(text: &str) -> String {
    let squashed: String = text.split_whitespace().collect();
    squashed
        .replace(",)", ")")
        .replace(",}", "}")
        .replace(",]", "]")
        .replace(",>", ">")
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        squash(haystack).contains(&squash(needle)),
        "missing:\n{needle}\n---- in ----\n{haystack}"
    );
}

#[test]
fn writes_three_files_per_package_and_none_for_well_known_types() {
    let out = generate_shop(micro_build::configure());
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .expect("read out dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "common.fds.bin",
            "common.rs",
            "common.serde.rs",
            "shop.v1.fds.bin",
            "shop.v1.rs",
            "shop.v1.serde.rs"
        ]
    );
}

#[test]
fn embeds_the_descriptor_set_for_reflection() {
    use prost::Message as _;

    let out = generate_shop(micro_build::configure());
    let code = read(&out, "shop.v1.rs");
    assert_contains(
        &code,
        "pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(\"shop.v1.fds.bin\");",
    );
    let encoded = std::fs::read(out.path().join("shop.v1.fds.bin")).expect("shop.v1.fds.bin");
    let set = prost_types::FileDescriptorSet::decode(&encoded[..]).expect("a descriptor set");
    let files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    // The compiled file and what it imports, so that reflection clients can resolve every type.
    for name in [
        "shop.proto",
        "common.proto",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(files.contains(&name), "{name} missing from {files:?}");
    }
    let shop = set
        .file
        .iter()
        .find(|f| f.name() == "shop.proto")
        .expect("shop.proto");
    assert!(shop.service.iter().any(|s| s.name() == "Shop"));
}

#[test]
fn generates_a_typed_client() {
    let code = read(&generate_shop(micro_build::configure()), "shop.v1.rs");
    assert_contains(
        &code,
        "pub struct ShopClient { client: ::micro::Client, service: ::std::string::String, }",
    );
    assert_contains(
        &code,
        "pub fn new(service: impl ::core::convert::Into<::std::string::String>, client: ::micro::Client) -> Self",
    );
    // unary
    assert_contains(
        &code,
        "pub async fn get_item(&self, request: impl ::micro::IntoRequest<GetItemRequest>)
             -> ::core::result::Result<::micro::Response<Item>, ::micro::Error> {
             self.client.unary(&self.service, \"Shop.GetItem\", request.into_request().with_proto_service(\"shop.v1.Shop\")).await
         }",
    );
    // server streaming
    assert_contains(
        &code,
        "pub async fn watch_prices(&self, request: impl ::micro::IntoRequest<GetItemRequest>)
             -> ::core::result::Result<::micro::Stream<GetItemRequest, Item>, ::micro::Error> {
             self.client.server_stream(&self.service, \"Shop.WatchPrices\", request.into_request().with_proto_service(\"shop.v1.Shop\")).await
         }",
    );
    // client streaming and bidirectional
    assert_contains(
        &code,
        "pub async fn upload(&self, request: impl ::micro::IntoRequest<()>)
             -> ::core::result::Result<::micro::Stream<Item, UploadSummary>, ::micro::Error> {
             self.client.stream(&self.service, \"Shop.Upload\", request.into_request().with_proto_service(\"shop.v1.Shop\")).await
         }",
    );
    assert_contains(
        &code,
        "pub async fn sync(&self, request: impl ::micro::IntoRequest<()>)
             -> ::core::result::Result<::micro::Stream<Item, Item>, ::micro::Error>",
    );
}

#[test]
fn generates_a_handler_trait_and_its_registration() {
    let code = read(&generate_shop(micro_build::configure()), "shop.v1.rs");
    assert_contains(
        &code,
        "#[::micro::async_trait]
         pub trait Shop: ::core::marker::Send + ::core::marker::Sync + 'static {",
    );
    assert_contains(
        &code,
        "async fn get_item(&self, request: ::micro::Request<GetItemRequest>)
             -> ::core::result::Result<::micro::Response<Item>, ::micro::Error>;",
    );
    assert_contains(
        &code,
        "async fn watch_prices(&self, request: ::micro::Request<GetItemRequest>,
             stream: ::micro::ServerStream<GetItemRequest, Item>)
             -> ::core::result::Result<(), ::micro::Error>;",
    );
    assert_contains(
        &code,
        "async fn upload(&self, stream: ::micro::ServerStream<Item, UploadSummary>)
             -> ::core::result::Result<(), ::micro::Error>;",
    );
    assert_contains(
        &code,
        "pub fn shop_handler<H: Shop>(handler: H) -> ::micro::Handler {
             let handler = ::std::sync::Arc::new(handler);
             ::micro::Handler::new(\"Shop\")
                 .file_descriptor_set(FILE_DESCRIPTOR_SET)
                 .unary(\"GetItem\", {",
    );
    assert_contains(&code, ".server_stream(\"WatchPrices\", {");
    assert_contains(&code, ".stream(\"Upload\", {");
    assert_contains(&code, ".stream(\"Sync\", {");
    assert_contains(&code, "handler.watch_prices(request, stream).await");
    // A service without methods still gets a (trivial) handler, without unused variables.
    assert_contains(
        &code,
        "pub fn empty_handler<H: Empty>(handler: H) -> ::micro::Handler {
             let _ = handler;
             ::micro::Handler::new(\"Empty\")
                 .file_descriptor_set(FILE_DESCRIPTOR_SET)
         }",
    );
}

/// The registry description the generated `proto_message!` call for `full_name` carries.
fn shape_of(code: &str, full_name: &str) -> serde_json::Value {
    let call = code
        .split("proto_message!(")
        .find(|call| call.contains(&format!("{full_name:?}")))
        .unwrap_or_else(|| panic!("no proto_message! for {full_name} in\n{code}"));
    let json = call
        .split_once("r#\"")
        .and_then(|(_, rest)| rest.split_once("\"#"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no description in {call}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn implements_micro_message_for_every_message() {
    let out = generate_shop(micro_build::configure());
    let code = read(&out, "shop.v1.rs");
    assert_contains(
        &code,
        "::micro::proto_message!(GetItemRequest, \"shop.v1.GetItemRequest\",",
    );
    assert_eq!(
        shape_of(&code, "shop.v1.GetItemRequest"),
        json!({"name": "GetItemRequest", "type": "GetItemRequest", "values": [
            {"name": "item_id", "type": "string"},
        ]})
    );
    let money = json!([
        {"name": "currency", "type": "string"},
        {"name": "units", "type": "int64"},
    ]);
    assert_eq!(
        shape_of(&code, "shop.v1.Item"),
        json!({"name": "Item", "type": "Item", "values": [
            {"name": "item_id", "type": "string"},
            {"name": "tags", "type": "[]string"},
            {"name": "stock", "type": "map<string, int64>"},
            {"name": "kind", "type": "Kind", "values": [
                {"name": "KIND_UNSPECIFIED", "type": "enum"},
                {"name": "KIND_BOOK", "type": "enum"},
            ]},
            {"name": "reviews", "type": "[]Review", "values": [{"name": "stars", "type": "int32"}]},
            // From another package, described all the same.
            {"name": "price", "type": "Money", "values": money},
            // A well-known type is known by its name.
            {"name": "updated", "type": "Timestamp"},
            {"name": "thumbnail", "type": "bytes"},
            {"name": "note", "type": "oneof", "values": [
                {"name": "text", "type": "string"},
                {"name": "code", "type": "uint32"},
            ]},
            {"name": "weight", "type": "double"},
        ]})
    );
    assert_contains(
        &code,
        "::micro::proto_message!(item::Review, \"shop.v1.Item.Review\",",
    );
    assert!(!code.contains("StockEntry"), "map entries are not messages");
    // Imported packages get theirs in their own file.
    assert_eq!(
        shape_of(&read(&out, "common.rs"), "common.Money"),
        json!({"name": "Money", "type": "Money", "values": money})
    );
    // Well-known types come from pbjson-types (with serde impls), through micro.
    assert_contains(
        &code,
        "::core::option::Option<::micro::well_known::Timestamp>",
    );
}

#[test]
fn rpc_comments_become_endpoint_metadata() {
    let code = read(&generate_shop(micro_build::configure()), "shop.v1.rs");
    assert_contains(
        &code,
        r#".endpoint_metadata("GetItem", "description", "Looks up one item.")"#,
    );
    // An RPC without a comment registers none.
    assert_eq!(code.matches(".endpoint_metadata(").count(), 1, "{code}");
}

#[test]
fn proto_comments_become_docs() {
    let code = read(&generate_shop(micro_build::configure()), "shop.v1.rs");
    assert_contains(
        &code,
        "/// Looks up one item.
         ///
         /// Calls `Shop.GetItem` (unary).
         pub async fn get_item",
    );
    assert_contains(
        &code,
        "/// Client for the `Shop` service: one async method per RPC.
         ///
         /// Sells things.
         #[derive(Debug, Clone)]
         pub struct ShopClient",
    );
    assert_contains(&code, "/// Serves `Shop.Sync` (bidirectional streaming).");
    assert_contains(&code, "/// An item for sale.");
}

#[test]
fn serde_is_canonical_json_that_ignores_unknown_fields() {
    let serde = read(&generate_shop(micro_build::configure()), "shop.v1.serde.rs");
    assert!(serde.contains("impl serde::Serialize for Item"));
    assert!(
        serde.contains("serialize_field(\"itemId\""),
        "lowerCamelCase names are written"
    );
    assert!(serde.contains("\"item_id\""), "proto names are accepted");
    assert!(
        !serde.contains("unknown_field"),
        "unknown fields must be skipped, not rejected"
    );
}

#[test]
fn options_change_the_output() {
    let out = generate_shop(
        micro_build::configure()
            .build_client(false)
            .micro_path("crate::rt")
            .allow_missing_docs(false)
            .preserve_proto_field_names(true)
            .type_attribute(".shop.v1.GetItemRequest", "#[derive(PartialOrd)]"),
    );
    let code = read(&out, "shop.v1.rs");
    assert!(!code.contains("ShopClient"));
    assert!(!code.contains("::micro::"));
    assert!(!code.contains("missing_docs"));
    assert_contains(&code, "pub trait Shop");
    assert_contains(&code, "crate::rt::proto_message!(GetItemRequest,");
    // prost's derive is reached through the Micro path too.
    assert_contains(
        &code,
        "#[derive(PartialOrd)] #[derive(Clone, PartialEq, Eq, Hash, crate::rt::__private::prost::Message)] \
         #[prost(prost_path = \"crate::rt::__private::prost\")] pub struct GetItemRequest",
    );

    let serde = read(&out, "shop.v1.serde.rs");
    assert!(serde.contains("serialize_field(\"item_id\""));
    assert!(!serde.contains("serialize_field(\"itemId\""));

    let clients_only = generate_shop(micro_build::configure().build_server(false));
    let code = read(&clients_only, "shop.v1.rs");
    assert!(code.contains("ShopClient"));
    assert!(!code.contains("pub trait Shop"));
    assert!(!code.contains("shop_handler"));
}

#[test]
fn generates_the_greeter_example() {
    let out = tempfile::tempdir().expect("temp dir");
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/greeter/proto");
    micro_build::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&[protos.join("greeter.proto")], &[&protos])
        .expect("generate");
    let code = read(&out, "greeter.rs");
    assert_contains(&code, "pub struct GreeterClient");
    assert_contains(&code, "pub trait Greeter");
    assert_contains(
        &code,
        "pub fn greeter_handler<H: Greeter>(handler: H) -> ::micro::Handler",
    );
    for endpoint in [
        "Greeter.Hello",
        "Greeter.Stream",
        "Greeter.Chat",
        "Greeter.Collect",
    ] {
        assert!(code.contains(&format!("{endpoint:?}")), "{endpoint}");
    }
    assert!(out.path().join("greeter.serde.rs").exists());
}

#[test]
fn unchanged_output_is_not_rewritten() {
    let out = generate_shop(micro_build::configure());
    let path = out.path().join("shop.v1.rs");
    let serde_path = out.path().join("shop.v1.serde.rs");
    let before = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let serde_before = std::fs::metadata(&serde_path)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::thread::sleep(std::time::Duration::from_millis(20));
    micro_build::configure()
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&[proto_dir().join("shop.proto")], &[proto_dir()])
        .expect("generate again");
    let after = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let serde_after = std::fs::metadata(&serde_path)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after);
    assert_eq!(serde_before, serde_after);
}

#[test]
fn a_file_without_package_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("bare.proto"),
        "syntax = \"proto3\";\nmessage Bare { string name = 1; }\n",
    )
    .expect("write proto");
    let error = micro_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&[dir.path().join("bare.proto")], &[dir.path()])
        .expect_err("must fail");
    let message = error.to_string();
    assert!(message.contains("bare.proto has no `package`"), "{message}");
}

#[test]
fn protoc_errors_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("broken.proto"),
        "syntax = \"proto3\";\nmessage {\n",
    )
    .expect("write proto");
    let error = micro_build::configure()
        .out_dir(dir.path())
        .emit_rerun_if_changed(false)
        .compile_protos(&[dir.path().join("broken.proto")], &[dir.path()])
        .expect_err("must fail");
    assert!(error.to_string().contains("broken.proto"), "{error}");
}

#[test]
fn out_dir_defaults_to_cargo_out_dir_and_says_so_when_missing() {
    // Tests are not build scripts: OUT_DIR is unset here.
    if std::env::var_os("OUT_DIR").is_some() {
        return;
    }
    let error = micro_build::configure()
        .emit_rerun_if_changed(false)
        .compile_protos(&[proto_dir().join("shop.proto")], &[proto_dir()])
        .expect_err("must fail");
    assert!(error.to_string().contains("OUT_DIR"), "{error}");
}
