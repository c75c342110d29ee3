//! Code generation for Micro for Rust, used from a crate's `build.rs`.
//!
//! From `.proto` files this crate writes, for each proto package, three files into `OUT_DIR`:
//!
//! - `<package>.rs`: the message structs (by [prost-build]), a `micro::Message` impl for every
//!   message (one `micro::proto_message!` call each, listing the fields for the registry's
//!   endpoint description), and for every service a typed client, a handler trait and the
//!   function that registers an implementation of that trait with a server.
//! - `<package>.serde.rs`: serde impls that read and write the canonical proto3 JSON mapping
//!   (by [pbjson-build]), so messages work with the JSON codec as well as with protobuf.
//!   Unknown fields are ignored when reading, so that services can add fields without breaking
//!   older callers (Go Micro behaves the same).
//! - `<package>.fds.bin`: the encoded `FileDescriptorSet` of the compiled files and their
//!   imports. `<package>.rs` embeds it as `FILE_DESCRIPTOR_SET`, and each generated handler
//!   registers it, so the gRPC transport answers server reflection (`grpcurl list`) for it.
//!
//! No system `protoc` is needed: unless the `PROTOC` environment variable names one, the
//! `protoc` shipped in the `protoc-bin-vendored` crate is used, together with its copy of the
//! well-known `.proto` files (`google/protobuf/*.proto`).
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! micro = "0.1"   # the generated code reaches prost, pbjson and serde through it
//!
//! [build-dependencies]
//! micro-build = "0.1"
//! ```
//!
//! `build.rs`:
//!
//! ```rust,no_run
//! fn main() -> std::io::Result<()> {
//!     micro_build::compile_protos(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! `src/lib.rs`: include the package (`micro::include_proto!("greeter")` expands to the two
//! `include!`s below), then implement the handler trait:
//!
//! ```text
//! /// Messages and services of the `greeter` proto package.
//! #[allow(missing_docs)]
//! pub mod greeter {
//!     micro::include_proto!("greeter");
//!     // the same as:
//!     // include!(concat!(env!("OUT_DIR"), "/greeter.rs"));
//!     // include!(concat!(env!("OUT_DIR"), "/greeter.serde.rs"));
//! }
//!
//! use greeter::{Greeter, HelloReply, HelloRequest};
//!
//! struct Hello;
//!
//! #[micro::async_trait]
//! impl Greeter for Hello {
//!     async fn hello(
//!         &self,
//!         request: micro::Request<HelloRequest>,
//!     ) -> Result<micro::Response<HelloReply>, micro::Error> {
//!         let name = &request.get_ref().name;
//!         Ok(micro::Response::new(HelloReply { message: format!("Hello {name}") }))
//!     }
//! }
//!
//! // server side: serve it
//! let handler = greeter::greeter_handler(Hello);
//! // client side: call it
//! let client = greeter::GreeterClient::new("greeter", micro_client);
//! let reply = client.hello(HelloRequest { name: "John".into() }).await?;
//! ```
//!
//! # What is generated for a service
//!
//! For `service Greeter` with `rpc Hello(HelloRequest) returns (HelloReply)`:
//!
//! - `GreeterClient::new(service, client)` with one async method per RPC, named in snake case.
//!   A unary method returns the `micro::Response`; a server-streaming method sends its request
//!   and returns a `micro::Stream` to receive from; client-streaming and bidirectional methods
//!   take a `micro::Request<()>` (metadata and options only) and return a `micro::Stream` to
//!   send on, close, and receive from.
//! - `trait Greeter` (an `async_trait`): one method per RPC. Server-streaming methods get the
//!   request and a `micro::ServerStream` to send on; client-streaming and bidirectional ones
//!   get only the stream.
//! - `fn greeter_handler(impl Greeter) -> micro::Handler`, serving the endpoints the way Go Micro
//!   names them: `Greeter.Hello` (service and method name as written in the proto).
//!
//! Comments in the proto become doc comments on the generated items. Each RPC's comment is
//! also registered as its endpoint's `description` metadata (Go Micro's convention; the MCP
//! gateway, OpenAPI and the dashboard show it), and an `@example` in it, followed by a JSON
//! request on that line or the next ones, as its `example` metadata (a build warning says so
//! when that is not JSON):
//!
//! ```proto
//! // Replies with a greeting for the name in the request.
//! // @example {"name": "John"}
//! rpc Hello(HelloRequest) returns (HelloReply) {}
//! ```
//!
//! # What is registered for a message
//!
//! Each endpoint's request and response are described in the registry as Go Micro describes
//! them (`micro::registry::Value`: field names and type names), with more from the
//! descriptors: the fields of nested messages (five levels deep and 256 values per message at
//! most, a recursive message once), the value names of enums, and oneof groups. The API
//! gateway's OpenAPI document and the MCP gateway's tools turn them into JSON Schemas.
//!
//! # Lints
//!
//! Service code is fully documented. The message structs carry the proto's comments, and a
//! message or field without one would trip `missing_docs`; so by default every prost type gets
//! `#[allow(missing_docs)]` ([`Builder::allow_missing_docs`]). The generated nested modules
//! (`pub mod hello_request`) are documented by prost. The including module needs no `allow`
//! then; adding `#[allow(missing_docs)]` to it does no harm.
//!
//! # Limits
//!
//! - Every compiled `.proto` file needs a `package`: it names the generated files.
//! - Well-known types (`google.protobuf.*`) are `micro::well_known`'s (the `pbjson-types`
//!   crate, re-exported: nothing to add to Cargo.toml). They can be fields of messages, but not
//!   the request or response of an RPC, because `micro::Message` cannot be implemented for
//!   another crate's type.
//!
//! [prost-build]: https://docs.rs/prost-build
//! [pbjson-build]: https://docs.rs/pbjson-build

