//! `cargo xtask dev-token`: tokens signed with the fixtures dev keys.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, ValueEnum};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// The local issuer, as token-service's local configuration names it.
const LOCAL_ISSUER: &str = "http://127.0.0.1:4000";

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "verbatim")]
pub enum Alg {
    ES256,
    EdDSA,
    RS256,
    HS256,
}

#[derive(Args)]
pub struct DevToken {
    /// The subject (`sub`): the caller's stable id.
    #[arg(long, default_value = "alice")]
    sub: String,
    /// A role to grant (repeatable): `--role editor --role admin`.
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// An audience (repeatable); default: both APIs (`todo-api`, `tasks-api`).
    #[arg(long = "aud", value_name = "AUDIENCE")]
    audiences: Vec<String>,
    /// Lifetime: `30s`, `10m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: u64,
    /// Signing algorithm (the fixtures key of that type signs).
    #[arg(long, value_enum, default_value = "ES256")]
    alg: Alg,
    /// The `username` claim (default: the subject).
    #[arg(long)]
    username: Option<String>,
    /// The `scope` claim, space separated.
    #[arg(long)]
    scope: Option<String>,
    /// A path the token grants in its `access` claim (repeatable; seed 003): `/todos`, `/todos/*`.
    #[arg(long = "access", value_name = "PATH")]
    access: Vec<String>,
    /// Any other claim (repeatable): `key=value`, the value parsed as JSON when it parses, else a string.
    #[arg(long = "claim", value_name = "KEY=VALUE", value_parser = parse_claim)]
    claims: Vec<(String, Value)>,
    /// Make a token that expired an hour ago.
    #[arg(long)]
    expired: bool,
    /// Make a token not valid before this long from now (`10m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    not_before: Option<u64>,
    /// The issuer (`iss`).
    #[arg(long, default_value = LOCAL_ISSUER)]
    iss: String,
    /// Replace the signature with bytes no key made (for verification-off mode's committed tokens).
    #[arg(long)]
    bad_signature: bool,
    /// Print a ready `curl` command for this URL instead of the bare token.
    #[arg(long, value_name = "URL")]
    curl: Option<String>,
    /// Print `export TOKEN=…` for `eval "$(cargo xtask dev-token --export)"`.
    #[arg(long)]
    export: bool,
}

/// `30s`, `10m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use 30s, 10m, 1h, 7d)"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("duration too large: {s:?}"))
}

fn parse_claim(s: &str) -> Result<(String, Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err("empty claim name".into());
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), value))
}

fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = crate::root().join("fixtures/keys").join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// The signing key, its algorithm and `kid` (the RFC 7638 thumbprint of the public key, as
/// token-service publishes it; none for the shared secret).
pub(crate) fn signing_key(alg: Alg) -> anyhow::Result<(EncodingKey, Algorithm, Option<String>)> {
    let thumbprint = |d: DecodingKey| -> anyhow::Result<String> {
        Ok(Jwk::from_decoding_key(&d, None)?.thumbprint(ThumbprintHash::SHA256)?)
    };
    Ok(match alg {
        Alg::ES256 => (
            EncodingKey::from_ec_pem(&fixture("ec-private.pem")?)?,
            Algorithm::ES256,
            Some(thumbprint(DecodingKey::from_ec_pem(&fixture(
                "ec-public.pem",
            )?)?)?),
        ),
        Alg::EdDSA => (
            EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")?)?,
            Algorithm::EdDSA,
            Some(thumbprint(DecodingKey::from_ed_pem(&fixture(
                "ed25519-public.pem",
            )?)?)?),
        ),
        Alg::RS256 => (
            EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")?)?,
            Algorithm::RS256,
            Some(thumbprint(DecodingKey::from_rsa_pem(&fixture(
                "rsa-public.pem",
            )?)?)?),
        ),
        Alg::HS256 => {
            let secret = fixture("hs256-secret.txt")?;
            (
                EncodingKey::from_secret(secret.trim_ascii()),
                Algorithm::HS256,
                None,
            )
        }
    })
}

