//! Optimistic concurrency for a service's resources (RFC 9110 §13.1): a resource's version is
//! its strong `ETag` (`"3"`), and a change sent with `If-Match` goes ahead only from a version
//! the header names (`*`: any current one). The store checks the version in the change's own
//! statement (`… AND version = $n`), so a change that slipped in after the read makes the
//! conditional one match nothing, a 412, instead of being overwritten.
//!
//! `If-None-Match` (§13.1.2) is the converse, compared weakly (`W/"3"` names version 3): a read
//! of a version it names (or of any, `*`) is a 304 with no body, and a change of one is a 412.
//! The two are judged in §13.2.2's order, `If-Match` first ([`Preconditions`]).

use http::{HeaderMap, HeaderValue, StatusCode};
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// A request's `If-Match`, all its lines together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// The entity tags listed, unquoted: for `If-Match` the strong ones only (a weak one,
    /// `W/"3"`, never matches: If-Match compares strongly); for `If-None-Match` the weak ones
    /// too, by their opaque part (it compares weakly), and possibly none (an empty list).
    Tags(Vec<String>),
    /// Not the field's syntax (`*` alone, or a list of quoted entity tags): `3` without its
    /// quotes, `*` in a list (which would otherwise turn a pinned version into any), a value
    /// that is not ASCII, an empty `If-Match`. A 400 on a change: a 412 would send the client
    /// to read again and send the same header for ever.
    Invalid,
}

impl IfMatch {
    /// The condition of the field lines `lines` (`None`: a line that is not visible ASCII).
    pub fn parse(lines: &[Option<&str>]) -> IfMatch {
        Self::parse_lines(lines, false)
    }

    /// `If-Match`'s syntax, which `If-None-Match` (`none_match`) shares. For `If-None-Match` a
    /// weak tag is kept (as its opaque part, so it matches as a weak comparison does), and an
    /// empty list is one that names nothing.
    fn parse_lines(lines: &[Option<&str>], none_match: bool) -> IfMatch {
        let mut items = Vec::new();
        for line in lines {
            let Some(line) = line else {
                return IfMatch::Invalid;
            };
            items.extend(list_items(line));
        }
        match items.as_slice() {
            [] if none_match => return IfMatch::Tags(Vec::new()),
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
            if weak.is_none() || none_match {
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
            Some(IfMatch::Invalid) => Err(invalid("If-Match")),
            Some(c) if c.matches(version) => Ok(Some(version)),
            Some(_) => Err(precondition_failed(what)),
        }
    }
}

/// The elements of a comma-separated field line, trimmed, empty ones dropped (they are allowed
/// and mean nothing, RFC 9110 §5.6.1); a comma inside a quoted entity tag (`"a,b"`) is part of
/// the tag.
fn list_items(line: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                items.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&line[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// A request's preconditions on a resource's version: its `If-Match` and its `If-None-Match`
/// (parsed as `If-Match` is, weak tags kept: `If-None-Match` compares weakly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`, if the request has one.
    pub if_match: Option<IfMatch>,
    /// `If-None-Match`, if the request has one.
    pub if_none_match: Option<IfMatch>,
}

impl Preconditions {
    /// The preconditions of `headers`.
    pub fn of(headers: &HeaderMap) -> Preconditions {
        let field = |name: &http::header::HeaderName, none_match: bool| {
            let lines: Vec<Option<&str>> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().ok())
                .collect();
            (!lines.is_empty()).then(|| IfMatch::parse_lines(&lines, none_match))
        };
        Preconditions {
            if_match: field(&http::header::IF_MATCH, false),
            if_none_match: field(&http::header::IF_NONE_MATCH, true),
        }
    }

    /// Whether the request has neither field (no read of the resource is needed for them).
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// The version a change (`PUT`, `PATCH`, `DELETE`) of a resource now at `version` may go
    /// ahead from, for the change's own statement to check again; else the 412 (`what`:
    /// "task", "todo") or, for a field that is not the syntax, the 400. `If-Match` as
    /// [`IfMatch::expected`] judges it; then `If-None-Match`: `*` (the resource exists) or a
    /// tag naming `version` is a 412, and any other list pins the version read, so a change in
    /// between cannot bring the resource to a listed version unseen (it makes this one a 412).
    pub fn expected(&self, version: i64, what: &str) -> Result<Option<i64>, Rejection> {
        let expected = IfMatch::expected(self.if_match.as_ref(), version, what)?;
        match &self.if_none_match {
            None => Ok(expected),
            Some(IfMatch::Invalid) => Err(invalid("If-None-Match")),
            Some(c) if c.matches(version) => Err(precondition(format!(
                "the {what} is at a version If-None-Match names"
            ))),
            Some(_) => Ok(Some(version)),
        }
    }

    /// Whether a read (`GET`) of a resource now at `version` is answered 304 Not Modified:
    /// `If-None-Match` names `version` (weakly) or is `*`. An `If-Match` it fails is the 412
    /// first (§13.2.2). An `If-None-Match` that is not the syntax names nothing, as nginx reads
    /// it: the read is answered in full (nothing is lost by it, unlike a change's condition).
    pub fn not_modified(&self, version: i64, what: &str) -> Result<bool, Rejection> {
        IfMatch::expected(self.if_match.as_ref(), version, what)?;
        Ok(self
            .if_none_match
            .as_ref()
            .is_some_and(|c| c.matches(version)))
    }
}

/// The 400 of a precondition field (`name`) that is not the field's syntax.
fn invalid(name: &str) -> Rejection {
    warp::reject::custom(ApiError::bad_request(format!(
        "{name} must be * alone or a list of quoted entity tags (\"3\")"
    )))
}

/// The request's `If-Match` and `If-None-Match` ([`Preconditions`]).
pub fn preconditions()
-> impl Filter<Extract = (Preconditions,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|headers: HeaderMap| Preconditions::of(&headers))
}

