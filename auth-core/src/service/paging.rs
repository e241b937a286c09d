//! Keyset pagination shared by the list routes: `limit` 1–100 (default 20), an opaque `cursor`
//! from the previous page, `{"items": [...], "next_cursor": "…" | null}`.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 20;
/// Largest page size.
pub const MAX_LIMIT: i64 = 100;

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from `limit + 1` fetched rows: the extra row only says another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id(r)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The opaque cursor after the item with this id.
pub fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("after:{id}"))
}

/// The id a cursor points after; 400 for anything this service did not make.
pub fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request("cursor: not a cursor from a previous page");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    text.strip_prefix("after:")
        .and_then(canonical_i64)
        .ok_or_else(bad)
}

/// An integer written as Rust writes it, and only so: `i64::from_str` also takes `+5` and
/// `0005`, so one number had unboundedly many spellings (a cursor this service never made was
/// honoured, `?limit=007` listed seven, `/todos/+5` was todo 5).
pub fn canonical_i64(text: &str) -> Option<i64> {
    let n: i64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

/// A numeric id in a path (`/todos/{id}`), in its one spelling ([`canonical_i64`]): as a
/// `warp::path!` segment, any other spelling matches no route, a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId(pub i64);

impl std::str::FromStr for PathId {
    type Err = ();

    fn from_str(segment: &str) -> Result<Self, ()> {
        canonical_i64(segment).map(PathId).ok_or(())
    }
}

/// The query string as its name–value pairs, in order (a malformed one is a 400 through the
/// rejection handler); [`ListQuery::new`] reads them.
pub fn query()
-> impl warp::Filter<Extract = (Vec<(String, String)>,), Error = warp::Rejection> + Clone {
    warp::query::<Vec<(String, String)>>()
}

/// A list request's query: the known parameters, each validated; an unknown one is a 400.
#[derive(Debug)]
pub struct ListQuery {
    params: HashMap<String, String>,
}

impl ListQuery {
    /// Accepts `pairs`, refusing any name not in `known`, and any name given more than once
    /// (`?limit=5&limit=100`: which one counts is up to each reader, and a proxy may pick the
    /// other).
    pub fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Self, ApiError> {
        let shown = |name: &str| name.chars().take(64).collect::<String>();
        let mut params = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{}`",
                    shown(&name)
                )));
            }
            if params.contains_key(&name) {
                return Err(ApiError::bad_request(format!(
                    "{}: given more than once",
                    shown(&name)
                )));
            }
            params.insert(name, value);
        }
        Ok(Self { params })
    }

    /// `limit`: 1–100, default 20.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.params.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match canonical_i64(v) {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "limit: must be an integer from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    /// `cursor`: the id to list after (0 for the first page).
    pub fn after(&self) -> Result<i64, ApiError> {
        self.params
            .get("cursor")
            .map_or(Ok(0), |c| decode_cursor(c))
    }

    /// A boolean filter: `true` or `false`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.params.get(name).map(String::as_str) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name}: must be true or false"
            ))),
        }
    }

    /// A raw string parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        ListQuery::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            &["limit", "cursor", "done"],
        )
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let e = q(&[("limit", "5"), ("limit", "100")]).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (400, "limit: given more than once")
        );
        assert!(q(&[("limit", "5"), ("done", "true")]).is_ok());
    }

    #[test]
    fn limits() {
        assert_eq!(q(&[]).unwrap().limit().unwrap(), 20);
        assert_eq!(q(&[("limit", "1")]).unwrap().limit().unwrap(), 1);
        assert_eq!(q(&[("limit", "100")]).unwrap().limit().unwrap(), 100);
        for bad in ["0", "101", "-1", "x", "", "+5", "05", "0100", " 5"] {
            assert_eq!(
                q(&[("limit", bad)]).unwrap().limit().unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_400() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "!!", "YWZ0ZXI6", "bm9wZQ"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        // Only the spelling the service writes: not another one of the same number.
        assert_eq!(decode_cursor(&encode_cursor(-3)).unwrap(), -3);
        for other in ["after:+5", "after:05", "after:-0"] {
            assert!(
                decode_cursor(&URL_SAFE_NO_PAD.encode(other)).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn unknown_parameters_and_bad_booleans_are_400() {
        assert!(q(&[("owner", "x")]).is_err());
        assert_eq!(
            q(&[("done", "yes")])
                .unwrap()
                .bool("done")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            q(&[("done", "true")]).unwrap().bool("done").unwrap(),
            Some(true)
        );
    }

    #[test]
    fn page_from_rows() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(decode_cursor(p.next_cursor.as_deref().unwrap()).unwrap(), 2);
        let p = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert!(p.next_cursor.is_none());
    }
}
