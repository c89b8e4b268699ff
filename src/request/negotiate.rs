//! Response format negotiation (SPEC §4.1): reads the client's `Accept` header and says whether
//! every response on this request is JSON or XML. It only chooses between the two formats the
//! gateway can render; it must never fail, panic or refuse a request — an `Accept` that names
//! nothing we serve simply gets the JSON default, never a 406.
//!
//! The rules, after RFC 9110 §12.5.1:
//! - `Accept` is a comma-separated list of media ranges with optional parameters; matching is
//!   case-insensitive and commas or semicolons inside quoted strings do not split anything.
//! - JSON is matched by `application/json`, any `*/*+json` type, `application/*` and `*/*`;
//!   XML by `application/xml`, `text/xml`, any `*/*+xml` type, `application/*` and `*/*`.
//! - For each format, the most specific matching range sets its weight (exact type, then
//!   `+json`/`+xml` suffix, then `application/*`, then `*/*`); among equally specific ranges the
//!   highest `q` counts. So `*/*;q=0.5, application/xml;q=0.1` weighs XML at 0.1.
//! - `q=0` means "not acceptable". A range whose `q` is not a valid RFC 9110 qvalue (`0`..`1`,
//!   at most three decimals) is malformed and ignored, as is a range without `type/subtype`.
//! - The format with the higher weight wins; on equal weight the one matched by the more
//!   specific range, then by the earlier range. XML therefore needs a strictly better claim:
//!   a wildcard alone, an absent or empty header, or nothing acceptable all mean JSON.

use crate::media::{
    split_outside_quotes, MediaType, ResponseFormat, Specificity, ANY, APPLICATION_ANY,
};

/// A qvalue in thousandths, so that weights compare exactly.
type Weight = u16;
const FULL_WEIGHT: Weight = 1000;

/// Picks the response format from an `Accept` header value (see the module doc for the rules).
pub fn format_from_accept(accept: Option<&str>) -> ResponseFormat {
    let Some(accept) = accept else {
        return ResponseFormat::Json;
    };
    let mut json: Option<Claim> = None;
    let mut xml: Option<Claim> = None;
    for (position, range) in split_outside_quotes(accept, ',').enumerate() {
        let Some((media, params)) = MediaType::parse(range) else {
            continue;
        };
        let Some(weight) = weight_of(params) else {
            continue;
        };
        let claim = |specificity| Claim {
            weight,
            specificity,
            position,
        };
        match accepts(&media) {
            Accepts::Nothing => {}
            Accepts::Both(specificity) => {
                Claim::consider(&mut json, claim(specificity));
                Claim::consider(&mut xml, claim(specificity));
            }
            Accepts::One(ResponseFormat::Json, specificity) => {
                Claim::consider(&mut json, claim(specificity));
            }
            Accepts::One(ResponseFormat::Xml, specificity) => {
                Claim::consider(&mut xml, claim(specificity));
            }
        }
    }
    match (xml, json) {
        (Some(xml), Some(json)) if xml.weight > 0 && xml.beats(&json) => ResponseFormat::Xml,
        (Some(xml), None) if xml.weight > 0 => ResponseFormat::Xml,
        _ => ResponseFormat::Json,
    }
}

/// The range that decides one format's weight.
#[derive(Debug, Clone, Copy)]
struct Claim {
    weight: Weight,
    specificity: Specificity,
    position: usize,
}

impl Claim {
    /// Keeps the most specific range, and among equally specific ones the heaviest.
    fn consider(best: &mut Option<Claim>, candidate: Claim) {
        let replace = match best {
            None => true,
            Some(current) => {
                (candidate.specificity, candidate.weight) > (current.specificity, current.weight)
            }
        };
        if replace {
            *best = Some(candidate);
        }
    }

    fn beats(&self, other: &Claim) -> bool {
        (
            self.weight,
            self.specificity,
            std::cmp::Reverse(self.position),
        ) > (
            other.weight,
            other.specificity,
            std::cmp::Reverse(other.position),
        )
    }
}