mod message;
mod service;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use prost::Message as _;
use prost_types::FileDescriptorSet;

/// Compiles `protos` (found under the `includes` directories) with the default settings.
///
/// The same as `configure().compile_protos(protos, includes)`.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    configure().compile_protos(protos, includes)
}

/// Starts a [`Builder`] with the default settings, to change some before compiling.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        micro_path: "::micro".to_string(),
        build_client: true,
        build_server: true,
        allow_missing_docs: true,
        preserve_proto_field_names: false,
        emit_default_fields: false,
        type_attributes: Vec::new(),
        field_attributes: Vec::new(),
        protoc_args: Vec::new(),
        file_descriptor_set_path: None,
        emit_rerun_if_changed: std::env::var_os("CARGO").is_some(),
    }
}

/// Settings for one code generation run; made by [`configure`], run by
/// [`Builder::compile_protos`].
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    micro_path: String,
    build_client: bool,
    build_server: bool,
    allow_missing_docs: bool,
    preserve_proto_field_names: bool,
    emit_default_fields: bool,
    type_attributes: Vec<(String, String)>,
    field_attributes: Vec<(String, String)>,
    protoc_args: Vec<String>,
    file_descriptor_set_path: Option<PathBuf>,
    emit_rerun_if_changed: bool,
}

impl Builder {
    /// Where to write the generated files; `OUT_DIR` (set by cargo for build scripts) if unset.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to generate the typed clients (`GreeterClient`). On by default.
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Whether to generate the handler traits and their registration functions. On by default.
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// The path of the `micro` crate in generated code, `::micro` by default; set it when the
    /// crate is renamed in `Cargo.toml` or reached through a re-export.
    pub fn micro_path(mut self, path: impl Into<String>) -> Self {
        self.micro_path = path.into();
        self
    }

    /// Whether every generated message, enum and oneof type gets `#[allow(missing_docs)]`.
    /// On by default; turn it off to have the compiler point at undocumented proto items.
    pub fn allow_missing_docs(mut self, enable: bool) -> Self {
        self.allow_missing_docs = enable;
        self
    }

    /// Write JSON field names as in the proto (`user_id`) rather than in the canonical
    /// lowerCamelCase (`userId`). Reading accepts both either way. Off by default.
    pub fn preserve_proto_field_names(mut self, enable: bool) -> Self {
        self.preserve_proto_field_names = enable;
        self
    }

    /// Write fields that hold their default value (`0`, `""`, `[]`) to JSON instead of leaving
    /// them out. Off by default, as in the canonical mapping.
    pub fn emit_default_fields(mut self, enable: bool) -> Self {
        self.emit_default_fields = enable;
        self
    }

