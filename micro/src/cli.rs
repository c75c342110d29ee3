//! Micro's settings as command-line flags for [clap] programs (cargo feature `cli`).
//!
//! Flatten [`Flags`] into a program's own parser and it takes Go Micro's flags
//! (`--registry etcd --registry_address 127.0.0.1:2379`, `--transport grpc`, ...), lists them
//! with their `MICRO_*` variables in `--help`, and refuses a flag it does not know (a typo such
//! as `--registy` is a usage error, not a server started on the default registry).
//! [`Flags::config`] gives the [`Config`] to hand to [`ServiceBuilder::config`](crate::ServiceBuilder::config):
//! the `MICRO_*` environment with the flags over it, values checked as [`Config::load`] does.
//!
//! ```no_run
//! use clap::Parser;
//!
//! /// The greeter server.
//! #[derive(Parser)]
//! #[command(version, after_help = micro::cli::ENVIRONMENT)]
//! struct Args {
//!     #[command(flatten)]
//!     micro: micro::cli::Flags,
//! }
//!
//! # fn main() -> micro::Result<()> {
//! let args = Args::parse();
//! let service = micro::Service::builder("greeter")
//!     .config(args.micro.config()?)
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! A program with no flags of its own needs no parser: [`parse`] reads Micro's flags,
//! `--help` and `--version` from its command line.
//!
//! [clap]: https://docs.rs/clap

use clap::{Args, FromArgMatches as _};

use crate::config::Config;
use crate::Result;

/// What a program's `--help` can end with (`#[command(after_help = micro::cli::ENVIRONMENT)]`):
/// the settings read from the environment only.
pub const ENVIRONMENT: &str = "Environment: the MICRO_* variable of each Micro setting above; \
MICRO_TLS_CERT, MICRO_TLS_KEY, MICRO_TLS_CA (TLS on the http and gRPC transports); \
MICRO_SELECTOR_ADDRESSES, MICRO_SELECTOR_DOMAIN, MICRO_SELECTOR_PORT, MICRO_SELECTOR_DNS_SERVER, \
MICRO_SELECTOR_DNS_TTL (the static and dns selectors); \
MICRO_MDNS_INTERFACE (mDNS beyond loopback); MICRO_GRPC_*, MICRO_HTTP_*, MICRO_NATS_*, \
MICRO_RABBITMQ_*, MICRO_KAFKA_*, MICRO_ETCD_*, MICRO_KUBERNETES_*, CONSUL_HTTP_* (each \
plugin's own settings, in its crate docs); MICRO_MAX_HEADERS, MICRO_MAX_HEADER_BYTES (peer \
header limits); RUST_LOG (logging).";

/// Reads the program's command line as Micro's flags alone, and returns the configuration
/// ([`Flags::config`]) to hand to [`ServiceBuilder::config`](crate::ServiceBuilder::config).
/// `--help` lists the flags and their `MICRO_*` variables and `--version` prints `version`
/// (pass `env!("CARGO_PKG_VERSION")`), each then ending the program; anything else on the
/// command line is a usage error that ends it too.
///
/// ```no_run
/// # fn main() -> micro::Result<()> {
/// let service = micro::Service::builder("greeter")
///     .config(micro::cli::parse(env!("CARGO_PKG_VERSION"))?)
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub fn parse(version: &'static str) -> Result<Config> {
    let program = std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map_or_else(
            || "service".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    let command = clap::Command::new(program)
        .version(version)
        .after_help(ENVIRONMENT);
    let matches = Flags::augment_args(command).get_matches();
    Flags::from_arg_matches(&matches)
        .unwrap_or_else(|e| e.exit())
        .config()
}

/// The `MICRO_*` settings as flags, each also read from its environment variable (the flag
/// wins). Every flag is global: it may come before or after a subcommand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Micro settings (a flag wins over its MICRO_* variable)")]
pub struct Flags {
    /// The service name [env: MICRO_SERVER_NAME]
    #[arg(
        long = "server_name",
        alias = "server-name",
        value_name = "NAME",
        global = true
    )]
    pub server_name: Option<String>,
    /// The service version [env: MICRO_SERVER_VERSION]
    #[arg(
        long = "server_version",
        alias = "server-version",
        value_name = "VERSION",
        global = true
    )]
    pub server_version: Option<String>,
    /// Where to listen, host:port (127.0.0.1:0) [env: MICRO_SERVER_ADDRESS]
    #[arg(
        long = "server_address",
        alias = "server-address",
        value_name = "ADDR",
        global = true
    )]
    pub server_address: Option<String>,
    /// The address to register instead of the one listened on [env: MICRO_SERVER_ADVERTISE]
    #[arg(
        long = "server_advertise",
        alias = "server-advertise",
        value_name = "ADDR",
        global = true
    )]
    pub server_advertise: Option<String>,
    /// The registry: mdns (default), etcd, consul, kubernetes, memory [env: MICRO_REGISTRY]
    #[arg(long, value_name = "NAME", global = true)]
    pub registry: Option<String>,
    /// The registry's address(es), comma separated [env: MICRO_REGISTRY_ADDRESS]
    #[arg(
        long = "registry_address",
        alias = "registry-address",
        value_name = "ADDRS",
        global = true
    )]
    pub registry_address: Option<String>,
    /// The broker: http (default), nats, rabbitmq, kafka, redis, mqtt, memory [env: MICRO_BROKER]
    #[arg(long, value_name = "NAME", global = true)]
    pub broker: Option<String>,
    /// The broker's address(es) [env: MICRO_BROKER_ADDRESS]
    #[arg(
        long = "broker_address",
        alias = "broker-address",
        value_name = "ADDRS",
        global = true
    )]
    pub broker_address: Option<String>,
    /// The transport: http (default), grpc [env: MICRO_TRANSPORT]
    #[arg(long, value_name = "NAME", global = true)]
    pub transport: Option<String>,
    /// The selector: random (default), roundrobin, p2c; static, dns [env: MICRO_SELECTOR]
    #[arg(long, value_name = "NAME", global = true)]
    pub selector: Option<String>,
    /// Retries after a failed call (1) [env: MICRO_CLIENT_RETRIES]
    #[arg(
        long = "client_retries",
        alias = "client-retries",
        value_name = "N",
        global = true
    )]
    pub client_retries: Option<String>,
    /// What is retried: unreached (default), gomicro [env: MICRO_CLIENT_RETRY]
    #[arg(
        long = "client_retry",
        alias = "client-retry",
        value_name = "POLICY",
        global = true
    )]
    pub client_retry: Option<String>,
    /// A call's deadline (5s) [env: MICRO_CLIENT_REQUEST_TIMEOUT]
    #[arg(
        long = "client_request_timeout",
        alias = "client-request-timeout",
        value_name = "DURATION",
        global = true
    )]
    pub client_request_timeout: Option<String>,
    /// Registration lifetime (90s) [env: MICRO_REGISTER_TTL]
    #[arg(
        long = "register_ttl",
        alias = "register-ttl",
        value_name = "DURATION",
        global = true
    )]
    pub register_ttl: Option<String>,
    /// Re-registration period (30s) [env: MICRO_REGISTER_INTERVAL]
    #[arg(
        long = "register_interval",
        alias = "register-interval",
        value_name = "DURATION",
        global = true
    )]
    pub register_interval: Option<String>,
    /// Calls in flight at once; more get a fast 503 (10000) [env: MICRO_SERVER_MAX_CALLS]
    #[arg(
        long = "server_max_calls",
        alias = "server-max-calls",
        value_name = "N",
        global = true
    )]
    pub server_max_calls: Option<String>,
    /// Request bytes held at once by the calls in flight; past it a 503 (256MiB)
    /// [env: MICRO_SERVER_MAX_REQUEST_BYTES]
    #[arg(
        long = "server_max_request_bytes",
        alias = "server-max-request-bytes",
        value_name = "SIZE",
        global = true
    )]
    pub server_max_request_bytes: Option<String>,
}

