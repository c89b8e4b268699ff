//! Query normalisation (SPEC §4.2): reads the gateway's own parameters — `format`, `human`,
//! `show_null` — from the raw query string, and builds the query the upstream receives. It
//! judges only those three: every other parameter is forwarded byte for byte, still
//! percent-encoded and in its order, and it must never re-encode, reorder or drop one, nor echo a
//! client's value in an error.
//!
//! Choices where the SPEC is silent:
//! - Names and values are decoded as `application/x-www-form-urlencoded`: `+` is a space, then
//!   `%XX` escapes; so `%66ormat=xml` is `format`, and `human=%2B1` is `+1` (invalid).
//! - Names are case-sensitive (`Format=xml` is some other parameter); values are not.
//! - `human` and `show_null` written bare (`?human`) or with an empty value (`?human=`) are true.
//! - A value of one of our parameters that is not UTF-8 once decoded is an error; the bytes of
//!   other parameters are never judged, even when their escapes are malformed.
//! - Empty segments (`a=1&&b=2`, a trailing `&`) carry nothing and are not forwarded.

use std::borrow::Cow;

use percent_encoding::percent_decode;

use crate::media::{RenderOptions, ResponseFormat};
use crate::request::negotiate::format_from_accept;

/// What the query says about rendering, and the query to send upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NormalisedQuery {
    /// `format`, when the client gave one; it overrides `Accept`.
    pub format: Option<ResponseFormat>,
    /// `human`: pretty-print the response.
    pub human: bool,
    /// `show_null`: keep keys whose value is null.
    pub show_null: bool,
    /// The query for the upstream, without `?`: `format` removed, `human`/`show_null` in
    /// canonical `true`/`false` where they first appeared, everything else untouched.
    /// `None` when nothing is left.
    pub upstream_query: Option<String>,
}

impl NormalisedQuery {
    /// The rendering options for this request: the query's `format`, else the `Accept` header.
    pub fn render_options(&self, accept: Option<&str>) -> RenderOptions {
        RenderOptions {
            format: self.format.unwrap_or_else(|| format_from_accept(accept)),
            human: self.human,
            show_null: self.show_null,
        }
    }
}

/// Why a query was refused (400, envelope `0x0230001`). Display names the parameter at most,
/// never the client's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `format` is neither `json` nor `xml`.
    #[error("query parameter `format` must be json or xml")]
    InvalidFormat,
    /// `human` or `show_null` is not one of `true|false|1|0`.
    #[error("query parameter `{name}` must be true, false, 1 or 0")]
    InvalidBoolean {
        /// The parameter.
        name: &'static str,
    },
    /// The parameter appears twice with different values.
    #[error("query parameter `{name}` is repeated with conflicting values")]
    Conflicting {
        /// The parameter.
        name: &'static str,
    },
    /// The parameter's value is not UTF-8 once percent-decoded.
    #[error("query parameter `{name}` is not UTF-8 once percent-decoded")]
    BadEncoding {
        /// The parameter.
        name: &'static str,
    },
}

impl QueryError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            QueryError::InvalidFormat => "query_invalid_format",
            QueryError::InvalidBoolean { .. } => "query_invalid_boolean",
            QueryError::Conflicting { .. } => "query_conflicting_values",
            QueryError::BadEncoding { .. } => "query_bad_encoding",
        }
    }
}

