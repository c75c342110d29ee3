//! Calls `Greeter.Hello` once and prints the reply.
//!
//! `greeter-client --name John [--json] [--service greeter]`, plus any Micro flag
//! (`--registry`, `--client_request_timeout`, ...); `--help` lists them.

use std::process::ExitCode;

use clap::Parser;
use greeter::greeter::{GreeterClient, HelloRequest};

/// Calls Greeter.Hello once and prints the reply.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version, after_help = micro::cli::ENVIRONMENT)]
struct Args {
    /// The name to greet
    #[arg(long, default_value = "World")]
    name: String,
    /// Send JSON instead of protobuf
    #[arg(long)]
    json: bool,
    /// The service to call
    #[arg(long, default_value = "greeter")]
    service: String,
    #[command(flatten)]
    micro: micro::cli::Flags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    greeter::init_logging();
    match hello(args).await {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("greeter-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn hello(args: Args) -> micro::Result<String> {
    let service = micro::Service::builder("greeter-client")
        .config(args.micro.config()?)
        .build()?;
    let mut client = service.client();
    if args.json {
        client = client.with_content_type("application/json");
    }
    let reply = GreeterClient::new(args.service, client)
        .hello(HelloRequest { name: args.name })
        .await?;
    Ok(reply.into_inner().message)
}
