//! Request bodies and query strings as the services read them: a JSON body with a size limit
//! that holds for chunked bodies too (413, not 411), errors that name the field, and timestamps.

use bytes::Buf;
use futures_util::TryStreamExt;
use http::StatusCode;
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// 413 `payload_too_large`.
pub fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body over {limit} bytes"),
    )
}

/// A JSON body of at most `limit` bytes, deserialised into `T`. A `Content-Length` over the
/// limit is refused before reading; a chunked body is counted as it arrives. A content type other
/// than JSON is 415; a body that does not fit `T` is 400 with a message naming the field.
pub fn json<T: DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|ctype: Option<String>| async move {
            match ctype {
                Some(ctype) if !is_json(&ctype) => Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be application/json",
                ))),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(bytes(limit))
        .and_then(|body: bytes::Bytes| async move {
            parse_json::<T>(&body).map_err(warp::reject::custom)
        })
}

/// Whether a `Content-Type` is JSON (`application/json`, `application/*+json`, any parameters).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The raw body, at most `limit` bytes: a `Content-Length` over the limit is a 413 before
/// reading, a chunked body is counted as it arrives (413, never 411), an empty or absent body
/// is an empty `Bytes`.
pub fn bytes(limit: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-length")
        .and_then(move |length: Option<String>| async move {
            match length.map(|l| l.trim().parse::<u64>()) {
                Some(Ok(n)) if n > limit => Err(warp::reject::custom(too_large(limit))),
                Some(Err(_)) => Err(warp::reject::custom(ApiError::bad_request(
                    "invalid content-length",
                ))),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |stream| read_limited(stream, limit))
}

async fn read_limited<S, B>(stream: S, limit: u64) -> Result<bytes::Bytes, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(mut chunk) = stream
        .try_next()
        .await
        .map_err(|e| warp::reject::custom(read_error(&e)))?
    {
        if body.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(warp::reject::custom(too_large(limit)));
        }
        while chunk.has_remaining() {
            body.extend_from_slice(chunk.chunk());
            let n = chunk.chunk().len();
            chunk.advance(n);
        }
    }
    Ok(body.into())
}

/// 408 when the body did not arrive in time (the serving loop's deadline), else 400.
fn read_error(e: &warp::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<super::server::BodyTimeout>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "request body not received in time",
            );
        }
        source = err.source();
    }
    ApiError::bad_request("could not read the request body")
}

/// Deserialises JSON into `T`; the error names the field (`title: invalid type: …`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    if !is_object(body) {
        return Err(ApiError::bad_request(not_an_object(body)));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = shorten(&e.path().to_string(), 80);
        let inner = without_value(&e.inner().to_string());
        // serde_json appends " at line 1 column 9": keep the message short.
        let inner = shorten(inner.split(" at line ").next().unwrap_or(&inner), 200);
        let message = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        ApiError::bad_request(message)
    })?;
    // One JSON value and nothing after it but whitespace: what follows would be silently
    // dropped (`{"title":"a"}{"title":"b"}` is not one task), and a proxy that reads the body
    // strictly would see something else than the service.
    de.end()
        .map_err(|_| ApiError::bad_request("the body holds more than one JSON value"))?;
    Ok(value)
}

pub use crate::error::without_value;

/// Whether a JSON text is an object (its first byte past whitespace is `{`). serde's derived
/// structs also accept an array, filling the fields in order: `["buy milk", true]` would be a
/// todo, and a short `["new"]` a full replacement that clears every optional field.
pub fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Why a body [`is_object`] refused is not one, for the 400: a UTF-8 byte order mark before the
/// object gets its own message (RFC 8259 §8.1: senders must not add one; an editor's "UTF-8 with
/// BOM" adds it unseen), anything else "must be a JSON object".
pub fn not_an_object(body: &[u8]) -> &'static str {
    if body.starts_with(b"\xEF\xBB\xBF") {
        "the body starts with a byte order mark (U+FEFF): send the JSON without it"
    } else {
        "the body must be a JSON object"
    }
}