/// The 304 Not Modified of a read whose `If-None-Match` names the current version: no body,
/// the `ETag` (RFC 9110 §15.4.5).
pub fn not_modified(version: i64) -> warp::reply::Response {
    let mut res = warp::Reply::into_response(StatusCode::NOT_MODIFIED);
    res.headers_mut().insert(http::header::ETAG, etag(version));
    res
}

/// 412 `precondition_failed`: the resource is not at a version the `If-Match` names.
pub fn precondition_failed(what: &str) -> Rejection {
    precondition(format!(
        "the {what} is not at the version If-Match names: read it again"
    ))
}

/// 412 `precondition_failed` with `message`.
fn precondition(message: String) -> Rejection {
    warp::reject::custom(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        message,
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
        Some(_) => precondition(format!(
            "the {what} changed while this request ran: read it again"
        )),
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

    fn preconditions(if_match: Option<&str>, if_none_match: Option<&str>) -> Preconditions {
        let mut headers = HeaderMap::new();
        if let Some(v) = if_match {
            headers.insert(http::header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = if_none_match {
            headers.insert(
                http::header::IF_NONE_MATCH,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Preconditions::of(&headers)
    }

    fn status(refused: Rejection) -> StatusCode {
        refused.find::<ApiError>().expect("an ApiError").status
    }

    /// RFC 9110 §13.1.2: a read of a version `If-None-Match` names (weakly) or of any (`*`) is
    /// not modified; a change of one is a 412; `If-Match` is judged first (§13.2.2).
    #[test]
    fn if_none_match_compares_weakly_and_refuses_changes_of_what_it_names() {
        assert!(preconditions(None, None).is_empty());
        for named in ["\"3\"", "W/\"3\"", "*", "\"1\", \"3\""] {
            let c = preconditions(None, Some(named));
            assert!(c.not_modified(3, "task").unwrap(), "{named}");
            assert_eq!(
                status(c.expected(3, "task").unwrap_err()),
                StatusCode::PRECONDITION_FAILED,
                "{named}"
            );
        }
        let other = preconditions(None, Some("\"2\", W/\"4\""));
        assert!(!other.not_modified(3, "task").unwrap());
        assert_eq!(
            other.expected(3, "task").unwrap(),
            Some(3),
            "a listed tag pins the version read, so a change in between is a 412"
        );
        assert!(!preconditions(None, None).not_modified(3, "task").unwrap());
        assert_eq!(preconditions(None, None).expected(3, "task").unwrap(), None);
        // Not the syntax: a read is answered in full, a change is the 400.
        let invalid = preconditions(None, Some("3"));
        assert!(!invalid.not_modified(3, "task").unwrap());
        assert_eq!(
            status(invalid.expected(3, "task").unwrap_err()),
            StatusCode::BAD_REQUEST
        );
        // An empty list names nothing: the read is answered, the change goes ahead (pinned).
        let empty = preconditions(None, Some(" , "));
        assert!(!empty.not_modified(3, "task").unwrap());
        assert_eq!(empty.expected(3, "task").unwrap(), Some(3));
        // A comma inside a quoted tag is the tag's: no 400, and it names no version.
        let comma = preconditions(Some("\"3,4\""), Some("\"1,2\", \"3\""));
        assert_eq!(comma.if_match, Some(IfMatch::Tags(vec!["3,4".into()])));
        assert_eq!(
            comma.if_none_match,
            Some(IfMatch::Tags(vec!["1,2".into(), "3".into()]))
        );
        // If-Match first: a stale one is the 412 before If-None-Match is looked at.
        let both = preconditions(Some("\"2\""), Some("\"3\""));
        assert_eq!(
            status(both.not_modified(3, "task").unwrap_err()),
            StatusCode::PRECONDITION_FAILED
        );
        let both = preconditions(Some("\"3\""), Some("\"2\""));
        assert_eq!(both.expected(3, "task").unwrap(), Some(3));
        assert!(!both.not_modified(3, "task").unwrap());
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