/// Reads the gateway's parameters strictly and builds the upstream query (SPEC §4.2).
///
/// # Errors
/// The first invalid or conflicting value of `format`, `human` or `show_null`, in query order.
pub fn normalise(raw_query: Option<&str>) -> Result<NormalisedQuery, QueryError> {
    let raw = raw_query.unwrap_or("");
    let mut format = None;
    let mut human = None;
    let mut show_null = None;
    let mut upstream = String::with_capacity(raw.len());
    for param in params(raw) {
        let forwarded = match param.known {
            None => Some(param.raw),
            Some(Known::Format) => {
                keep_first(&mut format, parse_format(param.value)?, Known::Format)?;
                None
            }
            Some(known @ Known::Human) => read_boolean(&mut human, known, param.value)?,
            Some(known @ Known::ShowNull) => read_boolean(&mut show_null, known, param.value)?,
        };
        if let Some(piece) = forwarded {
            if !upstream.is_empty() {
                upstream.push('&');
            }
            upstream.push_str(piece);
        }
    }
    Ok(NormalisedQuery {
        format,
        human: human.unwrap_or(false),
        show_null: show_null.unwrap_or(false),
        upstream_query: (!upstream.is_empty()).then_some(upstream),
    })
}

/// Reads the rendering options before authentication, so that even a 403 is rendered as asked
/// (SPEC §4): a parameter that is invalid or conflicting falls back to its default — `format` to
/// the `Accept` header, then JSON; `human` and `show_null` to false — without affecting the
/// others.
pub fn lenient_render_options(raw_query: Option<&str>, accept: Option<&str>) -> RenderOptions {
    let mut format = Lenient::Unset;
    let mut human = Lenient::Unset;
    let mut show_null = Lenient::Unset;
    for param in params(raw_query.unwrap_or("")) {
        match param.known {
            None => {}
            Some(Known::Format) => format.observe(parse_format(param.value)),
            Some(known @ Known::Human) => human.observe(parse_boolean(known, param.value)),
            Some(known @ Known::ShowNull) => show_null.observe(parse_boolean(known, param.value)),
        }
    }
    RenderOptions {
        format: format.value().unwrap_or_else(|| format_from_accept(accept)),
        human: human.value().unwrap_or(false),
        show_null: show_null.value().unwrap_or(false),
    }
}

/// The parameters the gateway itself reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Format,
    Human,
    ShowNull,
}

impl Known {
    /// The longest a raw name can be and still decode to one of ours (`%XX` per byte).
    const MAX_RAW_NAME_LEN: usize = 3 * "show_null".len();

    fn from_raw_name(raw: &str) -> Option<Known> {
        if raw.len() > Self::MAX_RAW_NAME_LEN {
            return None;
        }
        match &*form_decode(raw) {
            b"format" => Some(Known::Format),
            b"human" => Some(Known::Human),
            b"show_null" => Some(Known::ShowNull),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Known::Format => "format",
            Known::Human => "human",
            Known::ShowNull => "show_null",
        }
    }

    fn canonical(self, value: bool) -> &'static str {
        match (self, value) {
            (Known::Human, true) => "human=true",
            (Known::Human, false) => "human=false",
            (_, true) => "show_null=true",
            (_, false) => "show_null=false",
        }
    }
}

/// One `name[=value]` segment of the query, raw.
struct Param<'a> {
    raw: &'a str,
    known: Option<Known>,
    value: Option<&'a str>,
}

fn params(raw: &str) -> impl Iterator<Item = Param<'_>> {
    raw.split('&').filter(|s| !s.is_empty()).map(|raw| {
        let (name, value) = match raw.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (raw, None),
        };
        Param {
            raw,
            known: Known::from_raw_name(name),
            value,
        }
    })
}

/// Form-decodes a name or value; borrows when there is nothing to decode.
fn form_decode(raw: &str) -> Cow<'_, [u8]> {
    if !raw.contains('+') {
        return percent_decode(raw.as_bytes()).into();
    }
    let spaced: Vec<u8> = raw
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_decode(&spaced).collect())
}

fn decoded_value(known: Known, raw: &str) -> Result<Cow<'_, str>, QueryError> {
    let bad_encoding = || QueryError::BadEncoding { name: known.name() };
    match form_decode(raw) {
        Cow::Borrowed(bytes) => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| bad_encoding()),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|_| bad_encoding()),
    }
}

