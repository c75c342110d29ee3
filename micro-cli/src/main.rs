//! `micro`: the command line of Micro for Rust, for the services of a fleet (Go Micro's too).
//!
//! ```text
//! micro services                                          # what the registry holds
//! micro describe greeter                                  # nodes and endpoints
//! micro call greeter Greeter.Hello '{"name":"John"}'      # a unary call, JSON in and out
//! micro stream greeter Greeter.Stream '{"name":"John","count":3}'   # server streaming
//! printf '{"name":"a"}\n{"name":"b"}\n' | micro stream greeter Greeter.Chat   # client/bidi
//! micro publish orders.created '{"id":"1"}'               # an event, on the broker
//! micro subscribe orders.created --count 1                # print events as they come
//! micro health greeter                                    # each node's health
//! micro registry watch                                    # registry events as they happen
//! micro gateway                                           # HTTP/JSON and the dashboard on 127.0.0.1:8080
//! micro mcp                                               # MCP on stdio, for AI agents
//! micro new orders --pubsub                              # a new service crate
//! micro run                                               # run a workspace's services, live
//! micro completions bash > /etc/bash_completion.d/micro
//! ```
//!
//! # Configuration
//!
//! Like every Micro program: the `MICRO_*` variables and Go Micro's flags, which win
//! (`--registry etcd --registry_address 127.0.0.1:2379`, `--broker nats`, `--transport grpc`,
//! `MICRO_TLS_*` for TLS); `micro --help` lists them. Every plugin of the project is compiled in
//! by default (cargo features `etcd`, `consul`, `kubernetes`, `grpc`, `nats`, `rabbitmq`,
//! `kafka`). Nodes are called with the transport their `protocol` metadata names, so mucp and
//! gRPC services, Micro's and Go Micro's, are called alike.
//!
//! # Output and exit status
//!
//! Listings print as tables, or as JSON with `--output json` (`-o json`): `services` prints
//! `[{"service","version","nodes"}]`, `describe` the registry's own JSON (Go Micro's format),
//! `health` `[{"id","address","protocol","status"}]`, `subscribe` and `registry watch` one JSON
//! object per line. `call` prints the reply (pretty JSON for a JSON reply), `stream` one reply
//! per line. An error is printed on standard error as the Micro error it is
//! (`404 Not Found from go.micro.client: service greeter: not found`) and the exit status is 1;
//! a usage error exits with 2.
//!
//! # Commands
//!
//! - `services`: every service in the registry, one row per version, with its node count.
//! - `describe SERVICE`: per version, the nodes (id, address, metadata) and the endpoints with
//!   their request and response shapes.
//! - `call SERVICE ENDPOINT [JSON]`: a unary call; the request comes from the argument or, when
//!   there is none, from standard input. `-H key=value` adds metadata (repeatable),
//!   `--timeout 2s` bounds the call, `--address host:port` calls one node directly,
//!   `--content-type` sends another codec (the body is then sent as given).
//! - `stream SERVICE ENDPOINT [JSON]`: with a request, a server stream whose replies print as
//!   they come; without one, every line of standard input is one request message of a client
//!   or bidirectional stream, and the replies print once the input ends.
//! - `publish TOPIC [JSON]`: publishes the JSON message (or standard input) on the broker, with
//!   `Content-Type: application/json`, `Micro-Topic` and a fresh `Micro-Id`.
//! - `subscribe TOPIC [--queue Q] [--count N]`: prints each message's body (with `-o json`, its
//!   headers too) until `N` messages or Ctrl-C.
//! - `health SERVICE`: asks every node: `grpc.health.v1.Health/Check` for `protocol=grpc`
//!   nodes, `Debug.Health` (Go Micro's) for mucp ones. Exits 1 unless every node serves.
//! - `registry watch [SERVICE] [--count N]`: registry events, one per node, as they happen.
//! - `new NAME [--package P] [--pubsub] [--micro-path CHECKOUT] [--dir DIR]`: a new service
//!   crate in `DIR/NAME`: `Cargo.toml`, `build.rs`, `proto/<package>.proto` (a unary and a
//!   server-streaming RPC), the handler (`src/lib.rs`), a server with Micro's flags
//!   (`src/main.rs`), a test that serves and calls it in process, and a README. `--pubsub`
//!   adds a subscriber to `NAME.events` and a test that publishes to it; `--micro-path`
//!   depends on a local checkout of Micro rather than the crates.io release.
//! - `mcp`: MCP on standard input and output (`micro-mcp`): every endpoint in the registry a
//!   tool for an AI agent; a desktop agent's configuration is
//!   `{"mcpServers": {"micro": {"command": "micro", "args": ["mcp"]}}}`. The gateway serves
//!   the same over HTTP at `/mcp`.
//! - `gateway [--address 127.0.0.1:8080]`: the HTTP/JSON API gateway (`micro-gateway`):
//!   `POST /api/{service}/{Type.Method}` (SSE and WebSocket for streams), `POST /event/{topic}`,
//!   `GET /event/{topic}` (SSE), `GET /services`, `GET /openapi.json`, and the web dashboard
//!   at `/` (services, endpoint forms, events), until Ctrl-C. `micro gateway --help` lists its
//!   `MICRO_GATEWAY_*` settings; a non-loopback address needs authentication.
//! - `run [PATHS] [--gateway-address 127.0.0.1:8080] [--no-gateway]`: development mode.
//!   Serves the API gateway and its dashboard in front of the services (as `micro gateway` does; a taken
//!   port is an error before anything builds), then builds and runs every crate with a binary in the
//!   workspace of the current directory (or in the crate and workspace directories named),
//!   prints each one's output behind `[name]`, rebuilds a crate when a file under its directory
//!   changes and restarts it if the build succeeds (a failed build leaves the running version
//!   up and prints the compiler's errors), and on Ctrl-C or SIGTERM stops them all with
//!   SIGTERM, so they deregister. Micro flags given to `micro` (`--registry etcd ...`) are
//!   passed to the services as their `MICRO_*` variables.
//! - `completions SHELL`: a completion script for bash, zsh, fish, elvish or powershell.

