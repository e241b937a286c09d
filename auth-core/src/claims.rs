//! The claims a verified token carries, as handlers receive them.

use std::collections::BTreeMap;

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The longest `sub` a service stores: OpenID Connect Core §2 allows at most 255 ASCII
/// characters.
pub const MAX_SUBJECT_BYTES: usize = 255;

/// The claims of a verified access token.
///
/// Handlers receive this type, never the token string. Registered claims are typed; the ones the
/// services of this workspace use (`roles`, `username`, `scope`, `client_id`, `access`) are
/// typed too; anything else stays reachable through [`Claims::extra`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claims {
    /// Issuer (`iss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject (`sub`): the stable id of the caller, always a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience (`aud`): a string or an array of strings in the token, always a list here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    /// Expiry (`exp`), seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before (`nbf`), seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (`iat`), seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id (`jti`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Roles granted to the caller (seed 001).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The caller's user name, for display.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// OAuth scopes, space separated (RFC 8693 §4.2). `None` only when the token has neither a
    /// `scope` claim nor an `scp` one; `"scope": null` reads as `Some("")`, no scope at all.
    /// Okta's and Microsoft Entra ID's `scp` (an array of scopes, or a space-separated string)
    /// is read as `scope` is; a token carrying both holds only the scopes both name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to (`client_id`, RFC 9068 §2.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// URL paths the token grants (seed 003), checked by [`crate::filters::with_access`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<String>,
    /// Every other claim, untouched.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Claims {
    /// The subject, or the empty string when the token has none.
    pub fn subject(&self) -> &str {
        self.sub.as_deref().unwrap_or("")
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller holds at least one of `roles`.
    pub fn has_any_role(&self, roles: &[&str]) -> bool {
        roles.iter().any(|r| self.has_role(r))
    }

    /// The scopes of the `scope` claim.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_ascii_whitespace()
    }

    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// Why the subject cannot be stored as an owner or a creator, if it cannot: it holds a NUL
    /// (PostgreSQL's TEXT cannot) or is longer than [`MAX_SUBJECT_BYTES`] (OpenID Connect
    /// allows no longer, and PostgreSQL's index keys cannot be much longer: such an insert
    /// failed there, a 500, where SQLite stored it). `None` when it can, or when there is none.
    /// Services answer the reason as a 401 `invalid_token`, on every backend alike.
    pub fn unstorable_subject(&self) -> Option<&'static str> {
        let sub = self.sub.as_deref()?;
        if sub.contains('\0') {
            Some("the token's subject holds a NUL character")
        } else if sub.len() > MAX_SUBJECT_BYTES {
            Some("the token's subject is longer than 255 bytes")
        } else {
            None
        }
    }

    /// Whether the caller is the owner `owner_sub`: the token has a non-empty `sub` equal to it.
    ///
    /// Use [`Claims::owns_or_has_role`] when some roles (e.g. `admin`) may act on anything.
    pub fn owns(&self, owner_sub: &str) -> bool {
        matches!(self.sub.as_deref(), Some(sub) if !sub.is_empty() && sub == owner_sub)
    }

    /// The owner rule: the caller owns the resource, or holds one of `override_roles`.
    pub fn owns_or_has_role(&self, owner_sub: &str, override_roles: &[&str]) -> bool {
        self.owns(owner_sub) || self.has_any_role(override_roles)
    }
}

/// Deserialised by hand rather than derived: a derived `#[serde(flatten)]` buffers every unknown
/// claim into serde's intermediate `Content` and walks it again, on every verification. This reads
/// each member once; the result and the errors are those of the derive (`default` on every field,
/// a repeated registered claim is an error, any other claim lands in `extra`, last one wins).
impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct Claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        fn set<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
            name: &'static str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let mut iss: Option<Option<String>> = None;
        let mut sub: Option<Option<String>> = None;
        let mut aud: Option<Aud> = None;
        let mut exp: Option<NumericDate<false>> = None;
        let mut nbf: Option<NumericDate<true>> = None;
        let mut iat: Option<NumericDate<true>> = None;
        let mut jti: Option<Option<String>> = None;
        let mut roles: Option<Vec<String>> = None;
        let mut username: Option<Option<String>> = None;
        let mut scope: Option<Option<String>> = None;
        let mut scp: Option<Aud> = None;
        let mut client_id: Option<Option<String>> = None;
        let mut access: Option<Vec<String>> = None;
        let mut extra = BTreeMap::new();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Iss => set(&mut map, &mut iss, "iss")?,
                Field::Sub => set(&mut map, &mut sub, "sub")?,
                Field::Aud => set(&mut map, &mut aud, "aud")?,
                Field::Exp => set(&mut map, &mut exp, "exp")?,
                Field::Nbf => set(&mut map, &mut nbf, "nbf")?,
                Field::Iat => set(&mut map, &mut iat, "iat")?,
                Field::Jti => set(&mut map, &mut jti, "jti")?,
                Field::Roles => set(&mut map, &mut roles, "roles")?,
                Field::Username => set(&mut map, &mut username, "username")?,
                Field::Scope => set(&mut map, &mut scope, "scope")?,
                Field::Scp => set(&mut map, &mut scp, "scp")?,
                Field::ClientId => set(&mut map, &mut client_id, "client_id")?,
                Field::Access => set(&mut map, &mut access, "access")?,
                Field::Other(name) => {
                    extra.insert(name, map.next_value::<serde_json::Value>()?);
                }
            }
        }
        Ok(Claims {
            iss: iss.flatten(),
            sub: sub.flatten(),
            aud: aud.map(|a| a.0).unwrap_or_default(),
            exp: exp.and_then(|d| d.0),
            nbf: nbf.and_then(|d| d.0),
            iat: iat.and_then(|d| d.0),
            jti: jti.flatten(),
            roles: roles.unwrap_or_default(),
            username: username.flatten(),
            // A `scope` present as `null` names no scope: it narrows to nothing, as `""`
            // does, rather than reading as a token without the claim (which roles alone judge).
            // `scp` narrows the same way (`null` or `[]`: nothing); with both, the narrower.
            scope: match (scope.map(Option::unwrap_or_default), scp) {
                (scope, None) => scope,
                (None, Some(scp)) => Some(scp.0.join(" ")),
                (Some(scope), Some(scp)) => {
                    let held = |s: &&str| {
                        scp.0
                            .iter()
                            .flat_map(|v| v.split_ascii_whitespace())
                            .any(|v| v == *s)
                    };
                    let both: Vec<&str> = scope.split_ascii_whitespace().filter(held).collect();
                    Some(both.join(" "))
                }
            },
            client_id: client_id.flatten(),
            access: access.unwrap_or_default(),
            extra,
        })
    }
}

