//! The claims a verified token carries, as handlers receive them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The claims of a verified access token.
///
/// Handlers receive this type, never the token string. Registered claims are typed; the ones the
/// services of this workspace use (`roles`, `username`, `scope`, `access`) are typed too; anything
/// else stays reachable through [`Claims::extra`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`iss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject (`sub`): the stable id of the caller, always a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience (`aud`): a string or an array of strings in the token, always a list here.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aud: Vec<String>,
    /// Expiry (`exp`), seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not before (`nbf`), seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (`iat`), seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Token id (`jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Roles granted to the caller (seed 001).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The caller's user name, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// OAuth scopes, space separated (RFC 8693 §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// URL paths the token grants (seed 003), checked by [`crate::filters::with_access`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
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

    #[test]
    fn scopes_split_on_whitespace() {
        let c = parse(serde_json::json!({"scope": "read:todos  write:todos"}));
        assert!(c.has_scope("write:todos"));
        assert!(!c.has_scope("write"));
    }
}
