//! Which kind of request this is: the finish-upload call, another API call under the prefix, a
//! public path, or something outside the API. Pure: a request target and a method in, a
//! [`Route`] out. [`normalise`] is the one function that says what a path *is*: the most
//! aggressive reading any upstream framework might apply to it.
//!
//! It must never let a path reach the upstream that the upstream could read as an API route
//! while the gateway read it as something else: servlet containers strip `;` parameters, nginx
//! and most routers resolve dot segments and merge slashes, IIS reads `\` and `%u002f`, many
//! frameworks decode `%XX` once or twice and ignore case. A path that needs any of those
//! readings, and that is or could become a path under the prefix, is refused (400) instead of
//! guessed at, wherever the trick sits: before, inside or after the prefix. The prefix and the
//! finish route are matched without regard to ASCII case.
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
    pub const fn template(self) -> &'static str {
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

/// Classifies a request by its method as sent and its request target: [`classify`], and a
/// method under the prefix spelled with lower-case letters (`put`, `Put`) is refused as
/// ambiguous: HTTP methods are case-sensitive, so the gateway would read `put` as some other
/// method while frameworks that upper-case it (Django, Werkzeug) run their PUT handler on an
/// unvalidated body (found by a black-box attack).
pub fn classify_request(api: &ApiSettings, method: &str, target: &[u8]) -> Route {
    let route = classify(api, method == "PUT", target);
    if route.is_api() && method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Route::Ambiguous;
    }
    route
}

/// Classifies a request by method and request target (the bytes that go upstream; a query, if
/// any, is ignored).
pub fn classify(api: &ApiSettings, is_put: bool, target: &[u8]) -> Route {
    let path = match target.iter().position(|&b| b == b'?') {
        Some(end) => &target[..end],
        None => target,
    };
    // RFC 9112 §3.2: a request target is a path rooted at `/`, `*` (OPTIONS), or the absolute
    // form. Anything else (`v1/...`, `%20/v1/...` from `PUT  /v1/...`, `\\v1/...`) is read
    // differently by every upstream (rooted, decoded and trimmed, or refused): never forwarded,
    // whatever it might name (found by a black-box attack: a double space after the method
    // took a finish call around validation and the rate limit).
    let well_formed = match path.first() {
        Some(b'/') => true,
        Some(b'*') => path.len() == 1,
        _ => path.windows(3).any(|w| w == b"://"),
    };
    if !well_formed {
        return Route::Ambiguous;
    }
    let prefix = api.path_prefix.as_bytes();
    // `//host/v1/...` is a network-path reference: URL parsers resolving it against a base
    // (Node's `new URL(req.url, base)`, Python's `urlsplit`) read `host` as the authority and
    // `/v1/...` as the path (found by a black-box attack).
    if let Some(after_authority) = network_path(path) {
        let reading = normalise(after_authority);
        if under_prefix(prefix, after_authority) || under_prefix(prefix, &reading.path) {
            return Route::Ambiguous;
        }
    }
    let reading = normalise(path);
    if reading.tricky {
        // Refused when either reading lands under the prefix: the raw one (an upstream that
        // normalises less than us) or the normalised one (an upstream that normalises more).
        let cut = read_path(path, true);
        return if under_prefix(prefix, path)
            || under_prefix(prefix, &reading.path)
            || under_prefix(prefix, &cut.path)
        {
            Route::Ambiguous
        } else {
            Route::Other
        };
    }
    // Not tricky: the raw path is what every reader sees, and it is ASCII-clean enough to be
    // read as text; a path that is not UTF-8 cannot be an API route.
    let Ok(path) = std::str::from_utf8(path) else {
        return Route::Other;
    };
    let Some(rest) = strip_prefix(&api.path_prefix, path) else {
        return Route::Other;
    };
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

/// The path of a target read as a network-path reference (`//authority/path`, either slash
/// possibly a `\\`): what follows the authority, when anything does.
fn network_path(path: &[u8]) -> Option<&[u8]> {
    let slash = |b: &u8| matches!(b, b'/' | b'\\');
    if !(path.len() > 2 && slash(&path[0]) && slash(&path[1])) {
        return None;
    }
    let end = path[2..].iter().position(slash)? + 2;
    Some(&path[end..])
}

/// A path as the most lenient upstream would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathReading {
    /// The normalised path: decoded, `\` read as `/`, `;` parameters dropped, slashes merged,
    /// dot segments resolved, trailing dots and spaces of segments dropped, ASCII lower case.
    pub path: Vec<u8>,
    /// Whether reading it took any of those steps (other than lower-casing): two parsers could
    /// then disagree about it.
    pub tricky: bool,
}