/// A member name of the claims object.
enum Field {
    Iss,
    Sub,
    Aud,
    Exp,
    Nbf,
    Iat,
    Jti,
    Roles,
    Username,
    Scope,
    Scp,
    ClientId,
    Access,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(FieldVisitor)
    }
}

struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
        Ok(match name {
            "iss" => Field::Iss,
            "sub" => Field::Sub,
            "aud" => Field::Aud,
            "exp" => Field::Exp,
            "nbf" => Field::Nbf,
            "iat" => Field::Iat,
            "jti" => Field::Jti,
            "roles" => Field::Roles,
            "username" => Field::Username,
            "scope" => Field::Scope,
            "scp" => Field::Scp,
            "client_id" => Field::ClientId,
            "access" => Field::Access,
            other => Field::Other(other.to_owned()),
        })
    }
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, a JSON number that may have a fraction
/// (PyJWT writes `time.time()` as it is), or `null` (as if absent). A fraction is rounded to the
/// stricter side: down for `exp` (`UP = false`), up for `nbf` and `iat`, so it never lets a token
/// live longer or start sooner (`max_lifetime_seconds` may see up to 2 s less). A negative value,
/// one past `u64::MAX`, or any other JSON type is refused.
struct NumericDate<const UP: bool>(Option<u64>);

impl<'de, const UP: bool> Deserialize<'de> for NumericDate<UP> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumericDateVisitor::<UP>)
    }
}

struct NumericDateVisitor<const UP: bool>;

