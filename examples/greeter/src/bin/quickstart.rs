//! Starts the greeter service, calls it over the default stack (mDNS registry, http transport,
//! protobuf and JSON codecs), prints the replies and exits.

use std::process::ExitCode;

use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest};
use greeter::GreeterService;

#[tokio::main]
async fn main() -> ExitCode {
    greeter::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> micro::Result<()> {
    let service = micro::Service::builder("greeter")
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
