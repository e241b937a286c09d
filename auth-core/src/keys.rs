//! Verification keys: parsing PEM, certificates and JWKs into keys parsed once, and their
//! RFC 7638 thumbprints.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The algorithms auth-core verifies. `none` is not one of them, in any spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256 (shared secret).
    HS256,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 4] = [Alg::RS256, Alg::ES256, Alg::EdDSA, Alg::HS256];

    /// The name used in a JWS header.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
        }
    }

    /// The kind of key this algorithm needs.
    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 => KeyFamily::Rsa,
            Alg::ES256 => KeyFamily::EcP256,
            Alg::EdDSA => KeyFamily::Ed25519,
            Alg::HS256 => KeyFamily::Hmac,
        }
    }

    /// The jsonwebtoken algorithm.
    pub fn to_jwt(self) -> Algorithm {
        match self {
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
            Alg::EdDSA => Algorithm::EdDSA,
            Alg::HS256 => Algorithm::HS256,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = String;

    /// Exact, case-sensitive names (RFC 7518): `rs256` is not `RS256`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unsupported algorithm {s:?} (accepted: RS256, ES256, EdDSA, HS256)")
            })
    }
}

/// The kind of a key; a token's `alg` must fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// RSA public key.
    Rsa,
    /// EC public key on P-256.
    EcP256,
    /// Ed25519 public key.
    Ed25519,
    /// HMAC shared secret.
    Hmac,
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not a supported public key or certificate.
    #[error("not a supported PEM public key or certificate (RSA, P-256 or Ed25519)")]
    UnsupportedPem,
    /// The JWK is malformed or of an unsupported type.
    #[error("unsupported or malformed JWK: {0}")]
    Jwk(String),
    /// The cryptographic library refused the key.
    #[error("key rejected: {0}")]
    Rejected(String),
    /// An HMAC secret shorter than 32 bytes.
    #[error("an HS256 secret must be at least 32 bytes")]
    ShortSecret,
    /// An RSA modulus outside 2048 to 8192 bits (no RS256 signature would verify with it).
    #[error("an RSA modulus of {0} bits; 2048 to 8192 are accepted")]
    KeySize(usize),
}

/// A verification key, parsed once.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key id a token names in its header (`kid`), when the source gives one.
    pub kid: Option<String>,
    /// The algorithm the key is bound to (a JWK's `alg`), when the source gives one.
    pub alg: Option<Alg>,
    /// The kind of key.
    pub family: KeyFamily,
    /// RFC 7638 thumbprint (SHA-256, base64url); for a secret, its [`secret_fingerprint`],
    /// which cannot sign.
    pub thumbprint: String,
    pub(crate) material: Material,
}

/// The key material, parsed once for the one algorithm its family allows.
#[derive(Clone)]
pub(crate) enum Material {
    /// An RSA, P-256 or Ed25519 public key.
    Public(ParsedPublicKey),
    /// An HMAC-SHA-256 key.
    Secret(Box<hmac::Key>),
}