/// Mints the token `args` describe.
pub fn mint(args: &DevToken, now: u64) -> anyhow::Result<String> {
    let (key, algorithm, kid) = signing_key(args.alg)?;
    let (iat, exp) = if args.expired {
        (now - 2 * 3600, now - 3600)
    } else {
        (now, now.saturating_add(args.ttl))
    };
    let nbf = args.not_before.map_or(iat, |d| now.saturating_add(d));
    let audiences = if args.audiences.is_empty() {
        vec!["todo-api".to_owned(), "tasks-api".to_owned()]
    } else {
        args.audiences.clone()
    };
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(args.iss));
    claims.insert("sub".into(), json!(args.sub));
    claims.insert("aud".into(), json!(audiences));
    claims.insert("iat".into(), json!(iat));
    claims.insert("nbf".into(), json!(nbf));
    claims.insert("exp".into(), json!(exp));
    claims.insert(
        "jti".into(),
        json!(format!("dev-{now}-{}", std::process::id())),
    );
    claims.insert(
        "username".into(),
        json!(args.username.as_deref().unwrap_or(&args.sub)),
    );
    claims.insert("roles".into(), json!(args.roles));
    if let Some(scope) = &args.scope {
        claims.insert("scope".into(), json!(scope));
    }
    if !args.access.is_empty() {
        claims.insert("access".into(), json!(args.access));
    }
    for (k, v) in &args.claims {
        claims.insert(k.clone(), v.clone());
    }
    let mut header = Header::new(algorithm);
    header.kid = kid;
    header.typ = Some("at+jwt".into());
    let token = jsonwebtoken::encode(&header, &Value::Object(claims), &key)?;
    if !args.bad_signature {
        return Ok(token);
    }
    let Some((signed, _)) = token.rsplit_once('.') else {
        bail!("minted token has no signature")
    };
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(b"dev-only: not a signature of any key")
    ))
}

pub fn run(args: DevToken) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = mint(&args, now)?;
    if let Some(url) = &args.curl {
        // Quoted for the shell: a URL's `&` or `?` would otherwise be read by it.
        let quoted = format!("'{}'", url.replace('\'', "'\\''"));
        println!("curl -H \"Authorization: Bearer {token}\" {quoted}");
    } else if args.export {
        println!("export TOKEN={token}");
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn claim_values_are_json_when_they_parse() {
        assert_eq!(parse_claim("n=7").unwrap(), ("n".into(), json!(7)));
        assert_eq!(
            parse_claim("tags=[\"a\"]").unwrap(),
            ("tags".into(), json!(["a"]))
        );
        assert_eq!(
            parse_claim("team=blue").unwrap(),
            ("team".into(), json!("blue"))
        );
        assert!(parse_claim("novalue").is_err());
    }

    fn args(extra: &[&str]) -> DevToken {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            token: DevToken,
        }
        let mut argv = vec!["dev-token"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).token
    }

    /// A minted token verifies with the fixtures public key (or secret), names the kid
    /// token-service publishes for that key (its RFC 7638 thumbprint) and carries the defaults.
    #[test]
    fn minted_tokens_verify_with_the_fixture_keys_and_kids() {
        use jsonwebtoken::{Validation, decode, decode_header};
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let cases = [
            (
                "ES256",
                Some("7qdAkdwGnoWT44rQQPZxYDG3_c4wo9htWlgB1o-UAAs"),
                DecodingKey::from_ec_pem(&fixture("ec-public.pem").unwrap()).unwrap(),
            ),
            (
                "EdDSA",
                Some("mpY3ryaN0OQbxVLVitjywIZfz4zxjHqZXC0Cpc9RsG4"),
                DecodingKey::from_ed_pem(&fixture("ed25519-public.pem").unwrap()).unwrap(),
            ),
            (
                "RS256",
                Some("Gq9MTt0SaIBOXZdBUhjvM9RokVQPQjLjXxP5pp3M9Ic"),
                DecodingKey::from_rsa_pem(&fixture("rsa-public.pem").unwrap()).unwrap(),
            ),
            (
                "HS256",
                None,
                DecodingKey::from_secret(fixture("hs256-secret.txt").unwrap().trim_ascii()),
            ),
        ];
        for (alg, kid, key) in cases {
            let a = args(&[
                "--alg", alg, "--sub", "bob", "--role", "editor", "--role", "admin", "--access",
                "/todos/*", "--claim", "tier=3", "--ttl", "10m",
            ]);
            let token = mint(&a, now).unwrap();
            let header = decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), kid, "{alg}");
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let mut v = Validation::new(header.alg);
            v.set_audience(&["todo-api"]);
            v.set_issuer(&[LOCAL_ISSUER]);
            let claims = decode::<Value>(&token, &key, &v)
                .unwrap_or_else(|e| panic!("{alg}: {e}"))
                .claims;
            assert_eq!(claims["aud"], json!(["todo-api", "tasks-api"]));
            assert_eq!(claims["roles"], json!(["editor", "admin"]));
            assert_eq!(claims["access"], json!(["/todos/*"]));
            assert_eq!(claims["tier"], json!(3));
            assert_eq!(claims["exp"].as_u64().unwrap(), now + 600);
        }
        // --expired and --bad-signature make tokens no verifier accepts.
        let key = DecodingKey::from_ec_pem(&fixture("ec-public.pem").unwrap()).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["todo-api"]);
        let expired = mint(&args(&["--expired"]), now).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&expired, &key, &v).is_err());
        let forged = mint(&args(&["--bad-signature"]), now).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&forged, &key, &v).is_err());
    }
}
