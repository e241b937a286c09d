//! Optimistic concurrency for a service's resources (RFC 9110 §13.1.1): a resource's version is
//! its strong `ETag` (`"3"`), and a change sent with `If-Match` goes ahead only from a version
//! the header names (`*`: any current one). The store checks the version in the change's own
//! statement (`… AND version = $n`), so a change that slipped in after the read makes the
//! conditional one match nothing, a 412, instead of being overwritten.

use http::{HeaderMap, HeaderValue, StatusCode};
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// A request's `If-Match`, all its lines together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// The strong entity tags listed, unquoted (a weak one, `W/"3"`, never matches: If-Match
    /// compares strongly; anything that is not a quoted tag matches nothing).
    Tags(Vec<String>),
}

impl IfMatch {
    /// The condition of the field lines `lines`.
    pub fn parse(lines: &[&str]) -> IfMatch {
        let mut tags = Vec::new();
        for item in lines.iter().flat_map(|l| l.split(',')).map(str::trim) {
            if item == "*" {
                return IfMatch::Any;
            }
            if let Some(tag) = item.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                tags.push(tag.to_owned());
            }
        }
        IfMatch::Tags(tags)
    }

    /// Whether a resource at `version` meets the condition.
    pub fn matches(&self, version: i64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| *t == version.to_string()),
        }
    }

    /// The version a change of a resource now at `version` may go ahead from, to be checked
    /// again by the change's own statement; else the 412 (`what`: "task", "todo"). `None`
    /// (no version to check) without `If-Match` and for `*`, which asks only that the resource
    /// exists, as the change's statement does anyway: a change in between does not make it
    /// fail. A list is narrowed to the listed version the resource was read at.
    pub fn expected(
        condition: Option<&IfMatch>,
        version: i64,
        what: &str,
    ) -> Result<Option<i64>, Rejection> {
        match condition {
            None | Some(IfMatch::Any) => Ok(None),
            Some(c) if c.matches(version) => Ok(Some(version)),
            Some(_) => Err(precondition_failed(what)),
        }
    }
}

/// The `If-Match` of the request, if it has one.
pub fn if_match()
-> impl Filter<Extract = (Option<IfMatch>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: HeaderMap| {
        let lines: Vec<&str> = headers
            .get_all(http::header::IF_MATCH)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        (!lines.is_empty()).then(|| IfMatch::parse(&lines))
    })
}

/// 412 `precondition_failed`: the resource is not at a version the `If-Match` names.
pub fn precondition_failed(what: &str) -> Rejection {
    warp::reject::custom(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        format!("the {what} is not at the version If-Match names: read it again"),
    ))
}

/// A conditional change (`expected`) that matched no row: the resource changed or went since
/// it was read, the 412 (for one gone in between, a 404 would do as well; the client's next
/// read says which); an unconditional one: it went, `gone` (the service's 404).
pub fn changed_or_gone(
    expected: Option<i64>,
    what: &str,
    gone: impl FnOnce() -> Rejection,
) -> Rejection {
    match expected {
        Some(_) => precondition_failed(what),
        None => gone(),
    }
}

/// The strong `ETag` of `version`: `"3"`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_lists_strong_tags_or_any() {
        assert_eq!(IfMatch::parse(&["*"]), IfMatch::Any);
        let m = IfMatch::parse(&["\"1\", W/\"2\"", " \"3\""]);
        assert!(m.matches(1) && m.matches(3));
        assert!(
            !m.matches(2),
            "a weak tag never matches (strong comparison)"
        );
        assert!(!IfMatch::parse(&["garbage"]).matches(1));
        assert!(!IfMatch::parse(&[""]).matches(1));
        assert_eq!(etag(3), "\"3\"");
    }

    /// `*` asks only that the resource exists: no version is pinned, so a change in between
    /// does not turn it into a 412.
    #[test]
    fn any_pins_no_version_and_a_listed_one_pins_the_one_read() {
        assert_eq!(
            IfMatch::expected(Some(&IfMatch::Any), 4, "task").unwrap(),
            None
        );
        assert_eq!(IfMatch::expected(None, 4, "task").unwrap(), None);
        let listed = IfMatch::parse(&["\"3\", \"4\""]);
        assert_eq!(
            IfMatch::expected(Some(&listed), 4, "task").unwrap(),
            Some(4)
        );
        assert!(IfMatch::expected(Some(&listed), 5, "task").is_err());
    }
}