impl Material {
    fn public(family: KeyFamily, der: &[u8]) -> Result<Self, KeyError> {
        let alg: &'static dyn VerificationAlgorithm = match family {
            KeyFamily::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
            KeyFamily::EcP256 => &signature::ECDSA_P256_SHA256_FIXED,
            KeyFamily::Ed25519 => &signature::ED25519,
            KeyFamily::Hmac => return Err(KeyError::UnsupportedPem),
        };
        ParsedPublicKey::new(alg, der)
            .map(Material::Public)
            .map_err(|e| KeyError::Rejected(e.to_string()))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a PEM public key (SPKI, PKCS#1 RSA) or an X.509 certificate's public key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let (decoding, family) = DecodingKey::from_rsa_pem(pem)
            .map(|k| (k, KeyFamily::Rsa))
            .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, KeyFamily::EcP256)))
            .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| (k, KeyFamily::Ed25519)))
            .map_err(|_| KeyError::UnsupportedPem)?;
        let jwk = Jwk::from_decoding_key(&decoding, None).map_err(|_| KeyError::UnsupportedPem)?;
        if family == KeyFamily::EcP256 && !is_p256(&jwk) {
            return Err(KeyError::UnsupportedPem);
        }
        check_rsa_size(&jwk)?;
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| KeyError::UnsupportedPem)?;
        let material = Material::public(family, raw_key(&decoding)?.as_ref())?;
        Ok(Self {
            kid: None,
            alg: None,
            family,
            thumbprint,
            material,
        })
    }

    /// Parses a DER SubjectPublicKeyInfo (RSA, P-256 or Ed25519), as [`VerifyingKey::from_pem`]
    /// does once the PEM armour is off.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_pem(pem::encode(&pem::Pem::new("PUBLIC KEY", der)).as_bytes())
    }

    /// Parses one JWK of a key set. Private members, if any, are ignored; symmetric (`oct`) keys
    /// are refused: a published key set never carries a shared secret.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let family = match &jwk.algorithm {
            P::RSA(_) => KeyFamily::Rsa,
            P::EllipticCurve(_) if is_p256(jwk) => KeyFamily::EcP256,
            P::OctetKeyPair(p) if p.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519 => {
                KeyFamily::Ed25519
            }
            _ => {
                return Err(KeyError::Jwk(
                    "only RSA, EC P-256 and Ed25519 keys are accepted".into(),
                ));
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => {
                let alg: Alg = ka.to_string().parse().map_err(KeyError::Jwk)?;
                if alg.family() != family {
                    return Err(KeyError::Jwk(format!(
                        "alg {alg} does not fit the key type"
                    )));
                }
                Some(alg)
            }
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            return Err(KeyError::Jwk(
                "key is not for signatures (use != sig)".into(),
            ));
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Jwk(e.to_string()))?;
        if family == KeyFamily::Ed25519
            && !matches!(decoding.kind(), DecodingKeyKind::SecretOrDer(x) if x.len() == 32)
        {
            return Err(KeyError::Jwk("an Ed25519 key is 32 bytes".into()));
        }
        // jsonwebtoken joins `x` and `y` into the point without looking at either's length, and
        // the thumbprint hashes them as written: the fixtures key with its coordinates split
        // otherwise (`x` = X‖Y, `y` = "") would verify as that key under another thumbprint,
        // and escape [`dev::THUMBPRINTS`]. RFC 7518 §6.2.1.2–3: each is exactly 32 bytes.
        if let P::EllipticCurve(ec) = &jwk.algorithm {
            use base64::Engine as _;
            let full = |c: &str| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .is_ok_and(|b| b.len() == 32)
            };
            if !(full(&ec.x) && full(&ec.y)) {
                return Err(KeyError::Jwk(
                    "a P-256 key's x and y are 32 bytes each".into(),
                ));
            }
        }
        check_rsa_size(jwk)?;
        let thumbprint = canonical(jwk)
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError::Jwk(e.to_string()))?;
        let material = Material::public(family, raw_key(&decoding)?.as_ref())?;
        Ok(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            thumbprint,
            material,
        })
    }

    /// An HS256 shared secret (at least 32 bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret);
        }
        Ok(Self {
            kid: None,
            alg: Some(Alg::HS256),
            family: KeyFamily::Hmac,
            thumbprint: secret_fingerprint(secret),
            material: Material::Secret(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
        })
    }

    /// Sets the key id (a static key has none of its own).
    pub fn with_kid(mut self, kid: Option<String>) -> Self {
        self.kid = kid;
        self
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// An RSA key's modulus must have 2048 to 8192 bits, the sizes aws-lc-rs verifies with: it
/// parses a smaller key without complaint and only refuses it at each verification, so a weak
/// key would load as usable (a key set of only such keys would replace a good one, and every
/// token would get "invalid signature").
fn check_rsa_size(jwk: &Jwk) -> Result<(), KeyError> {
    use base64::Engine as _;
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(p) = &jwk.algorithm else {
        return Ok(());
    };
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.n.trim_end_matches('='))
        .map_err(|_| KeyError::Jwk("n is not base64url".into()))?;
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if (2048..=8192).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::KeySize(bits))
    }
}

/// The JWK as RFC 7638 hashes it: an RSA key's `n` and `e` in their minimal form, as RFC 7518
/// §6.3.1 asks. A producer that pads them with a zero byte (Java's `BigInteger.toByteArray`)
/// would otherwise publish the same key under another thumbprint: a fixtures key would escape
/// [`dev::THUMBPRINTS`], and a key without `kid` would not be found under its own.
fn canonical(jwk: &Jwk) -> std::borrow::Cow<'_, Jwk> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let P::RSA(rsa) = &jwk.algorithm else {
        return std::borrow::Cow::Borrowed(jwk);
    };
    let minimal = |value: &str| -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let zeros = bytes.iter().take_while(|b| **b == 0).count();
        Some(URL_SAFE_NO_PAD.encode(&bytes[zeros..]))
    };
    match (minimal(&rsa.n), minimal(&rsa.e)) {
        (Some(n), Some(e)) if n != rsa.n || e != rsa.e => {
            let mut owned = jwk.clone();
            if let P::RSA(rsa) = &mut owned.algorithm {
                rsa.n = n;
                rsa.e = e;
            }
            std::borrow::Cow::Owned(owned)
        }
        _ => std::borrow::Cow::Borrowed(jwk),
    }
}

/// The bytes aws-lc-rs parses: PKCS#1 `RSAPublicKey` DER, an uncompressed P-256 point, or the
/// 32 bytes of an Ed25519 key.
fn raw_key(decoding: &DecodingKey) -> Result<std::borrow::Cow<'_, [u8]>, KeyError> {
    match decoding.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            Ok(std::borrow::Cow::Owned(rsa_public_key_der(n, e)))
        }
    }
}