/// How many rounds of percent-decoding are applied: double encoding (`%252e`) is a classic, and
/// a third round only ever appears in attacks, which the second round already marks as tricky.
const DECODE_ROUNDS: usize = 3;

/// Reads `path` (the part of the target before `?`) as the most lenient upstream would.
pub fn normalise(path: &[u8]) -> PathReading {
    read_path(path, false)
}

/// [`normalise`], reading a `#`, `?` or NUL (raw or decoded) as the end of the path when `cut`.
fn read_path(path: &[u8], cut: bool) -> PathReading {
    let mut tricky = false;
    // URL parsers (WHATWG) drop ASCII tabs and line breaks wherever they are.
    let stripped: Vec<u8>;
    let path = if path.iter().any(|&b| matches!(b, b'\t' | b'\n' | b'\r')) {
        tricky = true;
        stripped = path
            .iter()
            .copied()
            .filter(|&b| !matches!(b, b'\t' | b'\n' | b'\r'))
            .collect();
        &stripped[..]
    } else {
        path
    };
    let mut bytes = match path.first() {
        Some(b'/') => path.to_vec(),
        // `*` (OPTIONS) names no resource.
        Some(b'*') if path.len() == 1 => {
            return PathReading {
                path: path.to_vec(),
                tricky,
            }
        }
        // The absolute form, whose path an upstream reads after the authority.
        _ if path.windows(3).any(|w| w == b"://") => {
            tricky = true;
            absolute_form_path(path).to_vec()
        }
        // Any other target not rooted at `/` (`v1/...`, `\v1/...`): a lenient upstream roots
        // it (or reads `\` as `/`) and routes it like the rooted path.
        _ => {
            tricky = true;
            let mut rooted = Vec::with_capacity(path.len() + 1);
            rooted.push(b'/');
            rooted.extend_from_slice(path);
            rooted
        }
    };
    if bytes.iter().any(|&b| b == b'#' || b == 0) {
        tricky = true;
    }
    for _ in 0..DECODE_ROUNDS {
        match decode_structural(&bytes) {
            Some(decoded) => {
                tricky = true;
                bytes = decoded;
            }
            None => break,
        }
    }
    // Decoded tabs and line breaks are dropped too, as a parser that decodes first would.
    if bytes.iter().any(|&b| matches!(b, b'\t' | b'\n' | b'\r')) {
        tricky = true;
        bytes.retain(|&b| !matches!(b, b'\t' | b'\n' | b'\r'));
    }
    // A fragment, a query or a NUL ends the path for some readers and is data for others:
    // both readings count.
    if let Some(end) = bytes.iter().position(|&b| b == b'#' || b == b'?' || b == 0) {
        tricky = true;
        if cut {
            bytes.truncate(end);
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let raw_segments: Vec<&[u8]> = bytes.split(|&b| b == b'/' || b == b'\\').collect();
    if bytes.contains(&b'\\') {
        tricky = true;
    }
    let last = raw_segments.len().saturating_sub(1);
    for (index, segment) in raw_segments.into_iter().enumerate() {
        // The leading empty segment before the first `/`.
        if index == 0 && segment.is_empty() {
            continue;
        }
        let mut segment = segment;
        if let Some(semi) = segment.iter().position(|&b| b == b';') {
            segment = &segment[..semi];
            tricky = true;
        }
        let trimmed = trim_trailing_dots_and_spaces(segment);
        if trimmed.len() != segment.len() && segment != b"." && segment != b".." {
            tricky = true;
            segment = trimmed;
        }
        match segment {
            b"" if index == last => segments.push(segment), // a trailing slash is kept
            b"" => tricky = true,                           // `//`
            b"." => tricky = true,
            b".." => {
                segments.pop();
                tricky = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend(segment.iter().map(u8::to_ascii_lowercase));
    }
    if out.is_empty() {
        out.push(b'/');
    }
    PathReading { path: out, tricky }
}

/// The path of an absolute-form target (`http://host/path`), or `/` when it has none.
fn absolute_form_path(target: &[u8]) -> &[u8] {
    let after_scheme = target
        .windows(3)
        .position(|w| w == b"://")
        .map_or(target, |at| &target[at + 3..]);
    match after_scheme.iter().position(|&b| b == b'/') {
        Some(start) => &after_scheme[start..],
        None => b"/",
    }
}

fn trim_trailing_dots_and_spaces(segment: &[u8]) -> &[u8] {
    let keep = segment
        .iter()
        .rposition(|&b| b != b'.' && b != b' ')
        .map_or(0, |at| at + 1);
    &segment[..keep]
}

/// One round of decoding of every escape that changes how a path is routed: `%XX` naming an
/// unreserved character, a delimiter (`/ \ ; ? # %`) or a control character; IIS's `%uXXXX`;
/// overlong UTF-8 for `/`, `.` and `\`. Other escapes (`%20`, valid UTF-8) stay as they are:
/// decoding them changes no segment. `None` when nothing was decoded.
fn decode_structural(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut changed = false;
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            if let Some((byte, len)) = escape_at(&path[i..]) {
                out.push(byte);
                i += len;
                changed = true;
                continue;
            }
        }
        out.push(path[i]);
        i += 1;
    }
    changed.then_some(out)
}

/// The structural byte an escape at the start of `s` stands for, and the escape's length.
fn escape_at(s: &[u8]) -> Option<(u8, usize)> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let byte_at = |at: usize| -> Option<u8> {
        (s.get(at) == Some(&b'%'))
            .then(|| Some(hex(*s.get(at + 1)?)? << 4 | hex(*s.get(at + 2)?)?))
            .flatten()
    };
    if matches!(s.get(1), Some(b'u' | b'U')) {
        let code = s
            .get(2..6)?
            .iter()
            .try_fold(0u32, |acc, &b| Some(acc << 4 | u32::from(hex(b)?)))?;
        // Any code point an IIS-style reader could fold into a structural ASCII byte.
        return u8::try_from(code).ok().map(|b| (b, 6)).or(Some((b'?', 6)));
    }
    let first = byte_at(0)?;
    if is_structural(first) {
        return Some((first, 3));
    }
    // Overlong UTF-8: `%c0%af` (`/`), `%c0%ae` (`.`), `%c1%9c` (`\`), `%e0%80%af`.
    match first {
        0xc0 | 0xc1 => {
            let second = byte_at(3)?;
            let byte = ((first & 0x1f) << 6) | (second & 0x3f);
            (second & 0xc0 == 0x80).then_some((byte, 6))
        }
        0xe0 => {
            let (second, third) = (byte_at(3)?, byte_at(6)?);
            (second & 0xe0 == 0x80 && third & 0xc0 == 0x80)
                .then_some(((second & 0x01) << 6 | (third & 0x3f), 9))
        }
        // Fullwidth forms (U+FF01..U+FF5E), which "best fit" readers fold into ASCII.
        0xef => {
            let (second, third) = (byte_at(3)?, byte_at(6)?);
            let code = 0xf000u32 | u32::from(second & 0x3f) << 6 | u32::from(third & 0x3f);
            let ascii = code
                .checked_sub(0xfee0)
                .and_then(|c| u8::try_from(c).ok())?;
            ((0x21..=0x7e).contains(&ascii) && is_structural(ascii)).then_some((ascii, 9))
        }
        _ => None,
    }
}

/// Bytes whose encoded form a path has no reason to use, because they are either unreserved
/// (RFC 3986) or change the path's structure for some reader.
fn is_structural(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | b'?' | b'#' | b'%'
        )
        || b.is_ascii_control()
}