    /// Adds an attribute to the generated types matching `path` (see prost-build's
    /// `Config::type_attribute`), e.g. `(".greeter.HelloRequest", "#[derive(Eq, Hash)]")`.
    pub fn type_attribute(mut self, path: impl Into<String>, attribute: impl Into<String>) -> Self {
        self.type_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Adds an attribute to the generated fields matching `path` (see prost-build's
    /// `Config::field_attribute`).
    pub fn field_attribute(
        mut self,
        path: impl Into<String>,
        attribute: impl Into<String>,
    ) -> Self {
        self.field_attributes.push((path.into(), attribute.into()));
        self
    }

    /// Passes an extra argument to `protoc`.
    pub fn protoc_arg(mut self, arg: impl Into<String>) -> Self {
        self.protoc_args.push(arg.into());
        self
    }

    /// Also writes the encoded `FileDescriptorSet` of the compiled files to `path`, for tools
    /// that want it as a file (the generated code embeds its own copy for gRPC reflection).
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.file_descriptor_set_path = Some(path.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for every proto file and include directory, so
    /// that cargo re-runs the build script when one changes. On when run by cargo.
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Generates code for `protos` (and the files they import), looking for them and their
    /// imports in `includes`.
    ///
    /// Fails with the reason when `protoc` cannot run or rejects a file, when a file has no
    /// `package`, or when the output directory cannot be written.
    pub fn compile_protos(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    io::Error::other(
                        "OUT_DIR is not set: run micro-build from a build script, or call \
                     Builder::out_dir",
                    )
                })?,
        };

        if self.emit_rerun_if_changed {
            for path in protos.iter().map(AsRef::as_ref) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            for path in includes.iter().map(AsRef::as_ref) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }

        let mut config = self.prost_config();
        let mut includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_owned()).collect();
        if std::env::var_os("PROTOC").is_none() {
            let protoc = protoc_bin_vendored::protoc_bin_path().map_err(|e| {
                io::Error::other(format!(
                    "{e}; install protoc and set PROTOC to its path to generate code on this \
                     platform"
                ))
            })?;
            config.protoc_executable(protoc);
            if let Ok(well_known) = protoc_bin_vendored::include_path() {
                // After the user's directories, so that their copies win.
                includes.push(well_known);
            }
        }