/// DER of PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(value: &[u8]) -> Vec<u8> {
        let trimmed = &value[value.iter().take_while(|b| **b == 0).count()..];
        let mut body = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(trimmed);
        let mut out = vec![0x02];
        push_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }
    let body = [integer(n), integer(e)].concat();
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn is_p256(jwk: &Jwk) -> bool {
    matches!(&jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p)
        if p.curve == jsonwebtoken::jwk::EllipticCurve::P256)
}

/// How a shared secret is recognised without keeping it: HMAC-SHA-256 under the secret of a
/// fixed label, hex encoded. It is printed (a key's `Debug`) and compared, so it must not sign:
/// a plain SHA-256 of a secret longer than SHA-256's 64-byte block would, since HMAC hashes such
/// a key first (RFC 2104 §2) and HMAC(K, m) = HMAC(SHA-256(K), m).
pub fn secret_fingerprint(secret: &[u8]) -> String {
    const LABEL: &[u8] = b"auth-core secret fingerprint v1";
    hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), LABEL).as_ref())
}

/// SHA-256 of `bytes`, hex encoded: a tag that correlates a value without showing it. Never of
/// a secret that will be shown (see [`secret_fingerprint`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The dev-only key material of `fixtures/`, recognised wherever its file lives: production
/// refuses to start with any of it.
pub mod dev {
    /// RFC 7638 thumbprints of the fixture public keys (RSA, P-256, Ed25519).
    pub const THUMBPRINTS: [&str; 3] = [
        "Gq9MTt0SaIBOXZdBUhjvM9RokVQPQjLjXxP5pp3M9Ic",
        "7qdAkdwGnoWT44rQQPZxYDG3_c4wo9htWlgB1o-UAAs",
        "mpY3ryaN0OQbxVLVitjywIZfz4zxjHqZXC0Cpc9RsG4",
    ];
    /// The [`secret_fingerprint`](super::secret_fingerprint) of the fixture HS256 secret.
    pub const SECRET_FINGERPRINT: &str =
        "4fbf6630147ce40f6585007a6772bf14fc7c18f02ff75211d73c5ba9f8817a81";

    /// Whether a key with this thumbprint (or secret fingerprint) is a fixtures key.
    pub fn is_dev_key(thumbprint: &str) -> bool {
        THUMBPRINTS.contains(&thumbprint) || thumbprint == SECRET_FINGERPRINT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../fixtures/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn an_rsa_key_under_2048_bits_is_refused() {
        assert!(matches!(
            VerifyingKey::from_pem(&fixture("attacker/rsa1024-public.pem")),
            Err(KeyError::KeySize(1024))
        ));
        assert!(VerifyingKey::from_pem(&fixture("rsa-public.pem")).is_ok());
    }

    #[test]
    fn fixture_keys_are_recognised_as_dev_keys() {
        for (file, family) in [
            ("rsa-public.pem", KeyFamily::Rsa),
            ("rsa-cert.pem", KeyFamily::Rsa),
            ("ec-public.pem", KeyFamily::EcP256),
            ("ed25519-public.pem", KeyFamily::Ed25519),
        ] {
            let key = VerifyingKey::from_pem(&fixture(file)).unwrap();
            assert_eq!(key.family, family, "{file}");
            assert!(
                dev::is_dev_key(&key.thumbprint),
                "{file}: {}",
                key.thumbprint
            );
        }
        let secret = fixture("hs256-secret.txt");
        let key = VerifyingKey::from_secret(secret.trim_ascii()).unwrap();
        assert!(
            dev::is_dev_key(&key.thumbprint),
            "secret: {}",
            key.thumbprint
        );
    }

    #[test]
    fn certificate_and_public_key_have_the_same_thumbprint() {
        let a = VerifyingKey::from_pem(&fixture("rsa-public.pem")).unwrap();
        let b = VerifyingKey::from_pem(&fixture("rsa-cert.pem")).unwrap();
        assert_eq!(a.thumbprint, b.thumbprint);
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(matches!(
            VerifyingKey::from_secret(&[7; 31]),
            Err(KeyError::ShortSecret)
        ));
        assert!(VerifyingKey::from_secret(&[7; 32]).is_ok());
    }

    #[test]
    fn garbage_pem_is_refused() {
        assert!(
            VerifyingKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        assert!(VerifyingKey::from_pem(b"hello").is_err());
    }

    #[test]
    fn alg_names_are_exact() {
        assert_eq!("EdDSA".parse::<Alg>().unwrap(), Alg::EdDSA);
        for bad in ["none", "None", "NONE", "nOnE", "rs256", "HS512", ""] {
            assert!(bad.parse::<Alg>().is_err(), "{bad}");
        }
    }
}