impl Flags {
    /// The `MICRO_*` environment with these flags over it. A value that does not parse is a
    /// `400` naming the flag or variable it came from.
    pub fn config(&self) -> Result<Config> {
        let env = Config::from_env()?;
        let flags = Config::from_lookup(|flag| self.value(flag).map(str::to_string), false)?;
        Ok(env.merge(flags))
    }

    /// The settings given as flags, as the environment variables that carry them
    /// (`("MICRO_REGISTRY", "etcd")`): for handing them on to programs this one starts.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        crate::config::KEYS
            .iter()
            .filter_map(|(flag, var)| Some((*var, self.value(flag)?.to_string())))
            .collect()
    }

    /// The value given for the flag `name` (`registry_address`).
    fn value(&self, name: &str) -> Option<&str> {
        let value = match name {
            "server_name" => &self.server_name,
            "server_version" => &self.server_version,
            "server_address" => &self.server_address,
            "server_advertise" => &self.server_advertise,
            "registry" => &self.registry,
            "registry_address" => &self.registry_address,
            "broker" => &self.broker,
            "broker_address" => &self.broker_address,
            "transport" => &self.transport,
            "selector" => &self.selector,
            "client_retries" => &self.client_retries,
            "client_retry" => &self.client_retry,
            "client_request_timeout" => &self.client_request_timeout,
            "register_ttl" => &self.register_ttl,
            "register_interval" => &self.register_interval,
            "server_max_calls" => &self.server_max_calls,
            "server_max_request_bytes" => &self.server_max_request_bytes,
            _ => return None,
        };
        value.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Program {
        #[command(flatten)]
        micro: Flags,
        #[arg(long)]
        name: Option<String>,
    }

    fn parse(args: &[&str]) -> std::result::Result<Program, clap::Error> {
        Program::try_parse_from(std::iter::once("program").chain(args.iter().copied()))
    }

    #[test]
    fn go_micro_flag_names_and_dashes_both_work() {
        let p = parse(&[
            "--registry",
            "etcd",
            "--registry-address=127.0.0.1:2379",
            "--name",
            "x",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let c = Flags::value(&p.micro, "registry_address");
        assert_eq!(c, Some("127.0.0.1:2379"));
        let c = Config::from_lookup(|f| p.micro.value(f).map(str::to_string), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.registry.as_deref(), Some("etcd"));
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(
            p.micro.env(),
            [
                ("MICRO_REGISTRY", "etcd".to_string()),
                ("MICRO_REGISTRY_ADDRESS", "127.0.0.1:2379".to_string())
            ]
        );
    }

    #[test]
    fn a_misspelt_flag_is_a_usage_error() {
        let e = parse(&["--registy", "etcd"]).err().map(|e| e.kind());
        assert_eq!(e, Some(clap::error::ErrorKind::UnknownArgument));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let p = parse(&["--client_request_timeout", "soon"]).unwrap_or_else(|e| panic!("{e}"));
        let e = Config::from_lookup(|f| p.micro.value(f).map(str::to_string), false)
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(e.detail.contains("--client_request_timeout"), "{e}");
    }
}
