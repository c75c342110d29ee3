// examples/hello/src/bin/client.rs
use hello::hello::{Greeted, GreeterClient, HelloRequest};

#[tokio::main]
async fn main() -> micro::Result<()> {
    let config = micro::cli::parse(env!("CARGO_PKG_VERSION"))?;
    let service = micro::Service::builder("greeter-client")
        .config(config)
        .build()?;
    let greeter = GreeterClient::new("greeter", service.client());
    let reply = greeter
        .hello(HelloRequest {
            name: "John".into(),
        })
        .await?;
    println!("{}", reply.into_inner().message);
    service
        .publish(
            "greeted",
            &Greeted {
                name: "John".into(),
            },
        )
        .await
}
