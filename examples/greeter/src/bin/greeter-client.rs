//! Calls `Greeter.Hello` once and prints the reply.
//!
//! `greeter-client --name John [--json] [--service greeter]`, plus any Micro flag
//! (`--registry`, `--client_request_timeout`, ...).

use std::process::ExitCode;

use greeter::greeter::{GreeterClient, HelloRequest};

struct Args {
    name: String,
    json: bool,
    service: String,
}

fn parse(rest: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        name: "World".into(),
        json: false,
        service: "greeter".into(),
    };
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--name" => args.name = value()?,
            "--service" => args.service = value()?,
            "--json" => args.json = true,
            other => return Err(format!("unknown argument {other:?}; usage: greeter-client [--name NAME] [--json] [--service NAME] [micro flags]")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    greeter::init_logging();
    let result = async {
        let (_, rest) = micro::config::Config::from_args(std::env::args().skip(1))
            .map_err(|e| e.to_string())?;
        let args = parse(rest)?;
        let service = micro::Service::builder("greeter-client")
            .build()
            .map_err(|e| e.to_string())?;
        let mut client = service.client();
        if args.json {
            client = client.with_content_type("application/json");
        }
        let greeter = GreeterClient::new(args.service, client);
        let reply = greeter
            .hello(HelloRequest { name: args.name })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(reply.into_inner().message)
    };
    match result.await {
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
