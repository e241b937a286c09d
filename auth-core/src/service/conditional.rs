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
    /// compares strongly).
    Tags(Vec<String>),
    /// Not the field's syntax (`*` alone, or a list of quoted entity tags): `3` without its
    /// quotes, `*` in a list (which would otherwise turn a pinned version into any), a value
    /// that is not ASCII, an empty one. A 400: a 412 would send the client to read again and
    /// send the same header for ever.
    Invalid,
}

impl IfMatch {
    /// The condition of the field lines `lines` (`None`: a line that is not visible ASCII).
    pub fn parse(lines: &[Option<&str>]) -> IfMatch {
        let mut items = Vec::new();
        for line in lines {
            let Some(line) = line else {
                return IfMatch::Invalid;
            };
            // Empty list elements are allowed and mean nothing (RFC 9110 §5.6.1).
            items.extend(line.split(',').map(str::trim).filter(|i| !i.is_empty()));
        }
        match items.as_slice() {
            [] => return IfMatch::Invalid,
            ["*"] => return IfMatch::Any,
            _ => {}
        }
        let mut tags = Vec::new();
        for item in items {
            let weak = item.strip_prefix("W/");
            let Some(tag) = weak
                .unwrap_or(item)
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| t.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)))
            else {
                return IfMatch::Invalid;
            };
            if weak.is_none() {
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
            IfMatch::Invalid => false,
        }
    }

    /// The version a change of a resource now at `version` may go ahead from, to be checked
    /// again by the change's own statement; else the 412 (`what`: "task", "todo"). `None`
    /// (no version to check) without `If-Match` and for `*`, which asks only that the resource
    /// exists, as the change's statement does anyway: a change in between does not make it
    /// fail. A list is narrowed to the listed version the resource was read at. An invalid
    /// `If-Match` is a 400 (judged here, after the resource was found: its owner rule first).
    pub fn expected(
        condition: Option<&IfMatch>,
        version: i64,
        what: &str,
    ) -> Result<Option<i64>, Rejection> {
        match condition {
            None | Some(IfMatch::Any) => Ok(None),
            Some(IfMatch::Invalid) => Err(warp::reject::custom(ApiError::bad_request(
                "If-Match must be * alone or a list of quoted entity tags (\"3\")",
            ))),
            Some(c) if c.matches(version) => Ok(Some(version)),
            Some(_) => Err(precondition_failed(what)),
        }
    }
}

/// The `If-Match` of the request, if it has one.
pub fn if_match()
-> impl Filter<Extract = (Option<IfMatch>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: HeaderMap| {
        let lines: Vec<Option<&str>> = headers
            .get_all(http::header::IF_MATCH)
            .iter()
            .map(|v| v.to_str().ok())
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
        assert_eq!(IfMatch::parse(&[Some("*")]), IfMatch::Any);
        assert_eq!(IfMatch::parse(&[Some(" * ,")]), IfMatch::Any);
        let m = IfMatch::parse(&[Some("\"1\", W/\"2\""), Some(" \"3\", ")]);
        assert!(m.matches(1) && m.matches(3));
        assert!(
            !m.matches(2),
            "a weak tag never matches (strong comparison)"
        );
        assert_eq!(etag(3), "\"3\"");
    }

    /// What is not the field's syntax is a 400, not a condition that can never hold (a 412
    /// for ever) or one that holds always: `*` beside a tag must not unpin the version.
    #[test]
    fn an_invalid_if_match_is_refused() {
        for lines in [
            vec![Some("3")],
            vec![Some("W/3")],
            vec![Some("garbage")],
            vec![Some("")],
            vec![Some(" , ")],
            vec![Some("\"3\", *")],
            vec![Some("\"3\""), Some("*")],
            vec![Some("\"3 4\"")],
            vec![Some("\"3")],
            vec![None],
        ] {
            assert_eq!(IfMatch::parse(&lines), IfMatch::Invalid, "{lines:?}");
            let refused = IfMatch::expected(Some(&IfMatch::parse(&lines)), 3, "task").unwrap_err();
            let error = refused.find::<ApiError>().expect("an ApiError");
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{lines:?}");
        }
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
        let listed = IfMatch::parse(&[Some("\"3\", \"4\"")]);
        assert_eq!(
            IfMatch::expected(Some(&listed), 4, "task").unwrap(),
            Some(4)
        );
        assert!(IfMatch::expected(Some(&listed), 5, "task").is_err());
    }
}