/// For `#[serde(default, deserialize_with = "body::present")]`: a field that is present, even
/// as `null`, is `Some(value)`; an absent one stays `None` (`Option<Option<T>>` tells "clear"
/// from "leave", and `Option<IgnoredAny>` catches a refused field whatever its value).
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "body::not_null")]` on an optional field that
/// cannot be cleared: absent is `None`, `null` is an error ("must not be null") rather than
/// silently read as absent.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("must not be null")),
    }
}

/// `text` cut to about `max` characters (its start and end kept): serde's messages quote the
/// client's value, which may be kilobytes long, and so do the messages that name a value the
/// client sent.
pub fn shorten(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max * 2 / 3).collect();
    let tail: String = text.chars().skip(n - max / 3).collect();
    format!("{head}…{tail}")
}

/// Now, as RFC 3339 UTC text (how timestamps are stored and returned).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A one-line text field (a title), trimmed: `min..=max` characters, no NUL (PostgreSQL's TEXT
/// cannot hold it, so every backend refuses it alike). The error names the field.
pub fn text_field(name: &str, value: &str, min: usize, max: usize) -> Result<String, ApiError> {
    checked_text(name, value.trim(), min, max, " after trimming")
}

/// Free text (a description), kept exactly as sent, leading and trailing whitespace and
/// newlines included: `min..=max` characters, no NUL. The error names the field.
pub fn free_text_field(
    name: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    checked_text(name, value, min, max, "")
}

fn checked_text(
    name: &str,
    t: &str,
    min: usize,
    max: usize,
    how: &str,
) -> Result<String, ApiError> {
    let n = t.chars().count();
    if n < min || n > max {
        return Err(ApiError::bad_request(format!(
            "{name}: must be {min} to {max} characters{how}"
        )));
    }
    if t.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{name}: must not contain NUL characters"
        )));
    }
    Ok(t.to_owned())
}

/// An RFC 3339 timestamp, normalised to UTC whole seconds (`2026-11-25T08:50:28Z`; a fraction
/// of a second is dropped) so stored values compare as text. The error names the field.
pub fn timestamp_field(name: &str, value: &str) -> Result<String, ApiError> {
    timestamp(name, value, false)
}

/// An RFC 3339 timestamp as the exclusive upper bound of a filter over
/// [`timestamp_field`]s: in UTC whole seconds like them, a fraction of a second rounded up, so
/// `before 08:50:28.5` still finds what is stored as `08:50:28`.
pub fn timestamp_bound(name: &str, value: &str) -> Result<String, ApiError> {
    timestamp(name, value, true)
}

fn timestamp(name: &str, value: &str, round_up: bool) -> Result<String, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let bad = || ApiError::bad_request(format!("{name}: must be an RFC 3339 timestamp"));
    // The `time` crate's parser takes any byte between date and time; RFC 3339 §5.6 names `T`,
    // and its note allows `t` and a space, nothing else (`2030-01-02X03:04:05Z` is no time).
    if !matches!(value.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return Err(bad());
    }
    let t = time::OffsetDateTime::parse(value, &Rfc3339).map_err(|_| bad())?;
    // `to_offset` panics when UTC falls past year 9999 (`9999-12-31T23:59:59-01:00`).
    let t = t.checked_to_offset(time::UtcOffset::UTC).ok_or_else(bad)?;
    let whole = t.replace_nanosecond(0).map_err(|_| bad())?;
    let t = if round_up && whole != t {
        whole.checked_add(time::Duration::SECOND).ok_or_else(bad)?
    } else {
        whole
    };
    t.format(&Rfc3339).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn a_timestamp_separates_date_and_time_with_t_or_a_space_only() {
        for ok in [
            "2030-01-02T03:04:05Z",
            "2030-01-02t03:04:05Z",
            "2030-01-02 03:04:05Z",
        ] {
            assert_eq!(
                timestamp_field("due", ok).unwrap(),
                "2030-01-02T03:04:05Z",
                "{ok}"
            );
        }
        for bad in [
            "2030-01-02X03:04:05Z",
            "2030-01-02_03:04:05Z",
            "2030-01-02:03:04:05Z",
            "",
        ] {
            let err = timestamp_field("due", bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.starts_with("due:"), "{bad}: {}", err.message);
            assert!(timestamp_bound("due_before", bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct New {
        title: String,
        done: Option<bool>,
    }

    #[test]
    fn one_json_value_and_nothing_after_it() {
        assert!(parse_json::<New>(b"{\"title\":\"a\"}\n\t ").is_ok());
        for body in [
            &br#"{"title":"a"}{"title":"b"}"#[..],
            br#"{"title":"a"} x"#,
            br#"{"title":"a"},"#,
        ] {
            let e = parse_json::<New>(body).unwrap_err();
            assert_eq!(e.message, "the body holds more than one JSON value");
        }
    }

    #[test]
    fn a_long_value_is_not_echoed_whole() {
        let body = format!(r#"{{"title":"a","done":"{}"}}"#, "y".repeat(16_000));
        let e = parse_json::<New>(body.as_bytes()).unwrap_err();
        assert!(
            e.message.starts_with("done: invalid type: string"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("expected a boolean"), "{}", e.message);
        assert!(e.message.chars().count() < 300, "{}", e.message);
        let key = "k".repeat(5_000);
        let e = parse_json::<New>(format!(r#"{{"{key}":1}}"#).as_bytes()).unwrap_err();
        assert!(e.message.chars().count() < 400, "{}", e.message);
    }

    /// A value sent with the wrong type is not echoed: it may be a password in a number, and the
    /// error body reaches whatever logs responses.
    #[test]
    fn an_error_names_the_kind_of_value_never_the_value() {
        for (body, message) in [
            (
                &br#"{"title": 123456789012}"#[..],
                "title: invalid type: integer, expected a string",
            ),
            (
                br#"{"title": -1234.5678}"#,
                "title: invalid type: floating point, expected a string",
            ),
            (
                br#"{"title":"a","done":"hunter2, expected"}"#,
                "done: invalid type: string, expected a boolean",
            ),
            (
                br#"{"title": ["hunter2"]}"#,
                "title: invalid type: sequence, expected a string",
            ),
        ] {
            let e = parse_json::<New>(body).unwrap_err();
            assert_eq!(e.message, message);
        }
        for (message, shown) in [
            (
                "unknown variant `s3cr3t`, expected one of `a`, `b`",
                "unknown variant, expected one of `a`, `b`",
            ),
            (
                "invalid value: string \"s3cr3t\", expected a UUID",
                "invalid value: string, expected a UUID",
            ),
            ("missing field `title`", "missing field `title`"),
        ] {
            assert_eq!(without_value(message), shown);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<New>(br#"{"title": 5}"#).unwrap_err();
        assert_eq!(e.message, "title: invalid type: integer, expected a string");
        let e = parse_json::<New>(br#"{"title": "a", "owner": "bob"}"#).unwrap_err();
        assert!(e.message.contains("unknown field `owner`"), "{}", e.message);
        let e = parse_json::<New>(br#"{"done": true}"#).unwrap_err();
        assert!(e.message.contains("missing field `title`"), "{}", e.message);
        let e = parse_json::<New>(b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        // A struct's fields in order, as an array, are not the object.
        for body in [&br#"["a", true]"#[..], br#" ["a"]"#, b"[]"] {
            let e = parse_json::<New>(body).unwrap_err();
            assert_eq!(e.message, "the body must be a JSON object");
        }
        assert_eq!(
            parse_json::<New>(b"").unwrap_err().message,
            "a JSON body is required"
        );
        assert_eq!(
            parse_json::<New>(b"\xEF\xBB\xBF{\"title\": \"a\"}")
                .unwrap_err()
                .message,
            "the body starts with a byte order mark (U+FEFF): send the JSON without it"
        );
    }

    #[tokio::test]
    async fn size_limit_holds_with_and_without_content_length() {
        let filter = json::<serde_json::Value>(16);
        let ok = warp::test::request()
            .method("POST")
            .body(r#"{"a": 1}"#)
            .filter(&filter)
            .await;
        assert!(ok.is_ok());
        let big = warp::test::request()
            .method("POST")
            .body(r#"{"a": "0123456789abcdef"}"#)
            .filter(&filter)
            .await;
        let e = big.unwrap_err();
        assert_eq!(e.find::<ApiError>().unwrap().status, 413);
        let e = warp::test::request()
            .method("POST")
            .header("content-type", "text/plain")
            .body("{}")
            .filter(&filter)
            .await
            .unwrap_err();
        assert_eq!(e.find::<ApiError>().unwrap().status, 415);
    }
}