mod call;
mod new;
mod output;
mod pubsub;
mod registry;
mod run;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use micro::{Error, Result, Service};

use crate::output::Output;

/// The command line of Micro for Rust: list, describe, call and watch the services of a
/// fleet, publish and subscribe to its events.
#[derive(Debug, Parser)]
#[command(name = "micro", version, propagate_version = true, after_help = micro::cli::ENVIRONMENT)]
struct Cli {
    /// How listings are printed: human tables, or JSON for scripts
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(flatten)]
    micro: micro::cli::Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the services in the registry, with their versions and node counts
    Services,
    /// Show a service's nodes and endpoints
    Describe {
        /// The service (`greeter`)
        service: String,
    },
    /// Call a unary endpoint: micro call greeter Greeter.Hello '{"name":"John"}'
    Call(call::CallArgs),
    /// Call a streaming endpoint (a server stream with a request; else one request per stdin line)
    Stream(call::CallArgs),
    /// Publish a JSON message to a topic: micro publish orders.created '{"id":"1"}'
    Publish {
        /// The topic
        topic: String,
        /// The message as JSON; read from standard input when absent
        message: Option<String>,
    },
    /// Print the messages published to a topic as they arrive
    Subscribe {
        /// The topic
        topic: String,
        /// Join this queue group (its members share the messages)
        #[arg(long, value_name = "GROUP")]
        queue: Option<String>,
        /// Stop after this many messages
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Ask every node of a service whether it is serving
    Health {
        /// The service (`greeter`)
        service: String,
        /// How long each node may take to answer
        #[arg(long, value_parser = duration, default_value = "5s")]
        timeout: Duration,
    },
    /// Watch the registry
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Serve the HTTP/JSON API gateway and the web dashboard in front of the registry's services, until Ctrl-C
    #[command(after_help = micro_gateway::ENVIRONMENT)]
    Gateway {
        /// Where to listen (a non-loopback address needs authentication: MICRO_GATEWAY_TOKENS,
        /// MICRO_GATEWAY_JWT_SECRET or MICRO_GATEWAY_JWT_KEY)
        #[arg(long, env = "MICRO_GATEWAY_ADDRESS", default_value = "127.0.0.1:8080")]
        address: String,
    },
    /// Serve MCP on standard input and output: every endpoint in the registry a tool for an
    /// AI agent (the command a desktop agent starts)
    #[command(after_help = MCP_ENVIRONMENT)]
    Mcp,
    /// Build and run a workspace's services, restarting each when its sources change
    Run(run::RunArgs),
    /// Create a new service crate (proto, handler, server, test, README) that builds as made
    New(new::NewArgs),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Print registry events (create, update, delete) as they happen, until Ctrl-C
    Watch {
        /// Only this service's events
        service: Option<String>,
        /// Stop after this many events
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("micro: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The MCP settings, for `micro mcp --help`.
const MCP_ENVIRONMENT: &str = "\
MCP settings:
  MICRO_MCP_TIMEOUT      each tool call (10s)
  MICRO_MCP_MAX_REPLIES  replies collected from a streaming endpoint (100)
  MICRO_MCP_SERVICES     the services to expose, comma separated (all)
  MICRO_MCP_DENY         services never to expose, comma separated
  MICRO_MCP_SCOPES       scopes tools ask of HTTP callers (greeter.*=greet,*=read)
  MICRO_MCP_RATE_LIMIT   calls per second per caller per tool (20, or greeter.*=5,*=20)

A desktop agent's configuration: {\"mcpServers\": {\"micro\": {\"command\": \"micro\", \"args\": [\"mcp\"]}}}";

/// Runs the command; `Ok(false)` when it ran but the answer is a failure (an unhealthy node).
async fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "micro", &mut std::io::stdout());
            return Ok(true);
        }
        Command::Run(args) => {
            let env = cli.micro.env();
            // The gateway first: a port already taken stops `micro run` before any build.
            let gateway = if args.no_gateway {
                None
            } else {
                let service = Service::builder("micro.gateway")
                    .config(cli.micro.config()?)
                    .build()?;
                let options = micro_gateway::GatewayOptions::from_env()?;
                let dashboard = options.dashboard;
                let gateway =
                    micro_gateway::Gateway::bind(&args.gateway_address, &service, options)
                        .await
                        .map_err(|e| {
                            micro::Error::new(
                                "micro.run",
                                e.code,
                                format!(
                                    "the gateway: {} (--gateway-address, or --no-gateway)",
                                    e.detail
                                ),
                            )
                        })?;
                output::line(&format!(
                    "[gateway] micro: serving http://{}",
                    gateway.local_addr()
                ));
                if dashboard {
                    output::line(&format!(
                        "[gateway] micro: dashboard at http://{}/",
                        gateway.local_addr()
                    ));
                }
                Some(gateway)
            };
            let ran = run::run(args, env).await;
            if let Some(gateway) = gateway {
                gateway.shutdown().await;
            }
            ran?;
            return Ok(true);
        }
        Command::New(args) => {
            let dir = new::create(args)?;
            output::line(&format!("created {}", dir.display()));
            output::line(&format!(
                "next: cd {} && cargo test && cargo run",
                dir.display()
            ));
            return Ok(true);
        }
        _ => {}
    }
    let service = Service::builder("micro.cli")
        .config(cli.micro.config()?)
        .build()?;
    let out = cli.output;
    match cli.command {
        Command::Services => registry::services(&service, out).await?,
        Command::Describe { service: name } => registry::describe(&service, &name, out).await?,
        Command::Call(args) => call::unary(&service, args).await?,
        Command::Stream(args) => call::stream(&service, args).await?,
        Command::Publish { topic, message } => pubsub::publish(&service, &topic, message).await?,
        Command::Subscribe {
            topic,
            queue,
            count,
        } => pubsub::subscribe(&service, &topic, queue, count, out).await?,
        Command::Health {
            service: name,
            timeout,
        } => return call::health(&service, &name, timeout, out).await,
        Command::Mcp => {
            // Standard output carries the protocol: logs go to standard error.
            micro::log_to_stderr();
            micro_mcp::serve_stdio(&service, micro_mcp::McpOptions::from_env()?).await?;
        }
        Command::Gateway { address } => {
            let options = micro_gateway::GatewayOptions::from_env()?;
            let dashboard = options.dashboard;
            let gateway = micro_gateway::Gateway::bind(&address, &service, options).await?;
            let address = gateway.local_addr();
            if dashboard {
                eprintln!(
                    "gateway at http://{address}, dashboard at http://{address}/ (Ctrl-C to stop)"
                );
            } else {
                eprintln!("gateway at http://{address} (Ctrl-C to stop)");
            }
            micro::shutdown_signal().await;
            gateway.shutdown().await;
        }
        Command::Registry {
            command:
                RegistryCommand::Watch {
                    service: name,
                    count,
                },
        } => registry::watch(&service, name.as_deref(), count, out).await?,
        Command::Completions { .. } | Command::New(_) | Command::Run(_) => {}
    }
    Ok(true)
}

/// A duration flag: `5s`, `500ms`, `2m`, or seconds.
fn duration(text: &str) -> std::result::Result<Duration, String> {
    micro::config::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (like 5s, 500ms or 2m)"))
}

/// How long a registry or broker operation may take before the command gives up.
const BACKEND_LIMIT: Duration = Duration::from_secs(15);

/// Runs `f`, failing with a 408 naming `what` when it takes longer than [`BACKEND_LIMIT`].
async fn bounded<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(BACKEND_LIMIT, f).await.map_err(|_| {
        Error::timeout(
            "micro.cli",
            format!("{what} took longer than {BACKEND_LIMIT:?}; is the backend up?"),
        )
    })?
}

/// Reads standard input whole, up to `limit` bytes.
async fn read_stdin(limit: usize) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;

    let mut input = Vec::new();
    let mut stdin = tokio::io::stdin().take(limit as u64 + 1);
    stdin
        .read_to_end(&mut input)
        .await
        .map_err(|e| Error::bad_request("micro.cli", format!("cannot read standard input: {e}")))?;
    if input.len() > limit {
        return Err(Error::bad_request(
            "micro.cli",
            format!("standard input is larger than {limit} bytes"),
        ));
    }
    Ok(input)
}