impl<'de, const UP: bool> Visitor<'de> for NumericDateVisitor<UP> {
    type Value = NumericDate<UP>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a NumericDate (non-negative seconds since the epoch)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(NumericDate(Some(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(|v| NumericDate(Some(v)))
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let whole = if UP { v.ceil() } else { v.floor() };
        // 2^64, exactly representable: every f64 below it and not negative fits a u64.
        if v >= 0.0 && whole < 18_446_744_073_709_551_616.0 {
            Ok(NumericDate(Some(whole as u64)))
        } else {
            Err(de::Error::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(NumericDate(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(NumericDate(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// `aud`: a string or an array of strings.
struct Aud(Vec<String>);

impl<'de> Deserialize<'de> for Aud {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d).map(Aud)
    }
}

/// A string, an array of strings, or `null` (none), read in one pass (an untagged enum would
/// buffer the value first).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an array of strings")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(vec![v])
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(s) = seq.next_element::<String>()? {
                all.push(s);
            }
            Ok(all)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    d.deserialize_any(OneOrMany)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn aud_string_or_array() {
        assert_eq!(parse(serde_json::json!({"aud": "a"})).aud, vec!["a"]);
        assert_eq!(
            parse(serde_json::json!({"aud": ["a", "b"]})).aud,
            vec!["a", "b"]
        );
        assert!(parse(serde_json::json!({})).aud.is_empty());
        let de = |s: &str| serde_json::from_str::<Claims>(s);
        assert_eq!(
            de(r#"{"aud":"a\u0062"}"#).unwrap().aud,
            vec!["ab"],
            "escaped"
        );
        assert_eq!(de(r#"{"aud":[]}"#).unwrap().aud, Vec::<String>::new());
        assert!(
            de(r#"{"aud":null}"#).unwrap().aud.is_empty(),
            "null is none"
        );
        for bad in [
            r#"{"aud":7}"#,
            r#"{"aud":[7]}"#,
            r#"{"aud":["a",null]}"#,
            r#"{"aud":{}}"#,
            r#"{"aud":true}"#,
        ] {
            assert!(de(bad).is_err(), "{bad}");
        }
        assert!(de(r#"{"aud":"a","aud":"b"}"#).is_err(), "repeated");
    }

    #[test]
    fn client_id_is_typed_and_checked_like_the_others() {
        let de = |s: &str| serde_json::from_str::<Claims>(s);
        let c = de(r#"{"client_id":"cli","x":1}"#).unwrap();
        assert_eq!(c.client_id.as_deref(), Some("cli"));
        assert!(!c.extra.contains_key("client_id"));
        assert!(de(r#"{"client_id":7}"#).is_err());
        assert!(
            de(r#"{"client_id":"a","client_id":"b"}"#).is_err(),
            "repeated"
        );
        assert_eq!(de(r#"{"client_id":null}"#).unwrap().client_id, None);
    }

    #[test]
    fn extra_claims_stay_reachable() {
        let c = parse(serde_json::json!({"sub": "u1", "tenant": "t9"}));
        assert_eq!(c.extra["tenant"], "t9");
    }

    #[test]
    fn sub_must_be_a_string() {
        assert!(serde_json::from_value::<Claims>(serde_json::json!({"sub": 7})).is_err());
    }

    #[test]
    fn owner_rule() {
        let c = parse(serde_json::json!({"sub": "alice", "roles": ["user"]}));
        assert!(c.owns("alice"));
        assert!(!c.owns("bob"));
        assert!(!c.owns_or_has_role("bob", &["admin"]));
        let admin = parse(serde_json::json!({"sub": "root", "roles": ["admin"]}));
        assert!(admin.owns_or_has_role("bob", &["admin"]));
        let anonymous = parse(serde_json::json!({}));
        assert!(!anonymous.owns(""), "an empty sub owns nothing");
    }

    /// Okta's `scp` (an array) and Microsoft Entra ID's (a space-separated string) are scopes
    /// as `scope` is; `null` or `[]` narrow to nothing; a token with both holds only what both
    /// name; any other type is refused.
    #[test]
    fn scp_is_read_as_scope() {
        let c = parse(serde_json::json!({"scp": ["todos:read", "todos:write"]}));
        assert!(c.has_scope("todos:write") && c.has_scope("todos:read"));
        assert_eq!(c.scope.as_deref(), Some("todos:read todos:write"));
        let c = parse(serde_json::json!({"scp": "todos:read  tasks:read"}));
        assert!(c.has_scope("tasks:read") && !c.has_scope("todos:write"));
        for none in [serde_json::json!(null), serde_json::json!([])] {
            let c = parse(serde_json::json!({ "scp": none }));
            assert_eq!(c.scope.as_deref(), Some(""), "{none}");
        }
        let c = parse(
            serde_json::json!({"scope": "todos:read todos:write", "scp": ["todos:read", "tasks:write"]}),
        );
        assert_eq!(c.scope.as_deref(), Some("todos:read"));
        let c = parse(serde_json::json!({"scope": "todos:write", "scp": null}));
        assert_eq!(c.scope.as_deref(), Some(""));
        assert!(c.extra.is_empty(), "scp is read, not kept as another claim");
        for bad in [
            serde_json::json!(7),
            serde_json::json!([1]),
            serde_json::json!({"a": 1}),
        ] {
            let claims = serde_json::json!({ "scp": bad });
            assert!(serde_json::from_value::<Claims>(claims).is_err(), "{bad}");
        }
        assert!(
            serde_json::from_str::<Claims>(r#"{"scp": "a", "scp": "b"}"#).is_err(),
            "a repeated scp is refused"
        );
    }

    #[test]
    fn scopes_split_on_whitespace() {
        let c = parse(serde_json::json!({"scope": "read:todos  write:todos"}));
        assert!(c.has_scope("write:todos"));
        assert!(!c.has_scope("write"));
        // Present as null: no scope, not an absent claim.
        let c = parse(serde_json::json!({"scope": null}));
        assert_eq!(c.scope.as_deref(), Some(""));
        assert_eq!(c.scopes().count(), 0);
        assert_eq!(parse(serde_json::json!({})).scope, None);
    }

    #[test]
    fn decoding_edge_cases() {
        let de = |s: &str| serde_json::from_str::<Claims>(s);
        assert!(
            de(r#"{"sub":"a","sub":"b"}"#).is_err(),
            "repeated registered claim"
        );
        assert_eq!(de(r#"{"x":1,"x":2}"#).unwrap().extra["x"], 2, "last wins");
        assert!(de(r#"{"exp":"1"}"#).is_err());
        assert!(de(r#"{"roles":null}"#).is_err());
        assert!(de(r#"[]"#).is_err());
        let c = de(r#"{"s\u0075b":"a","aud":null,"exp":null,"n":-1.5,"o":{"k":[1]}}"#).unwrap();
        assert_eq!(c.sub.as_deref(), Some("a"));
        assert!(c.aud.is_empty() && c.exp.is_none());
        assert_eq!(c.extra["n"], -1.5);
        assert_eq!(c.extra["o"], serde_json::json!({"k": [1]}));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::from_value::<Claims>(v).unwrap(), c);
    }
}
