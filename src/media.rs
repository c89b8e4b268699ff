//! Media types and the response format: the vocabulary shared by request negotiation
//! ([`crate::request`]) and rendering ([`crate::render`]), so that neither imports the other.
//! Pure: borrowed header text in, plain values out; never a panic, whatever the header holds.

/// The wire format of every response on one request (SPEC §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// `application/json` (the default).
    #[default]
    Json,
    /// `application/xml; charset=utf-8`.
    Xml,
}

impl ResponseFormat {
    /// The `Content-Type` header value for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Json => "application/json",
            ResponseFormat::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// How a response is rendered: decided once per request, in `request_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderOptions {
    /// JSON or XML.
    pub format: ResponseFormat,
    /// Pretty-print with a 2-space indent.
    pub human: bool,
    /// Keep object keys whose value is null.
    pub show_null: bool,
}

/// How precisely a media range names one of our formats; higher is more specific.
pub type Specificity = u8;
/// `*/*`.
pub const ANY: Specificity = 0;
/// `application/*`.
pub const APPLICATION_ANY: Specificity = 1;
/// A `+json` / `+xml` structured-syntax suffix.
pub const SUFFIX: Specificity = 2;
/// The format's own type (`application/json`, `application/xml`, `text/xml`).
pub const EXACT: Specificity = 3;

/// A `type/subtype` pair borrowed from a header; compared case-insensitively, never lowered.
#[derive(Debug, Clone, Copy)]
pub struct MediaType<'a> {
    kind: &'a str,
    subtype: &'a str,
}

impl<'a> MediaType<'a> {
    /// Splits `type/subtype; name=value; ...` into the type and its parameters, or `None` when
    /// there is no well-formed `type/subtype`. Parameter names and values come back trimmed,
    /// values without surrounding quotes; a parameter without `=` is skipped.
    pub fn parse(value: &'a str) -> Option<(Self, impl Iterator<Item = (&'a str, &'a str)> + 'a)> {
        let mut parts = split_outside_quotes(value, ';');
        let essence = parts.next()?.trim();
        let (kind, subtype) = essence.split_once('/')?;
        let is_token = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace());
        if !is_token(kind) || !is_token(subtype) || subtype.contains('/') {
            return None;
        }
        let params = parts.filter_map(|param| {
            let (name, value) = param.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim(), value))
        });
        Some((MediaType { kind, subtype }, params))
    }

    /// The format a concrete media type names: `application/json` and `*/*+json` are JSON,
    /// `application/xml`, `text/xml` and `*/*+xml` are XML. Wildcards name nothing.
    pub fn named_format(&self) -> Option<(ResponseFormat, Specificity)> {
        let (kind, subtype) = (self.kind, self.subtype);
        if kind == "*" || subtype == "*" {
            return None;
        }
        let application = kind.eq_ignore_ascii_case("application");
        if application && subtype.eq_ignore_ascii_case("json") {
            return Some((ResponseFormat::Json, EXACT));
        }
        if (application || kind.eq_ignore_ascii_case("text")) && subtype.eq_ignore_ascii_case("xml")
        {
            return Some((ResponseFormat::Xml, EXACT));
        }
        match subtype.rsplit_once('+') {
            Some((name, suffix)) if !name.is_empty() => {
                if suffix.eq_ignore_ascii_case("json") {
                    Some((ResponseFormat::Json, SUFFIX))
                } else if suffix.eq_ignore_ascii_case("xml") {
                    Some((ResponseFormat::Xml, SUFFIX))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether this is `kind/subtype`, ignoring case.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

impl MediaType<'_> {
    /// The type (`application` in `application/json`), as written.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// The subtype (`json` in `application/json`), as written.
    pub fn subtype(&self) -> &str {
        self.subtype
    }
}

/// Whether a `Content-Type` value names JSON (`application/json` or any `+json` type),
/// parameters ignored.
pub fn is_json(content_type: &str) -> bool {
    MediaType::parse(content_type)
        .and_then(|(media, _)| media.named_format())
        .is_some_and(|(format, _)| format == ResponseFormat::Json)
}

/// Splits a header value on `separator`, except inside quoted strings (RFC 9110 §5.6.4).
pub fn split_outside_quotes(value: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    value.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                false
            }
            '"' => {
                quoted = !quoted;
                false
            }
            c => c == separator && !quoted,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json("json"));
        assert!(!is_json("application/xml"));
    }
}