fn parse_format(raw: Option<&str>) -> Result<ResponseFormat, QueryError> {
    let value = decoded_value(Known::Format, raw.unwrap_or(""))?;
    if value.eq_ignore_ascii_case("json") {
        Ok(ResponseFormat::Json)
    } else if value.eq_ignore_ascii_case("xml") {
        Ok(ResponseFormat::Xml)
    } else {
        Err(QueryError::InvalidFormat)
    }
}

fn parse_boolean(known: Known, raw: Option<&str>) -> Result<bool, QueryError> {
    let Some(raw) = raw else {
        return Ok(true);
    };
    let value = decoded_value(known, raw)?;
    if value.is_empty() || value == "1" || value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value == "0" || value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(QueryError::InvalidBoolean { name: known.name() })
    }
}

/// Records a boolean and returns its canonical form when it is to be forwarded (first occurrence).
fn read_boolean(
    slot: &mut Option<bool>,
    known: Known,
    raw: Option<&str>,
) -> Result<Option<&'static str>, QueryError> {
    let value = parse_boolean(known, raw)?;
    Ok(keep_first(slot, value, known)?.then(|| known.canonical(value)))
}

/// Records a parameter's value; `Ok(true)` on its first occurrence, `Ok(false)` on an identical
/// repeat.
fn keep_first<T: PartialEq>(
    slot: &mut Option<T>,
    value: T,
    known: Known,
) -> Result<bool, QueryError> {
    match slot {
        None => {
            *slot = Some(value);
            Ok(true)
        }
        Some(first) if *first == value => Ok(false),
        Some(_) => Err(QueryError::Conflicting { name: known.name() }),
    }
}

/// A parameter read leniently: once invalid or conflicting, it stays at its default.
#[derive(Clone, Copy)]
enum Lenient<T> {
    Unset,
    Set(T),
    Invalid,
}

impl<T: PartialEq + Copy> Lenient<T> {
    fn observe(&mut self, parsed: Result<T, QueryError>) {
        *self = match (*self, parsed) {
            (Lenient::Unset, Ok(value)) => Lenient::Set(value),
            (Lenient::Set(first), Ok(value)) if first == value => Lenient::Set(first),
            _ => Lenient::Invalid,
        }
    }

