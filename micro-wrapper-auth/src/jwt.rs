//! JSON Web Tokens: verifying them (HS256, RS256, or any algorithm `jsonwebtoken` knows) and
//! signing them.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use micro_core::Error;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Claims, Verifier};

const ID: &str = "micro.auth";

/// Verifies JWTs. Checked by default: the signature, the algorithm (only the verifier's),
/// `exp` (required), `nbf` (when present), each with 60 s of leeway, and `sub` (required, by
/// [`Claims`]). Checked only when set: the issuer ([`JwtVerifier::issuer`]) and the audience
/// ([`JwtVerifier::audience`]), which are then required too. Not checked: `iat`, `jti`
/// (no replay protection).
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    // The key is left out: a shared secret must not reach the logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Tokens signed with HMAC-SHA256 and a secret shared with the issuer.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        Self::new(Algorithm::HS256, DecodingKey::from_secret(secret.as_ref()))
    }

    /// Tokens signed with RSA-SHA256 by the holder of the private key whose public key this
    /// is (PEM, `PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub fn rs256_pem(public_key: impl AsRef<[u8]>) -> Result<Self, Error> {
        let key = DecodingKey::from_rsa_pem(public_key.as_ref()).map_err(|e| {
            Error::internal(
                ID,
                format!("cannot read the RS256 public key (expected PEM): {e}"),
            )
        })?;
        Ok(Self::new(Algorithm::RS256, key))
    }

    /// Tokens signed with `algorithm` and checked with `key`.
    pub fn new(algorithm: Algorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(algorithm);
        // A token that says it is not valid yet is not (jsonwebtoken leaves `nbf` off).
        validation.validate_nbf = true;
        // Audiences are checked only when the service names its own (see `audience`).
        validation.validate_aud = false;
        Self::with_validation(key, validation)
    }

    /// Full control over what is checked.
    pub fn with_validation(key: DecodingKey, validation: Validation) -> Self {
        JwtVerifier { key, validation }
    }

    /// Accepts only tokens issued by `issuer` (`iss`).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Accepts only tokens meant for `audience` (`aud`).
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// How many seconds of clock skew to allow on `exp` and `nbf` (60 by default).
    pub fn leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// Verifies a token without going through the async trait.
    pub fn verify_now(&self, token: &str) -> Result<Claims, Error> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| {
            Error::unauthorized(ID, format!("invalid token: {}", explain(e.kind())))
        })?;
        Claims::from_jwt(data.claims)
            .map_err(|why| Error::unauthorized(ID, format!("invalid token: {why}")))
    }
}

/// A `jsonwebtoken` error in words a caller can act on.
fn explain(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "not a JWT (expected header.claims.signature)".into(),
        ErrorKind::InvalidSignature => "the signature does not match".into(),
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => {
            "the token was issued by someone this service does not trust".into()
        }
        ErrorKind::InvalidAudience => "the token is meant for another audience".into(),
        ErrorKind::InvalidAlgorithm => {
            "the token is signed with an algorithm this service does not accept".into()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        other => format!("{other:?}"),
    }
}

#[async_trait::async_trait]
impl Verifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, Error> {
        self.verify_now(token)
    }
}

/// Signs JWTs: for services that mint their own tokens, and for tests.
#[derive(Clone)]
pub struct JwtSigner {
    key: EncodingKey,
    header: Header,
}

impl fmt::Debug for JwtSigner {
    // The key is left out: it must not reach the logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.header.alg)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// Signs with HMAC-SHA256 and a shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        Self::new(Algorithm::HS256, EncodingKey::from_secret(secret.as_ref()))
    }

    /// Signs with RSA-SHA256 and a private key (PEM, PKCS#1 or PKCS#8).
    pub fn rs256_pem(private_key: impl AsRef<[u8]>) -> Result<Self, Error> {
        let key = EncodingKey::from_rsa_pem(private_key.as_ref()).map_err(|e| {
            Error::internal(
                ID,
                format!("cannot read the RS256 private key (expected PEM): {e}"),
            )
        })?;
        Ok(Self::new(Algorithm::RS256, key))
    }

    /// Signs with `algorithm` and `key`.
    pub fn new(algorithm: Algorithm, key: EncodingKey) -> Self {
        JwtSigner {
            key,
            header: Header::new(algorithm),
        }
    }

    /// A token carrying `claims` (include `sub` and `exp`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, Error> {
        jsonwebtoken::encode(&self.header, claims, &self.key)
            .map_err(|e| Error::internal(ID, format!("cannot sign the token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn hs256_tokens_verify_and_tampering_is_caught() {
        let token = JwtSigner::hs256(SECRET)
            .sign(&json!({"sub": "alice", "exp": later(), "scope": "a b"}))
            .expect("sign");
        let claims = JwtVerifier::hs256(SECRET)
            .verify_now(&token)
            .expect("valid");
        assert_eq!(claims.subject, "alice");
        assert_eq!(claims.scopes, ["a", "b"]);

        let wrong = JwtVerifier::hs256(b"another secret, another issuer!!").verify_now(&token);
        let e = wrong.expect_err("wrong secret");
        assert_eq!(e.code, 401);
        assert_eq!(e.detail, "invalid token: the signature does not match");
    }

    #[test]
    fn expiry_not_before_issuer_and_subject_are_enforced() {
        let signer = JwtSigner::hs256(SECRET);
        let verifier = JwtVerifier::hs256(SECRET).leeway(0);
        let expired = signer.sign(&json!({"sub": "a", "exp": 1})).expect("sign");
        assert_eq!(
            verifier.verify_now(&expired).expect_err("expired").detail,
            "invalid token: the token has expired"
        );
        let no_exp = signer.sign(&json!({"sub": "a"})).expect("sign");
        assert_eq!(
            verifier.verify_now(&no_exp).expect_err("no exp").detail,
            "invalid token: the token has no `exp` claim"
        );
        let early = signer
            .sign(&json!({"sub": "a", "exp": later() + 3600, "nbf": later()}))
            .expect("sign");
        assert_eq!(
            verifier.verify_now(&early).expect_err("not yet").detail,
            "invalid token: the token is not valid yet (nbf)"
        );
        let no_sub = signer.sign(&json!({"exp": later()})).expect("sign");
        assert!(verifier.verify_now(&no_sub).is_err());
        let foreign = signer
            .sign(&json!({"sub": "a", "exp": later(), "iss": "elsewhere"}))
            .expect("sign");
        let strict = JwtVerifier::hs256(SECRET).issuer("auth.example");
        assert_eq!(strict.verify_now(&foreign).expect_err("issuer").code, 401);
        assert_eq!(
            JwtVerifier::hs256(SECRET)
                .verify_now("not-a-token")
                .expect_err("garbage")
                .code,
            401
        );
    }

    #[test]
    fn debug_output_hides_keys() {
        let shown = format!(
            "{:?} {:?}",
            JwtVerifier::hs256(SECRET),
            JwtSigner::hs256(SECRET)
        );
        assert!(!shown.contains("key"), "{shown}");
    }
}