        let descriptors = config.load_fds(protos, &includes)?;
        let packages = packages(&descriptors)?;
        self.write_prost(&mut config, &descriptors, &packages, &out_dir)?;
        self.write_serde(&descriptors, &packages, &out_dir)
    }

    /// The prost-build configuration this builder stands for.
    fn prost_config(&self) -> prost_build::Config {
        let mut config = prost_build::Config::new();
        // pbjson-types holds the well-known types with their serde impls (prost-types has
        // none); micro re-exports it as `micro::well_known`.
        config
            .compile_well_known_types()
            .extern_path(
                ".google.protobuf",
                format!("{}::well_known", self.micro_path),
            )
            // Through Micro's re-export: a service depends on `micro` alone.
            .prost_path(format!("{}::__private::prost", self.micro_path));
        if self.allow_missing_docs {
            config.type_attribute(".", "#[allow(missing_docs)]");
        }
        for (path, attribute) in &self.type_attributes {
            config.type_attribute(path, attribute);
        }
        for (path, attribute) in &self.field_attributes {
            config.field_attribute(path, attribute);
        }
        for arg in &self.protoc_args {
            config.protoc_arg(arg);
        }
        if let Some(path) = &self.file_descriptor_set_path {
            config.file_descriptor_set_path(path);
        }
        config.service_generator(Box::new(service::MicroServiceGenerator {
            micro_path: self.micro_path.clone(),
            build_client: self.build_client,
            build_server: self.build_server,
        }));
        config
    }

    /// Writes `<package>.rs`: prost's messages, our services, and the message impls.
    fn write_prost(
        &self,
        config: &mut prost_build::Config,
        descriptors: &FileDescriptorSet,
        packages: &BTreeMap<String, Vec<usize>>,
        out_dir: &Path,
    ) -> io::Result<()> {
        let requests = descriptors
            .file
            .iter()
            .map(|file| {
                let module = prost_build::Module::from_protobuf_package_name(file.package());
                (module, file.clone())
            })
            .collect();
        let mut modules = config.generate(requests)?;
        let encoded = descriptors.encode_to_vec();
        let types = message::Types::of(descriptors);

        for (package, files) in packages {
            let module = prost_build::Module::from_protobuf_package_name(package);
            let mut code = modules.remove(&module).unwrap_or_default();
            // Beside `<package>.rs`, so that the relative path resolves wherever it is written.
            let set_file = format!("{package}.fds.bin");
            write_if_changed(&out_dir.join(&set_file), &encoded)?;
            code.push_str(&format!(
                "/// The encoded `FileDescriptorSet` of the protos this package was compiled \
                 from, with their\n/// imports: what gRPC server reflection describes.\n\
                 pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!({set_file:?});\n"
            ));
            let mut impls = String::new();
            for &index in files {
                message::append_message_impls(
                    &descriptors.file[index],
                    &types,
                    &self.micro_path,
                    &mut impls,
                );
            }
            if !impls.is_empty() {
                code.push_str(
                    "// `micro::Message` for every message: protobuf and JSON through Micro's \
                     codecs.\n",
                );
                code.push_str(&impls);
            }
            write_if_changed(&out_dir.join(format!("{package}.rs")), code.as_bytes())?;
        }
        Ok(())
    }

    /// Writes `<package>.serde.rs` with pbjson's canonical JSON impls.
    fn write_serde(
        &self,
        descriptors: &FileDescriptorSet,
        packages: &BTreeMap<String, Vec<usize>>,
        out_dir: &Path,
    ) -> io::Result<()> {
        let mut builder = pbjson_build::Builder::new();
        builder.ignore_unknown_fields().extern_path(
            ".google.protobuf",
            format!("{}::well_known", self.micro_path),
        );
        if self.preserve_proto_field_names {
            builder.preserve_proto_field_names();
        }
        if self.emit_default_fields {
            builder.emit_fields();
        }
        for file in &descriptors.file {
            builder.register_file_descriptor(file.clone());
        }
        let prefixes: Vec<String> = packages.keys().map(|p| format!(".{p}")).collect();
        // Generated in memory rather than with `build`, to write only files that changed.
        let generated = builder.generate(&prefixes, |_| Ok(Vec::new()))?;
        let mut serde: BTreeMap<String, Vec<u8>> = generated
            .into_iter()
            .map(|(package, code)| (package.to_string(), code))
            .collect();

        // pbjson has nothing to say about a package with neither messages nor enums, but
        // `include_proto!` includes a `.serde.rs` for every package, so those get an empty one.
        for package in packages.keys() {
            let code = serde.remove(package).unwrap_or_default();
            let code = String::from_utf8(code).map_err(io::Error::other)?;
            // pbjson's runtime through Micro's re-export, as prost's (`serde` is brought into
            // scope by `include_proto!`).
            let code = code.replace(
                "::pbjson::",
                &format!("{}::__private::pbjson::", self.micro_path),
            );
            write_if_changed(
                &out_dir.join(format!("{package}.serde.rs")),
                code.as_bytes(),
            )?;
        }
        Ok(())
    }
}

/// The packages to generate code for, each with the indexes of its files in `descriptors`.
///
/// Well-known types come from `micro::well_known` (pbjson-types), so `google.protobuf` is left
/// out.
fn packages(descriptors: &FileDescriptorSet) -> io::Result<BTreeMap<String, Vec<usize>>> {
    let mut packages: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, file) in descriptors.file.iter().enumerate() {
        let package = file.package();
        if package == "google.protobuf" {
            continue;
        }
        if package.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has no `package`: add one (e.g. `package greeter;`); micro-build names \
                     the generated files after it",
                    file.name()
                ),
            ));
        }
        packages.entry(package.to_string()).or_default().push(index);
    }
    Ok(packages)
}

/// Writes `contents` to `path` unless it already holds exactly that, so that an unchanged
/// proto does not make cargo rebuild the crate that includes the file.
fn write_if_changed(path: &Path, contents: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    std::fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}
