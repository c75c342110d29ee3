//! The greeter service: serves `Greeter.Hello` and its streaming siblings until SIGINT or
//! SIGTERM. Configure it with `MICRO_*` variables or flags (`--server_address 127.0.0.1:9090`).

use std::process::ExitCode;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;

#[tokio::main]
async fn main() -> ExitCode {
    greeter::init_logging();
    let service = match micro::Service::builder("greeter")
        .handler(greeter_handler(GreeterService))
        .build()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("greeter-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match service.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("greeter-server: {e}");
            ExitCode::FAILURE
        }
    }
}
