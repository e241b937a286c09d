//! warp filters that authenticate a request and hand its [`Claims`] (as `Arc<Claims>`) to the
//! handler.
//!
//! Put them after the path and method filters of a route, or a 401 wins over a 404/405.
//! Every filter:
//!
//! - reads `Authorization: Bearer <token>`; the scheme is matched case-insensitively
//!   (RFC 7235); another scheme is a 401;
//! - verifies the token with [`Auth::verify`] (401, or 503 when keys cannot be had);
//! - records the verified `sub` into the request's [`CallerSlot`], when the serving loop put
//!   one there, for the access log;
//! - when `auth.require_access` is set, also requires the `access` claim to grant the request
//!   path (as [`with_access`] does);
//! - answers 403 `insufficient_scope` when the claims lack the role, scope or access asked for.
//!
//! # Access grants (`with_access`)
//!
//! The request path is normalised ([`normalize_path`]: no query, one trailing slash dropped) and
//! compared with each entry of the `access` claim; a path with an empty, `.` or `..` segment
//! (`%2e` spellings too) is granted by nothing, since warp routes it unresolved. An entry not
//! written in that normalised form ([`valid_grant`]) grants nothing either:
//!
//! - an exact path, `/todos/7`, grants that path only;
//! - the prefix form `/todos/*` grants every path *below* `/todos/` at any depth (`/todos/7`,
//!   `/todos/7/items`) but neither `/todos` itself (grant it explicitly) nor `/todos-admin`:
//!   the prefix always ends on a segment boundary.

use std::convert::Infallible;
use std::sync::Arc;

use http::HeaderValue;
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::caller::CallerSlot;
use crate::claims::Claims;
use crate::verify::{Auth, AuthError, AuthErrorKind};

/// What a route requires beyond a valid token.
#[derive(Debug)]
enum Rule {
    Authenticated,
    AnyRole(Vec<String>),
    AllRoles(Vec<String>),
    AnyScope(Vec<String>),
    AllScopes(Vec<String>),
    Access,
}

impl Rule {
    /// `Err(message)` when the claims do not satisfy the rule.
    fn check(&self, claims: &Claims, path: &str) -> Result<(), String> {
        let ok = match self {
            Rule::Authenticated => true,
            Rule::AnyRole(roles) => roles.iter().any(|r| claims.has_role(r)),
            Rule::AllRoles(roles) => roles.iter().all(|r| claims.has_role(r)),
            Rule::AnyScope(scopes) => scopes.iter().any(|s| claims.has_scope(s)),
            Rule::AllScopes(scopes) => scopes.iter().all(|s| claims.has_scope(s)),
            Rule::Access => path_granted(&claims.access, path),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Rule::Authenticated => String::new(),
            Rule::AnyRole(r) if r.len() == 1 => format!("requires role {}", r[0]),
            Rule::AnyRole(r) => format!("requires one of the roles {}", r.join(", ")),
            Rule::AllRoles(r) => format!("requires the roles {}", r.join(", ")),
            Rule::AnyScope(s) if s.len() == 1 => format!("requires scope {}", s[0]),
            Rule::AnyScope(s) => format!("requires one of the scopes {}", s.join(", ")),
            Rule::AllScopes(s) => format!("requires the scopes {}", s.join(", ")),
            Rule::Access => "token does not grant access to this path".to_owned(),
        })
    }
}

/// Requires a valid bearer token; extracts its claims.
pub fn with_auth(
    auth: &Auth,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::Authenticated)
}

/// Requires a valid token whose `roles` hold `role`.
pub fn with_role(
    auth: &Auth,
    role: &str,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AnyRole(vec![role.to_owned()]))
}

/// Requires a valid token holding at least one of `roles`.
pub fn with_any_role(
    auth: &Auth,
    roles: &[&str],
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AnyRole(owned(roles)))
}

/// Requires a valid token holding every one of `roles`.
pub fn with_all_roles(
    auth: &Auth,
    roles: &[&str],
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AllRoles(owned(roles)))
}

