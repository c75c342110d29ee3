//! The greeter service: serves `Greeter.Hello` and its streaming siblings until SIGINT or
//! SIGTERM. Configure it with `MICRO_*` variables or flags (`--server_address 127.0.0.1:9090`);
//! `--help` lists them.

use std::process::ExitCode;

use clap::Parser;
use greeter::greeter::greeter_handler;
use greeter::GreeterService;

/// The greeter service: serves Greeter.Hello, Stream, Chat and Collect until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version, after_help = micro::cli::ENVIRONMENT)]
struct Args {
    #[command(flatten)]
    micro: micro::cli::Flags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    greeter::init_logging();
    let service = args.micro.config().and_then(|config| {
        micro::Service::builder("greeter")
            .config(config)
            .handler(greeter_handler(GreeterService))
            .build()
    });
    let result = match service {
        Ok(service) => service.run().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("greeter-server: {e}");
            ExitCode::FAILURE
        }
    }
}
