// examples/hello/src/bin/server.rs
use hello::hello::{greeter_handler, Greeted, Greeter, HelloReply, HelloRequest};

struct GreeterService;

#[micro::async_trait]
impl Greeter for GreeterService {
    async fn hello(
        &self,
        req: micro::Request<HelloRequest>,
    ) -> Result<micro::Response<HelloReply>, micro::Error> {
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(micro::Error::bad_request("", "name must not be empty"));
        }
        Ok(micro::Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

#[tokio::main]
async fn main() -> micro::Result<()> {
    let config = micro::cli::parse(env!("CARGO_PKG_VERSION"))?;
    let service = micro::Service::builder("greeter")
        .config(config)
        .handler(greeter_handler(GreeterService))
        .subscriber("greeted", |event: micro::Event<Greeted>| {
            Box::pin(async move {
                println!("{} was greeted", event.message.name);
                Ok(())
            })
        })
        .build()?;
    service.run().await // serves until SIGINT/SIGTERM, then deregisters and drains
}
