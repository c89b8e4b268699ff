//! Which kind of request this is: the finish-upload call, another API call under the prefix, a
//! public path, or something outside the API. Pure: a path and a method in, a [`Route`] out.
//!
//! It must never let a path reach the upstream that the upstream could read as the finish call
//! while the gateway read it as something else: upstream frameworks decode `%XX`, strip `;`
//! path parameters, ignore case or resolve dot segments. Such paths are refused instead of
//! guessed at, and the prefix and the finish route are matched without regard to case.

use crate::config::ApiSettings;

/// The route a request takes through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `PUT {prefix}/files/uploads/{ID}` with a well-formed ID: the full treatment.
    FinishUpload,
    /// `PUT {prefix}/files/uploads/{ID}` with an ID the pattern refuses: 404 before the upstream.
    FinishUploadBadId,
    /// Any other request under the prefix: negotiated and rendered, body untouched.
    Api,
    /// A path under the prefix the gateway will not interpret (dot segments, `//`, encoded `/`).
    Ambiguous,
    /// Outside the prefix: proxied unchanged.
    Other,
}

impl Route {
    /// The route template for logs and metrics (never the raw path: IDs would explode cardinality).
    pub fn template(self) -> &'static str {
        match self {
            Route::FinishUpload | Route::FinishUploadBadId => "PUT /files/uploads/{id}",
            Route::Api => "api",
            Route::Ambiguous => "ambiguous",
            Route::Other => "other",
        }
    }

    /// Whether negotiation, query normalisation and rendering apply.
    pub fn is_api(self) -> bool {
        !matches!(self, Route::Other)
    }
}

const FINISH_PATH: &str = "/files/uploads/";

/// Classifies a request by method and path (the path without the query).
pub fn classify(api: &ApiSettings, is_put: bool, path: &str) -> Route {
    // Encoding a character that needs none (`%76` for `v`) only serves to make two parsers
    // disagree, anywhere in the path: `/%761/...` must not slip past the prefix.
    if has_encoded_unreserved(path) {
        return Route::Ambiguous;
    }
    let Some(rest) = strip_prefix(&api.path_prefix, path) else {
        return Route::Other;
    };
    if is_ambiguous(rest) {
        return Route::Ambiguous;
    }
    if !is_put {
        return Route::Api;
    }
    match strip_prefix_ignore_case(rest, FINISH_PATH) {
        Some(id) if !id.contains('/') && api.upload_id_pattern.is_match(id) => Route::FinishUpload,
        // A trailing slash or extra segment after the ID is still aimed at the finish call:
        // refusing it beats letting an upstream that normalises paths see an unvalidated body.
        Some(_) => Route::FinishUploadBadId,
        None => Route::Api,
    }
}

/// The path after the prefix, when the path is under it (`/v1` and `/v1/...`, not `/v10`),
/// ignoring ASCII case as some upstream routers do.
fn strip_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = strip_prefix_ignore_case(path, prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// `%XX` naming an unreserved character (RFC 3986: letters, digits, `-`, `.`, `_`, `~`).
fn has_encoded_unreserved(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
                })
    })
}

fn is_ambiguous(rest: &str) -> bool {
    // `;` starts a path parameter that servlet containers strip before routing.
    if rest.contains("//") || rest.contains('\\') || rest.contains(';') {
        return true;
    }
    if rest
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return true;
    }
    // Encoded slashes, backslashes and dots let two parsers disagree about segments.
    let bytes = rest.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_uppercase()),
                (b'2', b'F') | (b'2', b'E') | (b'5', b'C')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn api() -> ApiSettings {
        Config::from_toml("[auth]\njwks_file = \"/dev/null\"\n")
            .unwrap()
            .api
    }

    const ID: &str = "5475f75ce4b084a392305dcb";

    #[test]
    fn put_with_well_formed_id_is_the_finish_route() {
        let route = classify(&api(), true, &format!("/v1/files/uploads/{ID}"));
        assert_eq!(route, Route::FinishUpload);
    }

    #[test]
    fn put_with_malformed_id_is_refused_before_the_upstream() {
        for path in [
            "/v1/files/uploads/nothex",
            "/v1/files/uploads/",
            &format!("/v1/files/uploads/{ID}/"),
            &format!("/v1/files/uploads/{ID}/extra"),
        ] {
            assert_eq!(
                classify(&api(), true, path),
                Route::FinishUploadBadId,
                "{path}"
            );
        }
    }

    #[test]
    fn other_methods_and_paths_under_the_prefix_are_api_routes() {
        assert_eq!(
            classify(&api(), false, &format!("/v1/files/uploads/{ID}")),
            Route::Api
        );
        assert_eq!(classify(&api(), true, "/v1/files/other"), Route::Api);
        assert_eq!(classify(&api(), false, "/v1"), Route::Api);
    }

    #[test]
    fn paths_outside_the_prefix_are_proxied_unchanged() {
        assert_eq!(classify(&api(), true, "/v10/files/uploads/x"), Route::Other);
        assert_eq!(classify(&api(), true, "/files/uploads/x"), Route::Other);
    }

    #[test]
    fn paths_two_parsers_could_read_differently_are_ambiguous() {
        for path in [
            "/v1//files/uploads/x",
            "/v1/files/../files/uploads/x",
            "/v1/./files/uploads/x",
            "/v1/files%2Fuploads/x",
            "/v1/files/uploads/%2e%2e",
            "/v1/files\\uploads",
            "/v1/files/upload%73/5475f75ce4b084a392305dcb",
            "/v1/files/uploads;x=1/5475f75ce4b084a392305dcb",
            "/%761/files/uploads/5475f75ce4b084a392305dcb",
        ] {
            assert_eq!(classify(&api(), true, path), Route::Ambiguous, "{path}");
        }
    }

    #[test]
    fn prefix_and_finish_route_match_whatever_their_case() {
        assert_eq!(
            classify(&api(), true, &format!("/V1/Files/Uploads/{ID}")),
            Route::FinishUpload
        );
        assert_eq!(
            classify(&api(), true, "/V1/FILES/UPLOADS/nothex"),
            Route::FinishUploadBadId
        );
    }
}
