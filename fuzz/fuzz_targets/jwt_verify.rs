//! JWT verification of the auth wrapper: bearer tokens from any caller.
//!
//! Properties: a token the fuzzer makes up never verifies (no `alg: none`, no algorithm
//! confusion, no panic on any header or claims); a token signed with the service's secret
//! verifies to the claims signed; changing any one byte of it, signing it with another
//! secret, or asking for an issuer or audience it does not carry makes it fail.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_fuzz::text;
use micro_wrapper_auth::{JwtSigner, JwtVerifier};

fn run(data: &[u8]) -> Result<()> {
    let fixed = JwtVerifier::hs256(b"fuzz-secret");
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(
            fixed.verify_now(token).is_err(),
            "a made-up token verified: {token:?}"
        );
    }
    let mut u = Unstructured::new(data);
    let secret: Vec<u8> = u.arbitrary()?;
    let subject = text(&mut u)?;
    let scopes: Vec<String> = (0..u.int_in_range(0..=3)?)
        .map(|_| text(&mut u))
        .collect::<Result<_>>()?;
    let roles: Vec<String> = (0..u.int_in_range(0..=3)?)
        .map(|_| text(&mut u))
        .collect::<Result<_>>()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = serde_json::json!({
        "sub": subject,
        "scopes": scopes,
        "roles": roles,
        "exp": now + 3600,
    });
    let token = match JwtSigner::hs256(&secret).sign(&claims) {
        Ok(t) => t,
        Err(e) => panic!("signing: {e}"),
    };
    let verifier = JwtVerifier::hs256(&secret);
    match verifier.verify_now(&token) {
        Ok(c) => {
            assert_eq!(c.subject, subject);
            assert_eq!(c.scopes, scopes);
            assert_eq!(c.roles, roles);
        }
        Err(e) => assert!(subject.is_empty(), "a signed token was refused: {e}"),
    }
    let at = u.int_in_range(0..=token.len() - 1)?;
    let by: u8 = u.int_in_range(1..=255)?;
    let mut changed = token.clone().into_bytes();
    changed[at] = changed[at].wrapping_add(by);
    if let Ok(changed) = std::str::from_utf8(&changed) {
        assert!(
            verifier.verify_now(changed).is_err(),
            "{changed:?} verified after a change at {at}"
        );
    }
    let other: Vec<u8> = u.arbitrary()?;
    // HMAC pads keys up to its 64-byte block with zeros (RFC 2104), so `k` and `k\0` are one
    // key; longer keys are hashed first. Only keys that differ as HMAC sees them must fail.
    let padded = |k: &[u8]| k.len() <= 64 && !k.ends_with(&[0]);
    if other != secret && padded(&other) && padded(&secret) {
        assert!(JwtVerifier::hs256(&other).verify_now(&token).is_err());
    }
    assert!(JwtVerifier::hs256(&secret)
        .issuer("issuer")
        .verify_now(&token)
        .is_err());
    assert!(JwtVerifier::hs256(&secret)
        .audience("audience")
        .verify_now(&token)
        .is_err());
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
