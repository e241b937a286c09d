//! The `Allow` header of a 405 (RFC 9110 §15.5.6: the server MUST list the methods the target
//! resource supports). The methods come from the service's OpenAPI document, which each
//! service's tests keep equal to its routes; `HEAD` is listed wherever `GET` is, since the
//! serving loop answers it as `GET`.

use http::HeaderValue;
use utoipa::openapi::OpenApi;

/// One segment of a documented path.
#[derive(Debug, Clone)]
enum Segment {
    /// Matches only itself.
    Literal(String),
    /// `{name}`, possibly between a literal prefix and suffix (`{kid}.pem`): matches any
    /// non-empty value with them.
    Param { prefix: String, suffix: String },
}

impl Segment {
    fn parse(s: &str) -> Self {
        match (s.find('{'), s.rfind('}')) {
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
        }
    }
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
                let segments = segments(path).map(Segment::parse).collect();
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