    fn value(self) -> Option<T> {
        match self {
            Lenient::Set(value) => Some(value),
            Lenient::Unset | Lenient::Invalid => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ResponseFormat::{Json, Xml};

    fn ok(query: &str) -> NormalisedQuery {
        normalise(Some(query)).expect("a valid query")
    }

    fn upstream(query: &str) -> Option<String> {
        ok(query).upstream_query
    }

    #[test]
    fn absent_or_empty_query_gives_defaults_and_no_upstream_query() {
        let defaults = NormalisedQuery {
            format: None,
            human: false,
            show_null: false,
            upstream_query: None,
        };
        assert_eq!(normalise(None), Ok(defaults.clone()));
        assert_eq!(normalise(Some("")), Ok(defaults));
    }

    #[test]
    fn format_accepts_json_and_xml_in_any_case() {
        assert_eq!(ok("format=json").format, Some(Json));
        assert_eq!(ok("format=XmL").format, Some(Xml));
        assert_eq!(ok("format=JSON").format, Some(Json));
    }

    #[test]
    fn format_with_another_value_is_rejected() {
        assert_eq!(
            normalise(Some("format=yaml")),
            Err(QueryError::InvalidFormat)
        );
        assert_eq!(
            normalise(Some("format=xml1")),
            Err(QueryError::InvalidFormat)
        );
    }

    #[test]
    fn format_without_a_value_is_rejected() {
        assert_eq!(normalise(Some("format")), Err(QueryError::InvalidFormat));
        assert_eq!(normalise(Some("format=")), Err(QueryError::InvalidFormat));
    }

    #[test]
    fn format_is_removed_from_the_upstream_query() {
        assert_eq!(upstream("a=1&format=xml&b=2"), Some("a=1&b=2".into()));
        assert_eq!(upstream("format=xml"), None);
    }

    #[test]
    fn booleans_accept_true_false_1_0_in_any_case() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("0", false),
        ] {
            assert_eq!(ok(&format!("human={value}")).human, expected, "{value}");
            assert_eq!(
                ok(&format!("show_null={value}")).show_null,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn boolean_without_a_value_is_true() {
        assert!(ok("human").human);
        assert!(ok("show_null=").show_null);
        assert_eq!(
            upstream("human&show_null="),
            Some("human=true&show_null=true".into())
        );
    }

    #[test]
    fn absent_booleans_are_false_and_not_invented_upstream() {
        let query = ok("a=1");
        assert!(!query.human && !query.show_null);
        assert_eq!(query.upstream_query, Some("a=1".into()));
    }

    #[test]
    fn boolean_with_another_value_is_rejected() {
        assert_eq!(
            normalise(Some("human=yes")),
            Err(QueryError::InvalidBoolean { name: "human" })
        );
        assert_eq!(
            normalise(Some("show_null=2")),
            Err(QueryError::InvalidBoolean { name: "show_null" })
        );
    }

    #[test]
    fn booleans_are_forwarded_canonical_at_their_first_position() {
        assert_eq!(
            upstream("a=1&human=1&b=2&show_null=FALSE&human=true"),
            Some("a=1&human=true&b=2&show_null=false".into())
        );
    }

    #[test]
    fn percent_encoded_names_and_values_are_decoded_before_checks() {
        let query = ok("%66ormat=XM%4C&hum%61n=%74rue&show%5Fnull=%30");
        assert_eq!(query.format, Some(Xml));
        assert!(query.human);
        assert!(!query.show_null);
        assert_eq!(
            query.upstream_query,
            Some("human=true&show_null=false".into())
        );
    }

    #[test]
    fn plus_decodes_to_a_space_and_encoded_plus_stays_a_plus() {
        assert_eq!(
            normalise(Some("format=xml+")),
            Err(QueryError::InvalidFormat)
        );
        assert_eq!(
            normalise(Some("human=%2B1")),
            Err(QueryError::InvalidBoolean { name: "human" })
        );
        assert_eq!(upstream("format+=xml"), Some("format+=xml".into()));
    }

    #[test]
    fn value_that_is_not_utf8_once_decoded_is_rejected() {
        assert_eq!(
            normalise(Some("human=%FF")),
            Err(QueryError::BadEncoding { name: "human" })
        );
        assert_eq!(
            normalise(Some("format=%C3")),
            Err(QueryError::BadEncoding { name: "format" })
        );
    }

    #[test]
    fn identical_repeats_collapse() {
        let query = ok("human=1&x=y&human=TRUE&format=xml&format=XML");
        assert!(query.human);
        assert_eq!(query.format, Some(Xml));
        assert_eq!(query.upstream_query, Some("human=true&x=y".into()));
    }

    #[test]
    fn format_repeated_with_conflicting_values_is_rejected() {
        assert_eq!(
            normalise(Some("format=json&format=xml")),
            Err(QueryError::Conflicting { name: "format" })
        );
    }

    #[test]
    fn boolean_repeated_with_conflicting_values_is_rejected() {
        assert_eq!(
            normalise(Some("show_null=1&show_null=0")),
            Err(QueryError::Conflicting { name: "show_null" })
        );
        assert_eq!(
            normalise(Some("human&human=false")),
            Err(QueryError::Conflicting { name: "human" })
        );
    }

    #[test]
    fn other_query_parameters_are_forwarded_untouched_in_order() {
        assert_eq!(
            upstream("z=%20x&format=xml&a=1+2&c&b=%7e&=v"),
            Some("z=%20x&a=1+2&c&b=%7e&=v".into())
        );
    }

    #[test]
    fn other_parameters_with_malformed_encoding_are_forwarded_untouched() {
        assert_eq!(
            upstream("q=%zz&%FF=%&x=%C3"),
            Some("q=%zz&%FF=%&x=%C3".into())
        );
    }

    #[test]
    fn parameter_names_are_case_sensitive() {
        let query = ok("Format=yaml&HUMAN=maybe");
        assert_eq!(query.format, None);
        assert!(!query.human);
        assert_eq!(query.upstream_query, Some("Format=yaml&HUMAN=maybe".into()));
    }

    #[test]
    fn empty_segments_are_dropped() {
        assert_eq!(upstream("&&a=1&&b=2&"), Some("a=1&b=2".into()));
        assert_eq!(upstream("&"), None);
    }

    #[test]
    fn render_options_prefer_the_query_format_over_accept() {
        let options = ok("format=json&human").render_options(Some("application/xml"));
        assert_eq!(
            options,
            RenderOptions {
                format: Json,
                human: true,
                show_null: false
            }
        );
        assert_eq!(ok("").render_options(Some("application/xml")).format, Xml);
    }

    #[test]
    fn lenient_options_follow_a_valid_query() {
        assert_eq!(
            lenient_render_options(
                Some("format=xml&human=1&show_null"),
                Some("application/json")
            ),
            RenderOptions {
                format: Xml,
                human: true,
                show_null: true
            }
        );
    }

    #[test]
    fn lenient_invalid_format_falls_back_to_accept() {
        let options = lenient_render_options(Some("format=yaml&human=1"), Some("text/xml"));
        assert_eq!(options.format, Xml);
        assert!(options.human);
        assert_eq!(
            lenient_render_options(Some("format=yaml"), None).format,
            Json
        );
    }

    #[test]
    fn lenient_conflicting_or_invalid_boolean_falls_back_to_false() {
        let options = lenient_render_options(Some("human=1&human=0&show_null=1&format=xml"), None);
        assert!(!options.human);
        assert!(options.show_null);
        assert_eq!(options.format, Xml);
        assert!(!lenient_render_options(Some("human=maybe&human=1"), None).human);
    }

    #[test]
    fn lenient_options_without_query_follow_accept() {
        assert_eq!(
            lenient_render_options(None, Some("application/xml")),
            RenderOptions {
                format: Xml,
                human: false,
                show_null: false
            }
        );
    }

    #[test]
    fn errors_have_distinct_reasons_and_never_echo_the_value() {
        let errors = [
            normalise(Some("format=SECRET")),
            normalise(Some("human=SECRET")),
            normalise(Some("human=1&human=0")),
            normalise(Some("human=SECRET%FF")),
        ]
        .map(|result| result.expect_err("an invalid query"));
        let mut reasons: Vec<_> = errors.iter().map(QueryError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        for error in errors {
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
    }

    proptest! {
        #[test]
        fn normalise_never_panics(query in any::<String>()) {
            let _ = normalise(Some(&query));
            let _ = lenient_render_options(Some(&query), None);
        }

        #[test]
        fn normalise_is_idempotent_on_its_upstream_query(
            query in "((format|human|show_null|%66ormat|a|b%20)(=(xml|json|1|0|true|FALSE|%31|x|))?&?){0,8}"
        ) {
            if let Ok(first) = normalise(Some(&query)) {
                let again = normalise(first.upstream_query.as_deref());
                let again = again.expect("the upstream query is valid");
                prop_assert_eq!(&again.upstream_query, &first.upstream_query);
                prop_assert_eq!((again.human, again.show_null), (first.human, first.show_null));
                prop_assert_eq!(again.format, None);
            }
        }

        #[test]
        fn lenient_options_agree_with_a_valid_query(
            query in "((format|human|show_null)(=(xml|json|1|0|true|yes))?&?){0,6}",
            xml_accept in any::<bool>(),
        ) {
            let accept = Some(if xml_accept { "application/xml" } else { "application/json" });
            if let Ok(strict) = normalise(Some(&query)) {
                prop_assert_eq!(lenient_render_options(Some(&query), accept), strict.render_options(accept));
            }
        }
    }
}
