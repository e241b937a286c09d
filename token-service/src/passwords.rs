//! Password hashing: argon2id (parameters from `users.argon2_*`, OWASP's minimum by default),
//! at most `users.max_concurrent_hashes` computations at once (a semaphore), each on the
//! blocking pool. Passwords live in [`SecretString`]s and are never logged.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::settings::UsersSettings;

/// Shortest password, in characters.
pub const MIN_CHARS: usize = 12;
/// Longest password, in bytes: longer inputs are refused before any hashing.
pub const MAX_BYTES: usize = 256;

/// Hashes and verifies passwords (PHC strings). Injected in tests to observe the calls.
pub trait Hasher: Send + Sync + std::fmt::Debug {
    /// A PHC string for `password`.
    fn hash(&self, password: &[u8]) -> anyhow::Result<String>;
    /// Whether `password` matches `phc`.
    fn verify(&self, password: &[u8], phc: &str) -> bool;
}

/// argon2id with the configured parameters.
#[derive(Debug, Clone)]
pub struct Argon2id {
    params: Params,
}

impl Argon2id {
    /// From `users.argon2_*` (validated by the settings).
    pub fn new(settings: &UsersSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("users.argon2_*: {e}"))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }
}

impl Hasher for Argon2id {
    fn hash(&self, password: &[u8]) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Ok(self
            .argon2()
            .hash_password(password, &salt)
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
            .to_string())
    }

    fn verify(&self, password: &[u8], phc: &str) -> bool {
        // The parameters of the stored hash apply (hashes made with older parameters still verify).
        PasswordHash::new(phc).is_ok_and(|h| self.argon2().verify_password(password, &h).is_ok())
    }
}

/// The bounded, blocking-pool front of a [`Hasher`].
#[derive(Debug, Clone)]
pub struct Passwords {
    hasher: Arc<dyn Hasher>,
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

impl Passwords {
    /// `max_concurrent` hashes at once. Hashes a random password once to get the dummy hash an
    /// unknown user's sign-in is verified against.
    pub fn new(hasher: Arc<dyn Hasher>, max_concurrent: usize) -> anyhow::Result<Self> {
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hasher.hash(random.as_bytes())?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy: dummy.into(),
        })
    }

    /// Hashes `password` (policy already checked).
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let hasher = self.hasher.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || hasher.hash(password.expose_secret().as_bytes()))
            .await?
    }

    /// Whether `password` matches `phc`. Without a hash (unknown user) a dummy hash is verified
    /// anyway, so both cases take comparable time, and the answer is `false`.
    pub async fn verify(&self, password: &SecretString, phc: Option<&str>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let hasher = self.hasher.clone();
        let password = password.clone();
        let (phc, real) = match phc {
            Some(p) => (Arc::<str>::from(p), true),
            None => (self.dummy.clone(), false),
        };
        let ok = tokio::task::spawn_blocking(move || {
            hasher.verify(password.expose_secret().as_bytes(), &phc)
        })
        .await
        .unwrap_or(false);
        ok && real
    }
}

/// The password policy: at least [`MIN_CHARS`] characters, at most [`MAX_BYTES`] bytes, not the
/// username. The message names the field.
pub fn check_policy(field: &str, username: &str, password: &str) -> Result<(), String> {
    if password.len() > MAX_BYTES {
        return Err(format!("{field}: at most {MAX_BYTES} bytes"));
    }
    if password.chars().count() < MIN_CHARS {
        return Err(format!("{field}: at least {MIN_CHARS} characters"));
    }
    if password == username {
        return Err(format!("{field}: must not equal the username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("password", "alice", "short").is_err());
        assert!(check_policy("password", "alice-dev-pass", "alice-dev-pass").is_err());
        assert!(check_policy("password", "alice", &"x".repeat(257)).is_err());
        assert!(check_policy("password", "alice", &"x".repeat(256)).is_ok());
        assert!(check_policy("password", "alice", "twelve chars").is_ok());
        let e = check_policy("new_password", "a", "x").unwrap_err();
        assert!(e.starts_with("new_password:"), "{e}");
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = Passwords::new(
            Arc::new(Argon2id::new(&UsersSettings::default()).unwrap()),
            2,
        )
        .unwrap();
        let pw = SecretString::from("correct horse battery");
        let phc = p.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(p.verify(&pw, Some(&phc)).await);
        assert!(
            !p.verify(&SecretString::from("wrong password!"), Some(&phc))
                .await
        );
        assert!(!p.verify(&pw, None).await, "no user: never true");
    }
}
