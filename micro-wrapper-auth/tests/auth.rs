//! Authentication over real calls: the greeter and two more handlers on the http transport, on
//! loopback, behind the auth layer.

use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{greeter_handler, GreeterClient, HelloReply, HelloRequest};
use greeter::GreeterService;
use micro::debug::{HealthRequest, HealthResponse};
use micro::registry::MemoryRegistry;
use micro::{Client, Handler, Request, Response, Service, ServiceBuilder};
use micro_wrapper_auth::{
    AuthLayer, BearerLayer, Claims, JwtSigner, JwtVerifier, Verifier, SCOPES, SUBJECT,
};
use serde_json::json;

const SECRET: &[u8] = b"a test secret that is 32 bytes!!";

fn builder(name: &str, registry: &MemoryRegistry) -> ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("the http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

/// A handler whose one endpoint answers with what the auth layer told it:
/// `<subject>|<scopes>|<claims subject>`, `-` for what is missing.
fn whoami(name: &str) -> Handler {
    Handler::new(name).unary("Get", |req: Request<HelloRequest>| {
        Box::pin(async move {
            let md = req.metadata();
            let claims = Claims::from_metadata(md).map(|c| c.subject);
            let message = format!(
                "{}|{}|{}",
                md.get(SUBJECT).unwrap_or("-"),
                md.get(SCOPES).unwrap_or("-"),
                claims.as_deref().unwrap_or("-")
            );
            Ok(Response::new(HelloReply { message }))
        })
    })
}

async fn protected(registry: &MemoryRegistry, verifier: impl Verifier + 'static) -> Service {
    let auth = AuthLayer::new(verifier)
        .public("Public.*")
        .require_scope("Admin.*", "admin");
    let service = builder("greeter", registry)
        .handler(greeter_handler(GreeterService))
        .handler(whoami("Whoami"))
        .handler(whoami("Public"))
        .handler(whoami("Admin"))
        .handler_layer(auth)
        .build()
        .expect("build");
    service.start().await.expect("start");
    service
}

fn in_an_hour() -> u64 {
    micro_wrapper_auth::jsonwebtoken::get_current_timestamp() + 3600
}

fn hs256(claims: serde_json::Value) -> String {
    JwtSigner::hs256(SECRET).sign(&claims).expect("sign")
}

/// Calls `<handler>.Get` with `token` (if any) and extra metadata.
async fn get(
    client: &Client,
    handler: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> micro::Result<String> {
    let mut req = Request::new(HelloRequest::default());
    if let Some(t) = token {
        req = req.with_metadata("Authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.with_metadata(*k, *v);
    }
    let endpoint = format!("{handler}.Get");
    within(
        "call",
        client.unary::<_, HelloReply>("greeter", &endpoint, req),
    )
    .await
    .map(|r| r.into_inner().message)
}

#[tokio::test]
async fn hs256_tokens_are_checked_and_their_claims_reach_the_handler() {
    let registry = MemoryRegistry::new();
    let server = protected(&registry, JwtVerifier::hs256(SECRET)).await;
    let client = builder("caller", &registry)
        .build()
        .expect("caller")
        .client();
    let greeter = GreeterClient::new("greeter", client.clone());

    // No token, a malformed one, a forged one, an expired one: 401, and the reason.
    let e = within("no token", greeter.hello(HelloRequest { name: "a".into() }))
        .await
        .expect_err("no token");
    assert_eq!(e.code, 401, "{e}");
    assert_eq!(e.id, "greeter.Greeter.Hello");
    assert!(e.detail.contains("needs a token"), "{e}");
    let forged = JwtSigner::hs256(b"not the secret the service knows!")
        .sign(&json!({"sub": "alice", "exp": in_an_hour()}))
        .expect("sign");
    let expired = hs256(json!({"sub": "alice", "exp": 1}));
    for (token, why) in [
        (
            "not-a-jwt",
            "invalid token: not a JWT (expected header.claims.signature)",
        ),
        (
            forged.as_str(),
            "invalid token: the signature does not match",
        ),
        (expired.as_str(), "invalid token: the token has expired"),
    ] {
        let e = get(&client, "Whoami", Some(token), &[])
            .await
            .expect_err("a bad token");
        assert_eq!(e.code, 401, "{e}");
        assert_eq!(e.detail, why);
    }
    let e = within(
        "basic auth",
        client.unary::<_, HelloReply>(
            "greeter",
            "Whoami.Get",
            Request::new(HelloRequest::default()).with_metadata("Authorization", "Basic YTpi"),
        ),
    )
    .await
    .expect_err("not a bearer token");
    assert_eq!(e.code, 401);

    // A good token: the call goes through, and the handler learns who called, even when the
    // caller tries to say it itself.
    let alice = hs256(json!({"sub": "alice", "scope": "read write", "exp": in_an_hour()}));
    let req = Request::new(HelloRequest {
        name: "Alice".into(),
    })
    .with_metadata("Authorization", format!("Bearer {alice}"));
    let reply = within("good token", greeter.hello(req))
        .await
        .expect("a good token");
    assert_eq!(reply.get_ref().message, "Hello Alice");
    let seen = get(
        &client,
        "Whoami",
        Some(&alice),
        &[
            ("Micro-Auth-Subject", "mallory"),
            ("micro-auth-scopes", "admin"),
        ],
    )
    .await
    .expect("whoami");
    assert_eq!(seen, "alice|read write|alice");

    // Public endpoints: open to all, and nobody can claim to be someone there either.
    let anonymous = get(
        &client,
        "Public",
        None,
        &[("Micro-Auth-Subject", "mallory")],
    )
    .await
    .expect("public");
    assert_eq!(anonymous, "-|-|-");
    let known = get(&client, "Public", Some(&alice), &[])
        .await
        .expect("public, with a token");
    assert_eq!(known, "alice|read write|alice");
    let still_open = get(&client, "Public", Some("not-a-jwt"), &[])
        .await
        .expect("a bad token does not close a public endpoint");
    assert_eq!(still_open, "-|-|-");
    let health = within(
        "health",
        client.unary::<_, HealthResponse>(
            "greeter",
            "Debug.Health",
            Request::new(HealthRequest {}),
        ),
    )
    .await
    .expect("health probes need no token");
    assert_eq!(health.get_ref().status, "ok");

    // Scope rules: a valid token without the scope is 403, with it the call goes through.
    let e = get(&client, "Admin", Some(&alice), &[])
        .await
        .expect_err("alice is no admin");
    assert_eq!(e.code, 403, "{e}");
    assert_eq!(
        e.detail,
        "alice may not call Admin.Get: it needs scope `admin`"
    );
    let root = hs256(json!({"sub": "root", "scope": "admin", "exp": in_an_hour()}));
    let admin = get(&client, "Admin", Some(&root), &[])
        .await
        .expect("root is an admin");
    assert_eq!(admin, "root|admin|root");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_bearer_layer_attaches_a_token_unless_the_call_has_one() {
    let registry = MemoryRegistry::new();
    let server = protected(&registry, JwtVerifier::hs256(SECRET)).await;
    let service_token = hs256(json!({"sub": "billing", "exp": in_an_hour()}));
    let client = builder("billing", &registry)
        .client_layer(BearerLayer::new(service_token))
        .build()
        .expect("caller")
        .client();
    let seen = get(&client, "Whoami", None, &[])
        .await
        .expect("the layer's token");
    assert_eq!(seen, "billing||billing");
    // A token set on the call itself (a caller's, passed on) wins over the layer's.
    let alice = hs256(json!({"sub": "alice", "exp": in_an_hour()}));
    let seen = get(&client, "Whoami", Some(&alice), &[])
        .await
        .expect("the call's token");
    assert_eq!(seen, "alice||alice");
    // A layer with no token to give sends none.
    let anonymous = builder("anonymous", &registry)
        .client_layer(BearerLayer::from_fn(|| None))
        .build()
        .expect("caller")
        .client();
    let e = get(&anonymous, "Whoami", None, &[])
        .await
        .expect_err("no token");
    assert_eq!(e.code, 401);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_issuers_public_key_only() {
    let registry = MemoryRegistry::new();
    let verifier = JwtVerifier::rs256_pem(include_bytes!("keys/signer-public.pem"))
        .expect("public key")
        .issuer("auth.test");
    let server = protected(&registry, verifier).await;
    let client = builder("caller", &registry)
        .build()
        .expect("caller")
        .client();
    let issuer = JwtSigner::rs256_pem(include_bytes!("keys/signer-private.pem")).expect("key");
    let claims = json!({"sub": "carol", "iss": "auth.test", "scp": ["admin"], "exp": in_an_hour()});

    let good = issuer.sign(&claims).expect("sign");
    let seen = get(&client, "Admin", Some(&good), &[])
        .await
        .expect("signed by the trusted issuer");
    assert_eq!(seen, "carol|admin|carol");

    // Signed by another key, by the shared-secret algorithm, or for another issuer: refused.
    let other = JwtSigner::rs256_pem(include_bytes!("keys/other-private.pem"))
        .expect("key")
        .sign(&claims)
        .expect("sign");
    let hmac = hs256(claims.clone());
    let elsewhere = issuer
        .sign(&json!({"sub": "carol", "iss": "elsewhere", "exp": in_an_hour()}))
        .expect("sign");
    for (token, why) in [
        (
            other.as_str(),
            "invalid token: the signature does not match",
        ),
        (
            hmac.as_str(),
            "invalid token: the token is signed with an algorithm this service does not accept",
        ),
        (
            elsewhere.as_str(),
            "invalid token: the token was issued by someone this service does not trust",
        ),
    ] {
        let e = get(&client, "Whoami", Some(token), &[])
            .await
            .expect_err("refused");
        assert_eq!(e.code, 401, "{e}");
        assert_eq!(e.detail, why);
    }
    server.stop().await.expect("stop");
}