/// The `q` of a media range: `Some(1000)` when absent, `None` when malformed.
fn weight_of<'a>(mut params: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Weight> {
    // Parameters after `q` are accept-extensions, so only the first `q` counts.
    match params.find(|(name, _)| name.eq_ignore_ascii_case("q")) {
        Some((_, value)) => parse_qvalue(value),
        None => Some(FULL_WEIGHT),
    }
}

/// RFC 9110 `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(value: &str) -> Option<Weight> {
    let (integer, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 {
        return None;
    }
    let mut thousandths: Weight = 0;
    for (digits, byte) in fraction.bytes().enumerate() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let scale = [100, 10, 1].get(digits).copied().unwrap_or(0);
        thousandths += Weight::from(byte - b'0') * scale;
    }
    match integer {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(FULL_WEIGHT),
        _ => None,
    }
}

/// What one media range in `Accept` covers among the formats we serve.
enum Accepts {
    Nothing,
    One(ResponseFormat, Specificity),
    Both(Specificity),
}

/// What one media range covers among the formats we serve.
fn accepts(media: &MediaType<'_>) -> Accepts {
    if let Some((format, specificity)) = media.named_format() {
        return Accepts::One(format, specificity);
    }
    match (media.kind(), media.subtype()) {
        ("*", "*") => Accepts::Both(ANY),
        (kind, "*") if kind.eq_ignore_ascii_case("application") => Accepts::Both(APPLICATION_ANY),
        _ => Accepts::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::EXACT;
    use proptest::prelude::*;
    use ResponseFormat::{Json, Xml};

    fn negotiate(accept: &str) -> ResponseFormat {
        format_from_accept(Some(accept))
    }

    #[test]
    fn absent_or_blank_accept_means_json() {
        assert_eq!(format_from_accept(None), Json);
        assert_eq!(negotiate(""), Json);
        assert_eq!(negotiate(" , ,"), Json);
    }

    #[test]
    fn application_xml_means_xml() {
        assert_eq!(negotiate("application/xml"), Xml);
    }

    #[test]
    fn text_xml_means_xml() {
        assert_eq!(negotiate("text/xml"), Xml);
    }

    #[test]
    fn xml_suffix_types_mean_xml() {
        assert_eq!(negotiate("application/atom+xml"), Xml);
        assert_eq!(negotiate("application/problem+xml"), Xml);
    }

    #[test]
    fn json_and_json_suffix_types_mean_json() {
        assert_eq!(negotiate("application/json, text/xml;q=0.9"), Json);
        assert_eq!(negotiate("application/problem+json, text/xml;q=0.9"), Json);
    }

    #[test]
    fn wildcards_mean_json() {
        assert_eq!(negotiate("*/*"), Json);
        assert_eq!(negotiate("application/*"), Json);
    }

    #[test]
    fn matching_is_case_insensitive() {
        assert_eq!(negotiate("APPLICATION/XML"), Xml);
        assert_eq!(negotiate("Application/Atom+XML;Q=1"), Xml);
        assert_eq!(negotiate("text/XML;Q=0, */*"), Json);
    }

    #[test]
    fn highest_q_wins() {
        assert_eq!(
            negotiate("application/json;q=0.4, application/xml;q=0.8"),
            Xml
        );
        assert_eq!(
            negotiate("application/xml;q=0.4, application/json;q=0.8"),
            Json
        );
    }

    #[test]
    fn xml_with_strictly_higher_q_than_a_wildcard_wins() {
        assert_eq!(negotiate("*/*;q=0.5, application/xml"), Xml);
    }

    #[test]
    fn xml_with_lower_q_than_a_wildcard_loses() {
        assert_eq!(negotiate("application/xml;q=0.5, */*"), Json);
    }

    #[test]
    fn equal_q_goes_to_the_more_specific_range() {
        assert_eq!(negotiate("*/*, application/xml"), Xml);
        assert_eq!(negotiate("application/json, application/xml;q=1"), Json);
    }

    #[test]
    fn equal_q_and_specificity_goes_to_the_earlier_range() {
        assert_eq!(negotiate("application/xml, application/json"), Xml);
        assert_eq!(negotiate("application/json, application/xml"), Json);
    }

    #[test]
    fn most_specific_range_sets_the_weight() {
        assert_eq!(negotiate("*/*;q=0.5, application/xml;q=0.1"), Json);
        assert_eq!(negotiate("*/*;q=0.1, application/json;q=0.05"), Xml);
    }

    #[test]
    fn q_zero_means_not_acceptable() {
        assert_eq!(negotiate("application/xml;q=0"), Json);
        assert_eq!(
            negotiate("application/json;q=0, application/xml;q=0.1"),
            Xml
        );
        assert_eq!(negotiate("application/json;q=0, */*"), Xml);
    }

    #[test]
    fn nothing_acceptable_falls_back_to_json() {
        assert_eq!(negotiate("text/html"), Json);
        assert_eq!(negotiate("application/json;q=0, application/xml;q=0"), Json);
        assert_eq!(negotiate("text/*"), Json);
    }

    #[test]
    fn range_with_invalid_q_is_ignored() {
        assert_eq!(negotiate("application/xml;q=2"), Json);
        assert_eq!(negotiate("application/xml;q=abc"), Json);
        assert_eq!(negotiate("application/xml;q=0.1234"), Json);
        assert_eq!(negotiate("application/xml;q=1.001"), Json);
        assert_eq!(negotiate("application/xml;q=0.001"), Xml);
        assert_eq!(negotiate("application/xml;q=1.000"), Xml);
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        assert_eq!(negotiate("xml, application, /xml, application/xml/x"), Json);
        assert_eq!(negotiate("garbage;;;, application/xml"), Xml);
    }

    #[test]
    fn parameters_other_than_q_are_ignored() {
        assert_eq!(
            negotiate("application/xml;charset=utf-8;q=0.9, application/json;q=0.5"),
            Xml
        );
    }

    #[test]
    fn only_the_first_q_counts() {
        assert_eq!(
            negotiate("application/xml;q=0.9;q=0, application/json;q=0.5"),
            Xml
        );
    }

    #[test]
    fn quoted_commas_do_not_split_ranges() {
        assert_eq!(negotiate(r#"text/plain;x=",application/xml,""#), Json);
        assert_eq!(negotiate(r#"text/plain;x="a\",b", application/xml"#), Xml);
    }

    #[test]
    fn browser_accept_header_gets_xml() {
        // `application/xhtml+xml` is an XML type, as SPEC §4.1's `*+xml` rule says.
        assert_eq!(
            negotiate("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Xml
        );
    }

    #[test]
    fn media_type_parameters_are_trimmed_and_unquoted() {
        let (media, mut params) = MediaType::parse(r#"application/json ; charset = "utf-8""#)
            .expect("a well-formed media type");
        assert!(matches!(media.named_format(), Some((Json, EXACT))));
        assert_eq!(params.next(), Some(("charset", "utf-8")));
        assert_eq!(params.next(), None);
    }

    proptest! {
        #[test]
        fn format_from_accept_never_panics(accept in any::<String>()) {
            let _ = format_from_accept(Some(&accept));
        }

        #[test]
        fn format_from_accept_never_panics_on_header_like_input(
            accept in r#"([a-z*+/;=,"\\. 0-9qQ]|xml|json|application){0,40}"#
        ) {
            let _ = format_from_accept(Some(&accept));
        }

        #[test]
        fn adding_a_zero_weight_range_changes_nothing(
            accept in "(application/(json|xml|\\*)|\\*/\\*|text/xml)(;q=0\\.[1-9])?"
        ) {
            let extended = format!("{accept}, text/html;q=0");
            prop_assert_eq!(negotiate(&accept), negotiate(&extended));
        }
    }
}
