//! The `Allow` header of a 405 (RFC 9110 §15.5.6: the server MUST list the methods the target
//! resource supports). The methods come from the service's OpenAPI document, which each
//! service's tests keep equal to its routes; `HEAD` is listed wherever `GET` is, since the
//! serving loop answers it as `GET`. A path parameter documented as an integer matches only a
//! number in its one spelling ([`super::paging::canonical_i64`]): at `/tasks/+7` no resource
//! is, whatever the method, so a method no route takes there is a 404, not a 405.

use http::HeaderValue;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr};

/// One segment of a documented path.
#[derive(Debug, Clone)]
enum Segment {
    /// Matches only itself.
    Literal(String),
    /// `{name}`, possibly between a literal prefix and suffix (`{kid}.pem`): matches any
    /// non-empty value with them.
    Param { prefix: String, suffix: String },
    /// `{name}` alone, documented as an integer: matches a number in its one spelling.
    Integer,
}

impl Segment {
    /// `integers`: the names of the path parameters documented as integers.
    fn parse(s: &str, integers: &[&str]) -> Self {
        match (s.find('{'), s.rfind('}')) {
            (Some(0), Some(close)) if close == s.len() - 1 && integers.contains(&&s[1..close]) => {
                Segment::Integer
            }
            (Some(open), Some(close)) if open < close => Segment::Param {
                prefix: s[..open].to_owned(),
                suffix: s[close + 1..].to_owned(),
            },
            _ => Segment::Literal(s.to_owned()),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Segment::Literal(l) => l == s,
            Segment::Param { prefix, suffix } => {
                s.len() > prefix.len() + suffix.len()
                    && s.starts_with(prefix.as_str())
                    && s.ends_with(suffix.as_str())
            }
            Segment::Integer => super::paging::canonical_i64(s).is_some(),
        }
    }
}

/// The names of `item`'s path parameters documented as integers, on the item or any operation.
fn integer_parameters(item: &PathItem) -> Vec<&str> {
    let operations: [&Option<Operation>; 5] =
        [&item.get, &item.post, &item.put, &item.patch, &item.delete];
    let lists = std::iter::once(&item.parameters)
        .chain(operations.into_iter().flatten().map(|op| &op.parameters));
    let is_integer = |p: &Parameter| {
        p.parameter_in == ParameterIn::Path
            && matches!(
                &p.schema,
                Some(RefOr::T(Schema::Object(o))) if o.schema_type == SchemaType::Type(Type::Integer)
            )
    };
    lists
        .flatten()
        .flatten()
        .filter(|p| is_integer(p))
        .map(|p| p.name.as_str())
        .collect()
}

/// Each documented path, as its segments, with its methods.
#[derive(Debug, Clone, Default)]
pub struct AllowTable {
    routes: Vec<(Vec<Segment>, Vec<&'static str>)>,
}

impl AllowTable {
    /// The table of `doc`'s paths.
    pub fn from_openapi(doc: &OpenApi) -> Self {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let integers = integer_parameters(item);
                let segments = segments(path)
                    .map(|s| Segment::parse(s, &integers))
                    .collect();
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.get.is_some() || item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, on)| on.then_some(m))
                .collect();
                (segments, methods)
            })
            .collect();
        Self { routes }
    }

    /// The `Allow` value for a request path: the methods of every documented path it matches
    /// (`None` when it matches none).
    pub fn allow(&self, path: &str) -> Option<HeaderValue> {
        let wanted: Vec<&str> = segments(path).collect();
        let mut methods: Vec<&str> = Vec::new();
        for (pattern, allowed) in &self.routes {
            let matches = pattern.len() == wanted.len()
                && pattern.iter().zip(&wanted).all(|(p, w)| p.matches(w));
            if matches {
                for m in allowed {
                    if !methods.contains(m) {
                        methods.push(m);
                    }
                }
            }
        }
        if methods.is_empty() {
            return None;
        }
        const ORDER: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
        methods.sort_by_key(|m| ORDER.iter().position(|o| o == m));
        HeaderValue::from_str(&methods.join(", ")).ok()
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder};

    use super::*;

    fn doc() -> OpenApi {
        let item = |methods: &[HttpMethod]| {
            let mut item = PathItem::new(methods[0].clone(), OperationBuilder::new().build());
            for m in &methods[1..] {
                item.merge_operations(PathItem::new(m.clone(), OperationBuilder::new().build()));
            }
            item
        };
        OpenApiBuilder::new()
            .info(InfoBuilder::new().title("t").version("1").build())
            .paths(
                PathsBuilder::new()
                    .path("/health", item(&[HttpMethod::Get]))
                    .path("/tasks", item(&[HttpMethod::Get, HttpMethod::Post]))
                    .path(
                        "/tasks/{id}",
                        item(&[
                            HttpMethod::Delete,
                            HttpMethod::Get,
                            HttpMethod::Patch,
                            HttpMethod::Put,
                        ]),
                    )
                    .path("/tasks/mine", item(&[HttpMethod::Post]))
                    .path("/certs/{kid}.pem", item(&[HttpMethod::Get])),
            )
            .build()
    }

    #[test]
    fn a_path_gets_the_methods_of_every_route_it_matches() {
        let t = AllowTable::from_openapi(&doc());
        let allow = |p: &str| t.allow(p).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allow("/health").as_deref(), Some("GET, HEAD"));
        assert_eq!(allow("/tasks").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(allow("/tasks/").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(
            allow("/tasks/7").as_deref(),
            Some("GET, HEAD, PUT, PATCH, DELETE")
        );
        assert_eq!(
            allow("/tasks/mine").as_deref(),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE"),
            "a literal and a parameter both match"
        );
        assert_eq!(allow("/certs/k1.pem").as_deref(), Some("GET, HEAD"));
        assert_eq!(allow("/certs/k1.txt"), None);
        assert_eq!(allow("/certs/.pem"), None);
        assert_eq!(allow("/nope"), None);
        assert_eq!(allow("/tasks/7/x"), None);
    }
}
