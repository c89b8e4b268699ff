//! CORS for browser callers (SPEC §4.11): which origins, methods and headers a script on
//! another origin may use, the answer to a preflight, and the headers every answer to an
//! allowed origin carries. Pure decisions over header values; the proxy writes the answers.
//!
//! Written here rather than taken from a crate: the CORS crates of the field are middleware
//! for one web framework each (tower-http, actix-cors, rocket_cors), and none works on a
//! Pingora request head.

use http::{HeaderValue, Method};

/// The validated `[cors]` policy; `None` in the settings when `allowed_origins` is empty.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `["*"]`: every origin.
    any_origin: bool,
    /// Exact origins (`https://app.example.com`), compared byte for byte after ASCII
    /// lowercasing of scheme and host (as browsers serialise them).
    origins: Vec<String>,
    methods: Vec<Method>,
    /// Lowercase header names a preflight may ask for.
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

/// What a request is, CORS-wise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Not a preflight (no `Origin` or no `Access-Control-Request-Method`, or not `OPTIONS`).
    No,
    /// A preflight to answer 204 with these headers.
    Allowed(Vec<(&'static str, HeaderValue)>),
    /// A preflight from an origin not allowed, or asking for a method or header not allowed.
    Refused,
}

/// Why a `[cors]` section cannot be used: (key, problem).
pub type CorsConfigError = (&'static str, String);

impl CorsPolicy {
    /// Builds the policy; `Ok(None)` when `origins` is empty (CORS off).
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        max_age_s: u64,
    ) -> Result<Option<CorsPolicy>, CorsConfigError> {
        if origins.is_empty() {
            return Ok(None);
        }
        let any_origin = origins.iter().any(|o| o == "*");
        if any_origin && origins.len() > 1 {
            return Err((
                "cors.allowed_origins",
                "\"*\" stands alone: every origin, or a list of exact origins".to_owned(),
            ));
        }
        let mut exact = Vec::new();
        if !any_origin {
            for origin in origins {
                exact.push(normalised_origin(origin).ok_or_else(|| {
                    (
                        "cors.allowed_origins",
                        format!(
                            "{origin:?} is not an origin: scheme://host[:port], no path (e.g. \
                             \"https://app.example.com\")"
                        ),
                    )
                })?);
            }
        }
        // `*` would be a wildcard to a browser (never for `Authorization`) but matches only
        // itself here: every real preflight would be refused. Refused, to be listed instead.
        for (key, list) in [
            ("cors.allowed_methods", methods),
            ("cors.allowed_headers", headers),
            ("cors.expose_headers", expose),
        ] {
            if list.iter().any(|item| item.trim() == "*") {
                return Err((
                    key,
                    "\"*\" is not supported here: list each name (a browser never lets \"*\" \
                     cover Authorization)"
                        .to_owned(),
                ));
            }
        }
        let mut parsed_methods = Vec::new();
        for name in methods {
            let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                .ok()
                .ok_or_else(|| {
                    (
                        "cors.allowed_methods",
                        format!("{name:?} is not an HTTP method"),
                    )
                })?;
            parsed_methods.push(method);
        }
        let lower = |key: &'static str, list: &[String]| -> Result<Vec<String>, CorsConfigError> {
            list.iter()
                .map(|h| {
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map(|n| n.as_str().to_owned())
                        .map_err(|_| (key, format!("{h:?} is not a header name")))
                })
                .collect()
        };
        let allowed_headers = lower("cors.allowed_headers", headers)?;
        let exposed = lower("cors.expose_headers", expose)?;
        let value = |key: &'static str, text: String| {
            HeaderValue::from_str(&text)
                .map_err(|_| (key, format!("{text:?} is not a header value")))
        };
        Ok(Some(CorsPolicy {
            any_origin,
            origins: exact,
            allow_methods: value(
                "cors.allowed_methods",
                parsed_methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            )?,
            methods: parsed_methods,
            allow_headers: value("cors.allowed_headers", allowed_headers.join(", "))?,
            headers: allowed_headers,
            expose_headers: value("cors.expose_headers", exposed.join(", "))?,
            max_age: value("cors.max_age_s", max_age_s.to_string())?,
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, when it is allowed:
    /// the origin itself, or `*` with `["*"]`.
    pub fn allowed_origin(&self, origin: &[u8]) -> Option<HeaderValue> {
        if self.any_origin {
            return Some(HeaderValue::from_static("*"));
        }
        let text = std::str::from_utf8(origin).ok()?;
        let normalised = normalised_origin(text)?;
        self.origins
            .contains(&normalised)
            .then(|| HeaderValue::from_str(text).ok())
            .flatten()
    }

    /// The headers every answer to an allowed origin carries (with `Vary: Origin`, added by
    /// the caller to whatever `Vary` the answer has).
    pub fn answer_headers(&self, allowed_origin: HeaderValue) -> [(&'static str, HeaderValue); 2] {
        [
            ("access-control-allow-origin", allowed_origin),
            ("access-control-expose-headers", self.expose_headers.clone()),
        ]
    }

    /// Reads a request as a preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method` (and maybe `-Request-Headers`).
    pub fn preflight(
        &self,
        method: &Method,
        origin: Option<&[u8]>,
        request_method: Option<&[u8]>,
        request_headers: Option<&[u8]>,
    ) -> Preflight {
        let (Some(origin), Some(request_method)) = (origin, request_method) else {
            return Preflight::No;
        };
        if method != Method::OPTIONS {
            return Preflight::No;
        }
        let Some(allow_origin) = self.allowed_origin(origin) else {
            return Preflight::Refused;
        };
        let method_ok = Method::from_bytes(request_method)
            .ok()
            .is_some_and(|m| self.methods.contains(&m));
        let headers_ok = request_headers.is_none_or(|list| {
            std::str::from_utf8(list).is_ok_and(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| self.headers.contains(&h))
            })
        });
        if !method_ok || !headers_ok {
            return Preflight::Refused;
        }
        Preflight::Allowed(vec![
            ("access-control-allow-origin", allow_origin),
            ("access-control-allow-methods", self.allow_methods.clone()),
            ("access-control-allow-headers", self.allow_headers.clone()),
            ("access-control-max-age", self.max_age.clone()),
        ])
    }
}

/// `scheme://host[:port]` with scheme and host lowercased, or `None` when `text` is not an
/// origin (a path, a query, userinfo, `null`).
fn normalised_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@', ' '])
    {
        return None;
    }
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        rest.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        CorsPolicy::new(
            &list(origins),
            &list(&["GET", "POST", "PUT", "DELETE"]),
            &list(&["authorization", "content-type", "accept", "x-request-id"]),
            &list(&["x-request-id"]),
            600,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn exact_origins_match_as_browsers_serialise_them() {
        let p = policy(&["https://App.example.com"]);
        assert_eq!(
            p.allowed_origin(b"https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        for other in [
            &b"https://app.example.com.evil"[..],
            b"https://evil.example.com",
            b"http://app.example.com",
            b"https://app.example.com:8443",
            b"null",
            b"https://app.example.com/",
        ] {
            assert!(p.allowed_origin(other).is_none(), "{other:?}");
        }
        assert_eq!(policy(&["*"]).allowed_origin(b"https://x").unwrap(), "*");
    }

    #[test]
    fn preflights_are_answered_or_refused() {
        let p = policy(&["https://app.example.com"]);
        let origin = Some(&b"https://app.example.com"[..]);
        match p.preflight(
            &Method::OPTIONS,
            origin,
            Some(b"PUT"),
            Some(b"Authorization, content-type"),
        ) {
            Preflight::Allowed(headers) => {
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| *k == n)
                        .map(|(_, v)| v.clone())
                };
                assert_eq!(
                    get("access-control-allow-origin").unwrap(),
                    "https://app.example.com"
                );
                assert_eq!(
                    get("access-control-allow-methods").unwrap(),
                    "GET, POST, PUT, DELETE"
                );
                assert_eq!(get("access-control-max-age").unwrap(), "600");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.preflight(&Method::OPTIONS, origin, Some(b"PATCH"), None),
            Preflight::Refused
        );
        assert_eq!(
            p.preflight(&Method::OPTIONS, origin, Some(b"PUT"), Some(b"x-secret")),
            Preflight::Refused
        );
        assert_eq!(
            p.preflight(
                &Method::OPTIONS,
                Some(b"https://evil.example"),
                Some(b"PUT"),
                None
            ),
            Preflight::Refused
        );
        assert_eq!(
            p.preflight(&Method::OPTIONS, origin, None, None),
            Preflight::No
        );
        assert_eq!(
            p.preflight(&Method::PUT, origin, Some(b"PUT"), None),
            Preflight::No
        );
    }

    #[test]
    fn bad_sections_are_refused_naming_the_key() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let build = |origins: &[&str], methods: &[&str]| {
            CorsPolicy::new(&list(origins), &list(methods), &[], &[], 1).map(|_| ())
        };
        assert_eq!(
            build(&["*", "https://a"], &["GET"]).unwrap_err().0,
            "cors.allowed_origins"
        );
        assert_eq!(
            build(&["https://a/path"], &["GET"]).unwrap_err().0,
            "cors.allowed_origins"
        );
        assert_eq!(
            build(&["https://a"], &["G ET"]).unwrap_err().0,
            "cors.allowed_methods"
        );
        assert!(CorsPolicy::new(&[], &[], &[], &[], 1).unwrap().is_none());
    }

    /// `*` matched only itself, so `allowed_headers = ["*"]` refused every real preflight
    /// (found by a black-box attack): refused by check in each list.
    #[test]
    fn a_wildcard_method_or_header_list_is_refused() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let origins = list(&["https://a"]);
        let get = list(&["GET"]);
        let star = list(&["*"]);
        let err = |methods: &[String], headers: &[String], expose: &[String]| {
            CorsPolicy::new(&origins, methods, headers, expose, 1)
                .err()
                .map(|(key, _)| key)
        };
        assert_eq!(err(&star, &[], &[]), Some("cors.allowed_methods"));
        assert_eq!(err(&get, &star, &[]), Some("cors.allowed_headers"));
        assert_eq!(err(&get, &[], &star), Some("cors.expose_headers"));
        assert_eq!(err(&get, &list(&["authorization"]), &[]), None);
    }
}