/// Requires a valid token whose scopes hold `scope` (its `scope` claim, or an `scp` one as Okta
/// and Entra ID write it: [`Claims::scope`]).
pub fn with_scope(
    auth: &Auth,
    scope: &str,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AnyScope(vec![scope.to_owned()]))
}

/// Requires a valid token holding at least one of `scopes`.
pub fn with_any_scope(
    auth: &Auth,
    scopes: &[&str],
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AnyScope(owned(scopes)))
}

/// Requires a valid token holding every one of `scopes`.
pub fn with_all_scopes(
    auth: &Auth,
    scopes: &[&str],
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::AllScopes(owned(scopes)))
}

/// Requires a valid token whose `access` claim grants the request path (see the module docs).
pub fn with_access(
    auth: &Auth,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    guarded(auth, Rule::Access)
}

/// `filter` (one of the filters above), and, when its token carries a `scope` claim, `scope`
/// among those scopes; else 403 `insufficient_scope`, after `filter`'s own 403.
///
/// A token its client asked to narrow (`POST /token` with `scope=todos:read`) is held to what it
/// asked for, whatever its roles allow. A token without the claim (an issuer that grants by
/// roles alone, as the seeds do) is judged by `filter` alone.
pub fn within_scope<F>(
    auth: &Auth,
    scope: &str,
    filter: F,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<F>
where
    F: Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone,
{
    let auth = auth.clone();
    let scope: Arc<str> = scope.into();
    filter.and_then(move |claims: Arc<Claims>| {
        let granted = if claims.scope.is_none() || claims.has_scope(&scope) {
            Ok(claims)
        } else {
            Err(warp::reject::custom(auth.deny(
                AuthErrorKind::MissingScope {
                    scope: scope.to_string(),
                    message: format!("requires scope {scope}"),
                },
                None,
                claims.sub.as_deref(),
            )))
        };
        std::future::ready(granted)
    })
}

/// `None` without an `Authorization` header; with one, exactly [`with_auth`]: a bad token is a
/// 401, never an anonymous request.
pub fn optional_auth(
    auth: &Auth,
) -> impl Filter<Extract = (Option<Arc<Claims>>,), Error = Rejection> + Clone + use<> {
    let auth = auth.clone();
    let rule = Arc::new(Rule::Authenticated);
    authorization()
        .and(warp::path::full())
        .and(warp::ext::optional::<CallerSlot>())
        .and_then(
            move |header: Option<HeaderValue>, path: FullPath, slot: Option<CallerSlot>| {
                let auth = auth.clone();
                let rule = Arc::clone(&rule);
                async move {
                    match header {
                        None => Ok(None),
                        Some(header) => authorize(&auth, &rule, &header, path.as_str(), slot)
                            .await
                            .map(Some),
                    }
                }
            },
        )
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The `Authorization` header, if any, as raw bytes (a non-UTF-8 value is a 401, not a 400).
fn authorization()
-> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone + use<> {
    warp::header::value("authorization")
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

fn guarded(
    auth: &Auth,
    rule: Rule,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone + use<> {
    let auth = auth.clone();
    let rule = Arc::new(rule);
    authorization()
        .and(warp::path::full())
        .and(warp::ext::optional::<CallerSlot>())
        .and_then(
            move |header: Option<HeaderValue>, path: FullPath, slot: Option<CallerSlot>| {
                let auth = auth.clone();
                let rule = Arc::clone(&rule);
                async move {
                    match header {
                        None => Err(warp::reject::custom(auth.deny(
                            AuthErrorKind::Missing,
                            None,
                            None,
                        ))),
                        Some(header) => authorize(&auth, &rule, &header, path.as_str(), slot).await,
                    }
                }
            },
        )
}

async fn authorize(
    auth: &Auth,
    rule: &Rule,
    header: &HeaderValue,
    path: &str,
    slot: Option<CallerSlot>,
) -> Result<Arc<Claims>, Rejection> {
    let token =
        bearer_token(header).map_err(|kind| warp::reject::custom(auth.deny(kind, None, None)))?;
    let claims = auth.verify(token).await.map_err(warp::reject::custom)?;
    if let Some(slot) = slot {
        slot.set(claims.subject());
    }
    let forbid = |message: String| -> Rejection {
        let err: AuthError = auth.deny(
            AuthErrorKind::InsufficientScope(message),
            None,
            claims.sub.as_deref(),
        );
        warp::reject::custom(err)
    };
    rule.check(&claims, path).map_err(forbid)?;
    if auth.requires_access() && !matches!(rule, Rule::Access) {
        Rule::Access.check(&claims, path).map_err(forbid)?;
    }
    Ok(claims)
}

/// The token of `Bearer <token>`, as the request carried it; the scheme is case-insensitive.
///
/// Bytes, not `&str`: no UTF-8 check of the whole header (about 500 instructions for an
/// RS256 token). None is needed: verification refuses a token with any byte outside base64url
/// and `.`: the header and signature are decoded and the signature covers the payload's bytes
/// as sent, a cache hit matches a cached token byte for byte, and verification-off mode checks
/// every byte itself.
fn bearer_token(header: &HeaderValue) -> Result<&[u8], AuthErrorKind> {
    let value = header.as_bytes();
    let (scheme, token) = match memchr::memchr(b' ', value) {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthErrorKind::Scheme);
    }
    let token = match (
        token.iter().position(|&b| b != b' '),
        token.iter().rposition(|&b| b != b' '),
    ) {
        (Some(first), Some(last)) => &token[first..=last],
        _ => &[][..],
    };
    if token.is_empty() {
        return Err(AuthErrorKind::Malformed("malformed token"));
    }
    Ok(token)
}

/// A request path as [`with_access`] compares it: the query (and fragment) dropped, and one
/// trailing `/` (warp routes `/todos/7/` as `/todos/7`). `None` for a path that does not start
/// with `/` or holds an empty segment (`//`), `.` or `..` (`%2e` read as `.`): warp routes a
/// path as written, never resolved, so a grant must not be judged on a resolved one (the
/// check would approve `/tasks/%2e` as `/tasks`, and a route taking any segment would serve it).
pub fn normalize_path(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() || path == "/" {
        return Some("/".to_owned());
    }
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for segment in rest.split('/') {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        if segment.is_empty() || decoded == "." || decoded == ".." {
            return None;
        }
    }
    Some(format!("/{rest}"))
}

/// Whether `grant` is an `access` entry as it should be written: an absolute path in its
/// normalised form ([`normalize_path`]: no query, no trailing `/`, no empty or dot segment),
/// optionally ending in `/*`. Any other entry grants nothing: an issuer refuses it.
pub fn valid_grant(grant: &str) -> bool {
    let path = match grant.strip_suffix("/*") {
        Some("") => return true,
        Some("/") => return false,
        Some(prefix) => prefix,
        None => grant,
    };
    normalize_path(path).is_some_and(|normal| normal == path)
}

/// Whether any entry of an `access` claim grants `path` (see the module docs).
pub fn path_granted(grants: &[String], path: &str) -> bool {
    let Some(path) = normalize_path(path) else {
        return false;
    };
    grants
        .iter()
        .filter(|g| valid_grant(g))
        .any(|grant| match grant.strip_suffix("/*") {
            Some("") => path != "/",
            Some(prefix) => path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
            None => *grant == path,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        for (raw, want) in [
            ("/todos/7", "/todos/7"),
            ("/todos/7?x=1", "/todos/7"),
            ("/todos/7/", "/todos/7"),
            ("", "/"),
            ("/", "/"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Some(want), "{raw}");
        }
        // Never resolved: warp routes such a path as written.
        for raw in [
            "//todos///7/",
            "/todos//7",
            "/todos/./7",
            "/admin/../todos/7",
            "/todos/%2e%2e/admin",
            "/todos/%2E./admin",
            "/tasks/%2e",
            "/../../etc",
            "todos/7",
        ] {
            assert_eq!(normalize_path(raw), None, "{raw}");
        }
    }

    #[test]
    fn grants_are_written_normalised() {
        for ok in ["/todos", "/todos/*", "/*", "/todos/7", "/"] {
            assert!(valid_grant(ok), "{ok}");
        }
        for bad in [
            "todos",
            "/todos/",
            "/todos?x",
            "/todos/../*",
            "/todos/%2e%2e/*",
            "//*",
            "",
            "*",
        ] {
            assert!(!valid_grant(bad), "{bad}");
        }
        assert!(!path_granted(&grants(&["/todos/../*"]), "/admin"));
    }

    fn grants(g: &[&str]) -> Vec<String> {
        owned(g)
    }

    #[test]
    fn exact_grants() {
        let g = grants(&["/todos/7"]);
        assert!(path_granted(&g, "/todos/7"));
        assert!(path_granted(&g, "/todos/7/?q"));
        assert!(
            !path_granted(&g, "/todos//7"),
            "an empty segment is not resolved"
        );
        assert!(!path_granted(&g, "/todos/8"));
        assert!(!path_granted(&g, "/todos/7/items"));
        assert!(!path_granted(&g, "/todos"));
    }

    #[test]
    fn prefix_grants_end_on_a_segment_boundary() {
        let g = grants(&["/todos/*"]);
        assert!(path_granted(&g, "/todos/7"));
        assert!(path_granted(&g, "/todos/7/items"));
        assert!(
            !path_granted(&g, "/todos"),
            "the collection itself is granted explicitly"
        );
        assert!(!path_granted(&g, "/todos-admin"));
        assert!(!path_granted(&g, "/todos-admin/1"));
        assert!(
            !path_granted(&g, "/todos/../admin"),
            "dot segments are never granted"
        );
        assert!(!path_granted(&g, "/todos/%2e"));
        assert!(!path_granted(&g, "/todos/%2e%2e/admin"));
        assert!(!path_granted(&g, "/other"));
    }

    #[test]
    fn odd_grants() {
        assert!(
            !path_granted(&grants(&["todos/7"]), "/todos/7"),
            "a grant must be absolute"
        );
        assert!(path_granted(&grants(&["/*"]), "/anything"));
        assert!(!path_granted(&grants(&["/*"]), "/"));
        assert!(
            !path_granted(&grants(&["/todos*"]), "/todos-admin"),
            "no glob except the /* suffix"
        );
        assert!(!path_granted(&[], "/todos"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for ok in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc"] {
            assert_eq!(
                bearer_token(&HeaderValue::from_static(ok)),
                Ok(&b"abc"[..]),
                "{ok}"
            );
        }
        assert_eq!(
            bearer_token(&HeaderValue::from_static("Basic YTpi")),
            Err(AuthErrorKind::Scheme)
        );
        assert_eq!(
            bearer_token(&HeaderValue::from_static("Bearerabc")),
            Err(AuthErrorKind::Scheme)
        );
        assert!(matches!(
            bearer_token(&HeaderValue::from_static("Bearer")),
            Err(AuthErrorKind::Malformed(_))
        ));
        assert!(matches!(
            bearer_token(&HeaderValue::from_static("Bearer   ")),
            Err(AuthErrorKind::Malformed(_))
        ));
        // Only spaces are trimmed; any other byte is the token's, for verification to refuse.
        assert_eq!(
            bearer_token(&HeaderValue::from_static("Bearer  a.b.c  ")),
            Ok(&b"a.b.c"[..])
        );
        assert_eq!(
            bearer_token(&HeaderValue::from_bytes(b"Bearer \ta.b\xff").unwrap()),
            Ok(&b"\ta.b\xff"[..])
        );
    }
}
