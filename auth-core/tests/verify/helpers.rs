use std::sync::Arc;

use auth_core::keys::Alg;
use auth_core::{Auth, AuthErrorKind, AuthSettings, ManualClock};
use testkit::{AUDIENCE, ISSUER, MockIssuer, NOW, keys};

pub const REALM: &str = "todo-api";

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOW))
}

/// Issuer and audience of testkit's default claims; no key source yet.
pub fn settings() -> AuthSettings {
    AuthSettings {
        issuer: Some(ISSUER.into()),
        audience: vec![AUDIENCE.into()],
        ..AuthSettings::default()
    }
}

/// A static PEM file of `fixtures/keys/` as the key source.
pub fn pem_settings(file: &str) -> AuthSettings {
    AuthSettings {
        public_key: Some(keys::path(file).display().to_string()),
        ..settings()
    }
}

/// The fixture HS256 secret as the key source.
pub fn secret_settings() -> AuthSettings {
    let secret = String::from_utf8(keys::hs_secret_bytes()).unwrap();
    AuthSettings {
        secret: Some(secret.into()),
        algorithms: vec![Alg::HS256],
        ..settings()
    }
}

/// The JWKS of `issuer` as the key source.
pub fn jwks_settings(issuer: &MockIssuer) -> AuthSettings {
    AuthSettings {
        jwks_url: Some(issuer.jwks_url()),
        ..settings()
    }
}

pub fn auth(settings: &AuthSettings) -> Auth {
    Auth::with_clock(settings, REALM, clock()).unwrap()
}

pub fn auth_with(settings: &AuthSettings, clock: &Arc<ManualClock>) -> Auth {
    Auth::with_clock(settings, REALM, clock.clone()).unwrap()
}

/// The kind of the denial; panics if the token is accepted.
pub async fn denied(auth: &Auth, token: &str) -> AuthErrorKind {
    match auth.verify(token).await {
        Ok(claims) => panic!("token accepted: {claims:?}"),
        Err(e) => {
            assert_eq!(e.status(), 401, "{e:?}");
            e.kind().clone()
        }
    }
}