/// Whether `path` is the prefix or below it, ignoring ASCII case (`/v1`, `/v1/...`, not `/v10`).
fn under_prefix(prefix: &[u8], path: &[u8]) -> bool {
    path.len() >= prefix.len()
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(path.get(prefix.len()), None | Some(b'/'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_not_rooted_at_a_slash_are_refused_wherever_they_point() {
        let api = crate::config::Config::from_toml(
            "[upstream]\nservers = [\"127.0.0.1:1\"]\n[auth]\njwks_file = \"k.json\"\n",
        )
        .unwrap()
        .api;
        let id = "5475f75ce4b084a392305dcb";
        for target in [
            format!("\\v1/files/uploads/{id}"),
            format!("v1/files/uploads/{id}"),
            format!("/v1\t/files/uploads/{id}"),
            format!("/v1/files/uploads/{id}\r\n"),
            format!("\tv1/files/uploads/{id}"),
            format!("/v1%09/files/uploads/{id}"),
            format!(" /v1/files/uploads/{id}"),
            format!("%20/v1/files/uploads/{id}"),
            format!("%2Fv1/files/uploads/{id}"),
            "elsewhere/x".to_owned(),
            "%20/static/a".to_owned(),
            String::new(),
        ] {
            assert_eq!(
                classify(&api, true, target.as_bytes()),
                Route::Ambiguous,
                "{target:?}"
            );
        }
        assert_eq!(classify(&api, true, b"*"), Route::Other);
        assert_eq!(classify(&api, true, b"/elsewhere/x"), Route::Other);
        // Network-path references whose path is the API (found by a black-box attack).
        for target in [
            format!("//x/v1/files/uploads/{id}"),
            format!("//x:80/v1/files/uploads/{id}"),
            format!("//u@x/v1/files/uploads/{id}"),
            format!("//v1.example/v1/files/uploads/{id}"),
            format!("//x/V1/files/uploads/{id}"),
            format!("/\\x/v1/files/uploads/{id}"),
        ] {
            assert_eq!(
                classify(&api, true, target.as_bytes()),
                Route::Ambiguous,
                "{target:?}"
            );
        }
        assert_eq!(classify(&api, false, b"//cdn/static/a.png"), Route::Other);
    }

    /// Found by a black-box attack: `put` went upstream unvalidated as another method.
    #[test]
    fn a_lower_case_method_under_the_prefix_is_ambiguous() {
        let api = api();
        let id = "5475f75ce4b084a392305dcb";
        let target = format!("/v1/files/uploads/{id}");
        assert_eq!(
            classify_request(&api, "PUT", target.as_bytes()),
            Route::FinishUpload
        );
        for method in ["put", "Put", "pUT", "get", "Delete"] {
            assert_eq!(
                classify_request(&api, method, target.as_bytes()),
                Route::Ambiguous,
                "{method}"
            );
        }
        assert_eq!(classify_request(&api, "put", b"/static/x"), Route::Other);
        assert_eq!(classify_request(&api, "GET", b"/v1/files"), Route::Api);
        assert_eq!(
            classify(
                &api,
                true,
                format!("http://h/v1/files/uploads/{id}").as_bytes()
            ),
            Route::Ambiguous
        );
    }
    use crate::config::Config;

    fn api() -> ApiSettings {
        Config::from_toml("[auth]\njwks_file = \"/dev/null\"\n")
            .unwrap()
            .api
    }

    const ID: &str = "5475f75ce4b084a392305dcb";

    fn route(is_put: bool, target: &str) -> Route {
        classify(&api(), is_put, target.as_bytes())
    }

    #[test]
    fn put_with_well_formed_id_is_the_finish_route() {
        let route = route(true, &format!("/v1/files/uploads/{ID}"));
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
            assert_eq!(route(true, path), Route::FinishUploadBadId, "{path}");
        }
    }

    #[test]
    fn other_methods_and_paths_under_the_prefix_are_api_routes() {
        assert_eq!(route(false, &format!("/v1/files/uploads/{ID}")), Route::Api);
        assert_eq!(route(true, "/v1/files/other"), Route::Api);
        assert_eq!(route(false, "/v1"), Route::Api);
    }

    #[test]
    fn paths_outside_the_prefix_are_proxied_unchanged() {
        assert_eq!(route(true, "/v10/files/uploads/x"), Route::Other);
        assert_eq!(route(true, "/files/uploads/x"), Route::Other);
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
            assert_eq!(route(true, path), Route::Ambiguous, "{path}");
        }
    }

    #[test]
    fn prefix_and_finish_route_match_whatever_their_case() {
        assert_eq!(
            route(true, &format!("/V1/Files/Uploads/{ID}")),
            Route::FinishUpload
        );
        assert_eq!(
            route(true, "/V1/FILES/UPLOADS/nothex"),
            Route::FinishUploadBadId
        );
    }

    #[test]
    fn tricks_before_or_inside_the_prefix_are_ambiguous() {
        for path in [
            "/x/../v1/files/uploads/5475f75ce4b084a392305dcb",
            "//v1/files/uploads/5475f75ce4b084a392305dcb",
            "/v1;x/files/uploads/5475f75ce4b084a392305dcb",
            "/v1%2Ffiles/uploads/5475f75ce4b084a392305dcb",
            "/v1%2ffiles/uploads/5475f75ce4b084a392305dcb",
            "/v1\\files/uploads/5475f75ce4b084a392305dcb",
            "/./v1/files/uploads/5475f75ce4b084a392305dcb",
            "/x/%2e%2e/v1/files/uploads/5475f75ce4b084a392305dcb",
            "/x/%252e%252e/v1/files/uploads/5475f75ce4b084a392305dcb",
            "/x/..;/v1/files/uploads/5475f75ce4b084a392305dcb",
            "/v1./files/uploads/5475f75ce4b084a392305dcb",
            "/v1%u002ffiles/uploads/5475f75ce4b084a392305dcb",
            "/v1%c0%affiles/uploads/5475f75ce4b084a392305dcb",
            "/v1%ef%bc%8ffiles/uploads/5475f75ce4b084a392305dcb",
            "/v1%00/files/uploads/5475f75ce4b084a392305dcb",
            "/x%23/../v1/files/uploads/5475f75ce4b084a392305dcb",
            "http://host/v1/files/uploads/5475f75ce4b084a392305dcb",
            "/V1/./FILES/uploads/5475f75ce4b084a392305dcb",
            "/v1/files/uploads/5475f75ce4b084a392305dcb%3Fx",
        ] {
            assert_eq!(route(true, path), Route::Ambiguous, "{path}");
        }
    }

    #[test]
    fn tricks_that_stay_outside_the_prefix_are_proxied_unchanged() {
        for path in [
            "/static/a;jsessionid=1",
            "/static/%7Euser",
            "/static/../other",
            "//other",
            "/v10/../x",
        ] {
            assert_eq!(route(true, path), Route::Other, "{path}");
        }
    }

    #[test]
    fn escapes_that_change_no_segment_are_not_tricks() {
        assert_eq!(route(false, "/v1/files/a%20b"), Route::Api);
        assert_eq!(route(false, "/v1/files/caf%C3%A9"), Route::Api);
        assert_eq!(route(false, "/static/a%20b"), Route::Other);
        assert!(!normalise(b"/v1/files/uploads/x").tricky);
    }

    #[test]
    fn the_query_is_not_part_of_the_path() {
        assert_eq!(
            route(true, &format!("/v1/files/uploads/{ID}?format=xml&x=/../")),
            Route::FinishUpload
        );
    }

    #[test]
    fn normalise_resolves_what_lenient_readers_resolve() {
        let read = |p: &str| String::from_utf8(normalise(p.as_bytes()).path).unwrap();
        assert_eq!(read("/a/b/../c"), "/a/c");
        assert_eq!(read("/../../a"), "/a");
        assert_eq!(read("/A//B;x=1/./C/"), "/a/b/c/");
        assert_eq!(read("/a%252fb"), "/a/b");
        assert_eq!(read("/a\\b"), "/a/b");
        assert_eq!(read("*"), "*");
    }

    proptest::proptest! {
        /// Whatever the bytes, a target either stays out of the API, or is routed only when
        /// its most lenient reading is the same path.
        #[test]
        fn a_routed_path_reads_the_same_to_every_reader(target in "[/a-z0-9.;%\\\\vV1]{0,24}") {
            let full = format!("/v1/files/uploads/{ID}{target}");
            for candidate in [target.clone(), full] {
                let route = route(true, &candidate);
                if matches!(route, Route::Api | Route::FinishUpload | Route::FinishUploadBadId) {
                    let reading = normalise(candidate.as_bytes());
                    proptest::prop_assert!(!reading.tricky, "{candidate}");
                }
                if route == Route::Other {
                    let reading = normalise(candidate.as_bytes());
                    proptest::prop_assert!(!under_prefix(b"/v1", &reading.path), "{candidate}");
                }
            }
        }
    }
}
