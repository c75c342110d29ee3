//! Starts the greeter service, calls it over the default stack (mDNS registry, http transport,
//! protobuf and JSON codecs), prints the replies and exits.

use std::process::ExitCode;

use clap::Parser;
use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest};
use greeter::GreeterService;

/// Starts the greeter, calls it in protobuf and in JSON, prints the replies and exits.
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
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let service = micro::Service::builder("greeter")
        .config(args.micro.config()?)
        .handler(greeter_handler(GreeterService))
        .build()?;
    service.start().await?;

    let greeter = GreeterClient::new("greeter", service.client());
    let reply = greeter
        .hello(HelloRequest {
            name: "John".into(),
        })
        .await;
    let json = GreeterClient::new(
        "greeter",
        service.client().with_content_type("application/json"),
    );
    let reply_json = json
        .hello(HelloRequest {
            name: "Jane".into(),
        })
        .await;
    service.stop().await?;

    println!("{} (protobuf)", reply?.into_inner().message);
    println!("{} (json)", reply_json?.into_inner().message);
    Ok(())
}
