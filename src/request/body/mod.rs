//! The finish-upload body (SPEC §4.3): decides whether a `PUT .../files/uploads/{ID}` body is
//! acceptable and turns it into the one canonical JSON document the upstream receives,
//! `{"upload":{"nb_chunks":N,...}}`. It reads JSON and a small, strict XML; it must never let
//! the gateway and the upstream read different values (duplicate keys, trailing documents,
//! entity tricks are refused), never silently drop part of the body, never echo body content
//! in an error, and never panic, whatever the bytes.
//!
//! Choices where the SPEC is silent:
//! - JSON: a top-level object whose only key is `"upload"` with an object value is the wrapped
//!   form; a top level without `"upload"` is the bare form; a top level with `"upload"` and other
//!   keys, or whose `"upload"` is not an object, is ambiguous and refused.
//! - JSON: other fields reach the upstream as the client wrote them, only the whitespace
//!   between tokens removed: numbers keep their digits (a 30-digit integer, `1.0`, `1e5`),
//!   strings their escapes. They are copied from the document's own text (`serde_json`'s
//!   `RawValue`), after the strict parse below has validated every one of them.
//! - XML: element names with a namespace prefix (`<a:b>`) are refused, `xmlns`/`xmlns:*`
//!   attributes ignored, any other attribute refused; CDATA is text; comments are ignored
//!   anywhere; the XML declaration may be preceded by whitespace only.
//! - XML: `<nb_chunks>` may have XML whitespace around its digits and leading zeros (as
//!   `xs:integer` allows); other text is kept verbatim (line ends normalised as XML requires).
//! - XML: text must consist of XML 1.0 characters; character references are decoded and must
//!   name one.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::media::{MediaType, ResponseFormat};

mod json;
mod xml;

use json::parse_json_upload;
use xml::parse_xml_upload;

/// The deepest nesting accepted, counting the `upload` object or element as 1: the XML root,
/// the bare JSON top level, the wrapped form's `"upload"` value (its outer object is not
/// counted, so the canonical JSON of a bare body is accepted again).
pub const MAX_DEPTH: usize = 32;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A valid finish-upload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishUpload {
    /// The number of chunks the client uploaded, `1..=max_nb_chunks`.
    pub nb_chunks: u64,
    /// Compact JSON `{"upload":{"nb_chunks":N,...}}` for the upstream: `nb_chunks` first, the
    /// client's other fields after it in their original order.
    pub canonical: Vec<u8>,
}

/// Why a body was refused (400, envelope `0x0230001`). Display never contains body content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The `Content-Type` is neither JSON, XML nor one that is sniffed.
    #[error("unsupported content type")]
    UnsupportedContentType,
    /// The `Content-Type` declares a charset other than UTF-8.
    #[error("unsupported charset: only UTF-8 is accepted")]
    UnsupportedCharset,
    /// Nothing but whitespace (and a BOM).
    #[error("empty body")]
    Empty,
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// A sniffed body starts with neither `{` nor `<`.
    #[error("body is neither JSON nor XML")]
    UnknownKind,
    /// Not JSON.
    #[error("invalid JSON at line {line}, column {column}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// Not well-formed XML.
    #[error("invalid XML at byte {position}")]
    Xml {
        /// Byte offset of the error in the body, after the BOM.
        position: u64,
    },
    /// Something follows the document.
    #[error("content after the end of the document")]
    TrailingContent,
    /// A key or element appears twice at the same level.
    #[error("duplicate key or element")]
    Duplicate,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Not `{"upload":{...}}`, `{...}` or `<upload>...</upload>`.
    #[error("body does not have the finish-upload shape")]
    Shape,
    /// No `nb_chunks`.
    #[error("nb_chunks is missing")]
    NbChunksMissing,
    /// `nb_chunks` is not a plain integer.
    #[error("nb_chunks is not a plain integer")]
    NbChunksNotInteger,
    /// `nb_chunks` is an integer outside `1..=max_nb_chunks`.
    #[error("nb_chunks is out of range")]
    NbChunksOutOfRange,
    /// XML with a DOCTYPE (and so possibly entity declarations).
    #[error("XML document type declarations are not accepted")]
    Doctype,
    /// XML processing instruction, or an XML declaration out of place.
    #[error("XML processing instructions are not accepted")]
    ProcessingInstruction,
    /// XML entity reference other than the predefined five, or an invalid character reference.
    #[error("XML entity or character reference not accepted")]
    Entity,
    /// XML declaration naming an encoding other than UTF-8.
    #[error("XML encoding other than UTF-8")]
    XmlEncoding,
    /// XML attribute other than a namespace declaration.
    #[error("XML attributes are not accepted")]
    Attribute,
    /// XML element name that is prefixed or not an XML name.
    #[error("XML element name not accepted")]
    XmlName,
    /// XML element holding both text and elements.
    #[error("XML mixed content is not accepted")]
    MixedContent,
    /// XML text with a character XML 1.0 does not allow.
    #[error("XML text contains a character XML does not allow")]
    XmlCharacter,
}

impl BodyError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::UnsupportedContentType => "body_unsupported_content_type",
            BodyError::UnsupportedCharset => "body_unsupported_charset",
            BodyError::Empty => "body_empty",
            BodyError::NotUtf8 => "body_not_utf8",
            BodyError::UnknownKind => "body_unknown_kind",
            BodyError::Json { .. } => "body_invalid_json",
            BodyError::Xml { .. } => "body_invalid_xml",
            BodyError::TrailingContent => "body_trailing_content",
            BodyError::Duplicate => "body_duplicate_key",
            BodyError::TooDeep => "body_too_deep",
            BodyError::Shape => "body_unexpected_shape",
            BodyError::NbChunksMissing => "body_nb_chunks_missing",
            BodyError::NbChunksNotInteger => "body_nb_chunks_not_integer",
            BodyError::NbChunksOutOfRange => "body_nb_chunks_out_of_range",
            BodyError::Doctype => "body_xml_doctype",
            BodyError::ProcessingInstruction => "body_xml_processing_instruction",
            BodyError::Entity => "body_xml_entity",
            BodyError::XmlEncoding => "body_xml_encoding",
            BodyError::Attribute => "body_xml_attribute",
            BodyError::XmlName => "body_xml_name",
            BodyError::MixedContent => "body_xml_mixed_content",
            BodyError::XmlCharacter => "body_xml_character",
        }
    }
}

/// Validates a finish-upload body and builds its canonical JSON (see the module doc).
///
/// # Errors
/// The first rule the body breaks, as a [`BodyError`].
pub fn validate_finish_body(
    content_type: Option<&str>,
    body: &[u8],
    max_nb_chunks: u64,
) -> Result<FinishUpload, BodyError> {
    let declared = kind_from_content_type(content_type)?;
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    let first = text
        .bytes()
        .find(|b| !is_xml_whitespace(char::from(*b)))
        .ok_or(BodyError::Empty)?;
    let kind = match (declared, first) {
        (Some(kind), _) => kind,
        (None, b'{') => Kind::Json,
        (None, b'<') => Kind::Xml,
        (None, _) => return Err(BodyError::UnknownKind),
    };
    let (fields, nb_chunks) = match kind {
        Kind::Json => {
            let fields = parse_json_upload(text)?;
            let nb_chunks = json_nb_chunks(fields.get("nb_chunks"), max_nb_chunks)?;
            // Validated: now copy the members from the text itself, so no value is re-printed.
            let members = raw_upload_members(text)?;
            return Ok(FinishUpload {
                nb_chunks,
                canonical: canonical_json_from_text(nb_chunks, &members),
            });
        }
        Kind::Xml => {
            let fields = parse_xml_upload(text)?;
            let nb_chunks = xml_nb_chunks(fields.get("nb_chunks"), max_nb_chunks)?;
            (fields, nb_chunks)
        }
    };
    Ok(FinishUpload {
        nb_chunks,
        canonical: canonical_json(nb_chunks, fields),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Xml,
}

/// The body kind the `Content-Type` declares, `None` when the body must be sniffed.
fn kind_from_content_type(content_type: Option<&str>) -> Result<Option<Kind>, BodyError> {
    let Some(content_type) = content_type.filter(|value| !value.trim().is_empty()) else {
        return Ok(None);
    };
    let (media, mut params) =
        MediaType::parse(content_type).ok_or(BodyError::UnsupportedContentType)?;
    let not_utf8 = |(name, value): (&str, &str)| {
        name.eq_ignore_ascii_case("charset") && !is_utf8_label(value.as_bytes())
    };
    if params.any(not_utf8) {
        return Err(BodyError::UnsupportedCharset);
    }
    match media.named_format() {
        Some((ResponseFormat::Json, _)) => Ok(Some(Kind::Json)),
        Some((ResponseFormat::Xml, _)) => Ok(Some(Kind::Xml)),
        None if media.is("application", "x-www-form-urlencoded") || media.is("text", "plain") => {
            Ok(None)
        }
        None => Err(BodyError::UnsupportedContentType),
    }
}

/// Reads `nb_chunks` from JSON: an integer literal, in range.
fn json_nb_chunks(value: Option<&Value>, max_nb_chunks: u64) -> Result<u64, BodyError> {
    let Value::Number(number) = value.ok_or(BodyError::NbChunksMissing)? else {
        return Err(BodyError::NbChunksNotInteger);
    };
    // serde_json keeps a literal with a fraction or an exponent as f64, even `1.0` or `1e0`.
    if number.is_f64() {
        return Err(BodyError::NbChunksNotInteger);
    }
    number
        .as_u64()
        .filter(|n| (1..=max_nb_chunks).contains(n))
        .ok_or(BodyError::NbChunksOutOfRange)
}

/// Reads `nb_chunks` from XML: ASCII digits only, in range.
fn xml_nb_chunks(value: Option<&Value>, max_nb_chunks: u64) -> Result<u64, BodyError> {
    let Value::String(text) = value.ok_or(BodyError::NbChunksMissing)? else {
        return Err(BodyError::NbChunksNotInteger);
    };
    let digits = text.trim_matches(is_xml_whitespace);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BodyError::NbChunksNotInteger);
    }
    // Only digits are left, so a parse failure can only be an overflow.
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max_nb_chunks).contains(n))
        .ok_or(BodyError::NbChunksOutOfRange)
}

fn canonical_json(nb_chunks: u64, fields: Map<String, Value>) -> Vec<u8> {
    let mut upload = Map::with_capacity(fields.len() + 1);
    upload.insert(
        "nb_chunks".to_owned(),
        Value::Number(Number::from(nb_chunks)),
    );
    upload.extend(fields.into_iter().filter(|(key, _)| key != "nb_chunks"));
    let mut document = Map::with_capacity(1);
    document.insert("upload".to_owned(), Value::Object(upload));
    // `Value`'s Display is compact JSON and cannot fail: its keys are strings and its numbers
    // finite.
    Value::Object(document).to_string().into_bytes()
}

/// The canonical document with the client's members copied from their text, compacted.
fn canonical_json_from_text(nb_chunks: u64, members: &[(String, &RawValue)]) -> Vec<u8> {
    let capacity = 32
        + members
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(br#"{"upload":{"nb_chunks":"#);
    out.extend_from_slice(itoa::Buffer::new().format(nb_chunks).as_bytes());
    for (key, value) in members {
        if key == "nb_chunks" {
            continue;
        }
        out.push(b',');
        // A key is printed from its decoded form, so `"nb\u005fchunks"` was the `nb_chunks`
        // skipped above, never a second one the upstream would also read.
        write_json_string(&mut out, key);
        out.push(b':');
        compact_json_into(&mut out, value.get());
    }
    out.extend_from_slice(b"}}");
    out
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a `str` cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Copies valid JSON text without the whitespace between its tokens.
fn compact_json_into(out: &mut Vec<u8>, json: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// The `upload` object's members in document order, as text: the wrapped form's inner object,
/// or the bare form's top level. Only called on a document [`parse_json_upload`] accepted.
fn raw_upload_members(text: &str) -> Result<Vec<(String, &RawValue)>, BodyError> {
    let invalid = |_| BodyError::Shape;
    let RawMembers(top) = serde_json::from_str(text).map_err(invalid)?;
    match top.as_slice() {
        [(key, upload)] if key == "upload" => {
            let RawMembers(inner) = serde_json::from_str(upload.get()).map_err(invalid)?;
            Ok(inner)
        }
        _ => Ok(top),
    }
}

/// An object's members with their values left as text.
struct RawMembers<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawMembers<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// `utf-8`, or its common alias `utf8`, in any case.
fn is_utf8_label(label: &[u8]) -> bool {
    label.eq_ignore_ascii_case(b"utf-8") || label.eq_ignore_ascii_case(b"utf8")
}

/// Whitespace in both JSON and XML.
fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 10_000;

    fn validate(content_type: Option<&str>, body: &str) -> Result<FinishUpload, BodyError> {
        validate_finish_body(content_type, body.as_bytes(), MAX)
    }

    fn json(body: &str) -> Result<FinishUpload, BodyError> {
        validate(Some("application/json"), body)
    }

    fn xml(body: &str) -> Result<FinishUpload, BodyError> {
        validate(Some("application/xml"), body)
    }

    fn canonical(result: Result<FinishUpload, BodyError>) -> String {
        let upload = result.expect("a valid body");
        String::from_utf8(upload.canonical).expect("canonical JSON is UTF-8")
    }

    fn nested_json(depth: usize) -> String {
        let mut body = String::from(r#"{"nb_chunks":1,"x":"#);
        body.push_str(&"[".repeat(depth - 1));
        body.push_str(&"]".repeat(depth - 1));
        body.push('}');
        body
    }

    fn nested_xml(depth: usize) -> String {
        let mut body = String::from("<upload><nb_chunks>1</nb_chunks>");
        body.push_str(&"<a>".repeat(depth - 1));
        body.push('x');
        body.push_str(&"</a>".repeat(depth - 1));
        body.push_str("</upload>");
        body
    }

    // ---- content type and framing

    #[test]
    fn wrapped_json_body_is_accepted() {
        let upload = json(r#"{"upload":{"nb_chunks":3}}"#).expect("valid");
        assert_eq!(upload.nb_chunks, 3);
        assert_eq!(upload.canonical, br#"{"upload":{"nb_chunks":3}}"#);
    }

    #[test]
    fn bare_json_body_is_wrapped() {
        assert_eq!(
            canonical(json(r#" {"nb_chunks": 7} "#)),
            r#"{"upload":{"nb_chunks":7}}"#
        );
    }

    #[test]
    fn json_suffix_content_type_is_json() {
        let result = validate(
            Some("application/vnd.api+json; charset=UTF-8"),
            r#"{"nb_chunks":1}"#,
        );
        assert_eq!(result.map(|u| u.nb_chunks), Ok(1));
    }

    #[test]
    fn xml_content_types_are_xml() {
        for content_type in ["application/xml", "text/xml", "application/upload+xml"] {
            let result = validate(
                Some(content_type),
                "<upload><nb_chunks>2</nb_chunks></upload>",
            );
            assert_eq!(result.map(|u| u.nb_chunks), Ok(2), "{content_type}");
        }
    }

    #[test]
    fn declared_kind_wins_over_the_first_byte() {
        assert!(matches!(
            json("<upload><nb_chunks>2</nb_chunks></upload>"),
            Err(BodyError::Json { line: 1, .. })
        ));
        assert!(matches!(xml(r#"{"nb_chunks":1}"#), Err(BodyError::Shape)));
    }

    #[test]
    fn curl_default_content_type_is_sniffed_as_json() {
        let result = validate(
            Some("application/x-www-form-urlencoded"),
            "\n  {\"upload\":{\"nb_chunks\":1}}",
        );
        assert_eq!(result.map(|u| u.nb_chunks), Ok(1));
    }

    #[test]
    fn absent_or_text_plain_content_type_is_sniffed_as_xml() {
        let body = " <upload><nb_chunks>4</nb_chunks></upload>";
        assert_eq!(validate(None, body).map(|u| u.nb_chunks), Ok(4));
        assert_eq!(
            validate(Some("text/plain"), body).map(|u| u.nb_chunks),
            Ok(4)
        );
        assert_eq!(validate(Some(""), body).map(|u| u.nb_chunks), Ok(4));
    }

    #[test]
    fn sniffed_body_that_is_neither_json_nor_xml_is_rejected() {
        assert_eq!(validate(None, "nb_chunks=1"), Err(BodyError::UnknownKind));
    }

    #[test]
    fn other_content_type_is_rejected() {
        for content_type in [
            "text/html",
            "multipart/form-data; boundary=x",
            "application/*",
            "json",
        ] {
            assert_eq!(
                validate(Some(content_type), r#"{"nb_chunks":1}"#),
                Err(BodyError::UnsupportedContentType),
                "{content_type}"
            );
        }
    }

    #[test]
    fn charset_other_than_utf8_is_rejected() {
        assert_eq!(
            validate(
                Some("application/json; charset=iso-8859-1"),
                r#"{"nb_chunks":1}"#
            ),
            Err(BodyError::UnsupportedCharset)
        );
        assert!(validate(
            Some(r#"application/json; Charset="UTF-8""#),
            r#"{"nb_chunks":1}"#
        )
        .is_ok());
    }

    #[test]
    fn utf8_bom_is_skipped() {
        let body = b"\xEF\xBB\xBF{\"nb_chunks\":1}";
        assert_eq!(
            validate_finish_body(None, body, MAX).map(|u| u.nb_chunks),
            Ok(1)
        );
        let body = b"\xEF\xBB\xBF<upload><nb_chunks>1</nb_chunks></upload>";
        assert_eq!(
            validate_finish_body(None, body, MAX).map(|u| u.nb_chunks),
            Ok(1)
        );
    }

    #[test]
    fn empty_or_blank_body_is_rejected_as_empty() {
        assert_eq!(
            validate(Some("application/json"), ""),
            Err(BodyError::Empty)
        );
        assert_eq!(validate(None, " \r\n\t"), Err(BodyError::Empty));
        assert_eq!(
            validate_finish_body(None, b"\xEF\xBB\xBF  ", MAX),
            Err(BodyError::Empty)
        );
    }

    #[test]
    fn body_that_is_not_utf8_is_rejected() {
        assert_eq!(
            validate_finish_body(None, b"{\"nb_chunks\":1,\"x\":\"\xFF\"}", MAX),
            Err(BodyError::NotUtf8)
        );
    }

    // ---- JSON

    #[test]
    fn documented_example_body_with_trailing_commas_is_rejected() {
        // The reference's curl example, as bash passes it: the backslashes are literal.
        let body = "{ \\ \n \"upload\": { \\\n     \"nb_chunks\": 1, \\\n  } \\\n}";
        assert!(matches!(
            validate(Some("application/x-www-form-urlencoded"), body),
            Err(BodyError::Json { .. })
        ));
        let without_backslashes = "{\n \"upload\": {\n \"nb_chunks\": 1,\n }\n}";
        assert!(matches!(
            json(without_backslashes),
            Err(BodyError::Json { line: 4, .. })
        ));
    }

    #[test]
    fn other_fields_are_kept_after_nb_chunks_in_their_order() {
        let body = r#"{"upload":{"z":null,"tags":["a",{"b":1.5}],"nb_chunks":2,"a":{"k":"v"}}}"#;
        assert_eq!(
            canonical(json(body)),
            r#"{"upload":{"nb_chunks":2,"z":null,"tags":["a",{"b":1.5}],"a":{"k":"v"}}}"#
        );
    }

    #[test]
    fn nb_chunks_must_be_an_integer_literal() {
        for value in [
            "1.0", "1e0", "1E2", "\"1\"", "true", "null", "[1]", "{}", "-0",
        ] {
            assert_eq!(
                json(&format!(r#"{{"nb_chunks":{value}}}"#)),
                Err(BodyError::NbChunksNotInteger),
                "{value}"
            );
        }
    }

    #[test]
    fn nb_chunks_must_be_within_range() {
        assert_eq!(
            json(r#"{"nb_chunks":0}"#),
            Err(BodyError::NbChunksOutOfRange)
        );
        assert_eq!(
            json(r#"{"nb_chunks":-1}"#),
            Err(BodyError::NbChunksOutOfRange)
        );
        assert_eq!(
            json(r#"{"nb_chunks":10001}"#),
            Err(BodyError::NbChunksOutOfRange)
        );
        assert_eq!(
            json(r#"{"nb_chunks":10000}"#).map(|u| u.nb_chunks),
            Ok(10_000)
        );
        assert_eq!(
            validate_finish_body(None, br#"{"nb_chunks":18446744073709551615}"#, u64::MAX)
                .map(|u| u.nb_chunks),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn missing_nb_chunks_is_rejected() {
        assert_eq!(
            json(r#"{"upload":{"nb":1}}"#),
            Err(BodyError::NbChunksMissing)
        );
        assert_eq!(json("{}"), Err(BodyError::NbChunksMissing));
        assert_eq!(
            json(r#"{"upload":{"upload":{"nb_chunks":1}}}"#),
            Err(BodyError::NbChunksMissing)
        );
    }

    #[test]
    fn upload_beside_other_top_level_keys_is_rejected() {
        assert_eq!(
            json(r#"{"upload":{"nb_chunks":1},"nb_chunks":2}"#),
            Err(BodyError::Shape)
        );
        assert_eq!(
            json(r#"{"nb_chunks":2,"upload":{}}"#),
            Err(BodyError::Shape)
        );
    }

    #[test]
    fn upload_that_is_not_an_object_is_rejected() {
        assert_eq!(json(r#"{"upload":1}"#), Err(BodyError::Shape));
        assert_eq!(json(r#"{"upload":null}"#), Err(BodyError::Shape));
    }

    #[test]
    fn top_level_that_is_not_an_object_is_rejected() {
        assert_eq!(json(r#"[{"nb_chunks":1}]"#), Err(BodyError::Shape));
        assert_eq!(json("1"), Err(BodyError::Shape));
    }

    #[test]
    fn json_duplicate_keys_are_rejected_at_every_level() {
        assert_eq!(
            json(r#"{"nb_chunks":1,"nb_chunks":2}"#),
            Err(BodyError::Duplicate)
        );
        assert_eq!(
            json(r#"{"upload":{"nb_chunks":1},"upload":{"nb_chunks":2}}"#),
            Err(BodyError::Duplicate)
        );
        assert_eq!(
            json(r#"{"nb_chunks":1,"x":[{"a":1,"a":1}]}"#),
            Err(BodyError::Duplicate)
        );
    }

    #[test]
    fn json_duplicate_keys_are_compared_after_unescaping() {
        assert_eq!(
            json(r#"{"nb_chunks":1,"nb_\u0063hunks":2}"#),
            Err(BodyError::Duplicate)
        );
    }

    #[test]
    fn json_nesting_up_to_32_is_accepted_and_deeper_is_rejected() {
        assert!(json(&nested_json(MAX_DEPTH)).is_ok());
        assert_eq!(json(&nested_json(MAX_DEPTH + 1)), Err(BodyError::TooDeep));
        assert_eq!(json(&"[".repeat(100_000)), Err(BodyError::TooDeep));
    }

    #[test]
    fn json_depth_counts_the_upload_object_as_1_in_both_forms() {
        let wrapped = |depth| format!(r#"{{"upload":{}}}"#, nested_json(depth));
        assert!(json(&wrapped(MAX_DEPTH)).is_ok());
        assert_eq!(json(&wrapped(MAX_DEPTH + 1)), Err(BodyError::TooDeep));
    }

    #[test]
    fn canonical_json_of_a_bare_body_at_the_depth_limit_validates_again() {
        let first = json(&nested_json(MAX_DEPTH)).expect("valid");
        assert_eq!(
            json(std::str::from_utf8(&first.canonical).unwrap()),
            Ok(first)
        );
    }

    #[test]
    fn json_trailing_content_is_rejected() {
        assert_eq!(
            json(r#"{"nb_chunks":1} {"nb_chunks":2}"#),
            Err(BodyError::TrailingContent)
        );
        assert_eq!(json(r#"{"nb_chunks":1}x"#), Err(BodyError::TrailingContent));
        assert!(json("{\"nb_chunks\":1}\n\t ").is_ok());
    }

    #[test]
    fn invalid_json_is_rejected_with_its_position() {
        assert_eq!(
            json("{\"nb_chunks\":1,\n\"x\":}"),
            Err(BodyError::Json { line: 2, column: 5 })
        );
        assert!(matches!(
            json(r#"{"nb_chunks":1"#),
            Err(BodyError::Json { .. })
        ));
        assert!(matches!(
            json(r#"{"nb_chunks":1,"x":"\ud800"}"#),
            Err(BodyError::Json { .. })
        ));
    }

    // ---- XML

    #[test]
    fn xml_body_becomes_canonical_json_with_string_fields() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
            <upload>
              <name>a &lt;b&gt; &amp; &#233;&#x1F600;</name>
              <nb_chunks> 12 </nb_chunks>
              <empty/><blank></blank>
              <meta><k>v</k><deep><x>1</x></deep></meta>
              <!-- a comment -->
              <raw><![CDATA[<not markup>]]></raw>
            </upload>"#;
        assert_eq!(
            canonical(xml(body)),
            r#"{"upload":{"nb_chunks":12,"name":"a <b> & é😀","empty":"","blank":"","meta":{"k":"v","deep":{"x":"1"}},"raw":"<not markup>"}}"#
        );
    }

    #[test]
    fn xml_root_must_be_upload() {
        assert_eq!(
            xml("<finish><nb_chunks>1</nb_chunks></finish>"),
            Err(BodyError::Shape)
        );
    }

    #[test]
    fn xml_with_a_second_root_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks></upload><upload><nb_chunks>2</nb_chunks></upload>"),
            Err(BodyError::TrailingContent)
        );
    }

    #[test]
    fn xml_with_text_after_the_root_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks></upload>junk"),
            Err(BodyError::TrailingContent)
        );
        assert!(xml("<upload><nb_chunks>1</nb_chunks></upload>\n<!-- done -->\n").is_ok());
    }

    #[test]
    fn xml_body_with_doctype_is_rejected() {
        let body =
            r#"<!DOCTYPE upload [<!ENTITY n "1">]><upload><nb_chunks>&n;</nb_chunks></upload>"#;
        assert_eq!(xml(body), Err(BodyError::Doctype));
    }

    #[test]
    fn xml_processing_instruction_is_rejected() {
        assert_eq!(
            xml(r#"<?xml-stylesheet href="x"?><upload><nb_chunks>1</nb_chunks></upload>"#),
            Err(BodyError::ProcessingInstruction)
        );
        assert_eq!(
            xml("<upload><?php x?><nb_chunks>1</nb_chunks></upload>"),
            Err(BodyError::ProcessingInstruction)
        );
    }

    #[test]
    fn xml_declaration_out_of_place_is_rejected() {
        assert_eq!(
            xml(r#"<!-- x --><?xml version="1.0"?><upload><nb_chunks>1</nb_chunks></upload>"#),
            Err(BodyError::ProcessingInstruction)
        );
    }

    #[test]
    fn xml_declaring_another_encoding_is_rejected() {
        assert_eq!(
            xml(
                r#"<?xml version="1.0" encoding="ISO-8859-1"?><upload><nb_chunks>1</nb_chunks></upload>"#
            ),
            Err(BodyError::XmlEncoding)
        );
        assert!(xml(
            r#"<?xml version="1.0" encoding="utf-8"?><upload><nb_chunks>1</nb_chunks></upload>"#
        )
        .is_ok());
    }

    #[test]
    fn xml_unknown_entity_reference_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>&one;</nb_chunks></upload>"),
            Err(BodyError::Entity)
        );
    }

    #[test]
    fn xml_character_reference_to_a_forbidden_character_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><x>&#0;</x></upload>"),
            Err(BodyError::Entity)
        );
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><x>&#1;</x></upload>"),
            Err(BodyError::XmlCharacter)
        );
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><x>&#xD800;</x></upload>"),
            Err(BodyError::Entity)
        );
    }

    #[test]
    fn xml_raw_control_character_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><x>\u{1}</x></upload>"),
            Err(BodyError::XmlCharacter)
        );
    }

    #[test]
    fn xml_character_references_are_decoded() {
        assert_eq!(
            xml("<upload><nb_chunks>&#49;&#x30;</nb_chunks></upload>").map(|u| u.nb_chunks),
            Ok(10)
        );
    }

    #[test]
    fn xml_nb_chunks_must_be_plain_digits() {
        for value in [
            "+1", "-1", "1.0", "1e0", "one", "", "1 2", "<n>1</n>", "&#x661;",
        ] {
            assert_eq!(
                xml(&format!("<upload><nb_chunks>{value}</nb_chunks></upload>")),
                Err(BodyError::NbChunksNotInteger),
                "{value}"
            );
        }
    }

    #[test]
    fn xml_nb_chunks_allows_surrounding_whitespace_and_leading_zeros() {
        assert_eq!(
            xml("<upload><nb_chunks>\n\t007 </nb_chunks></upload>").map(|u| u.nb_chunks),
            Ok(7)
        );
    }

    #[test]
    fn xml_nb_chunks_must_be_within_range() {
        assert_eq!(
            xml("<upload><nb_chunks>0</nb_chunks></upload>"),
            Err(BodyError::NbChunksOutOfRange)
        );
        assert_eq!(
            xml("<upload><nb_chunks>10001</nb_chunks></upload>"),
            Err(BodyError::NbChunksOutOfRange)
        );
        assert_eq!(
            xml("<upload><nb_chunks>99999999999999999999999</nb_chunks></upload>"),
            Err(BodyError::NbChunksOutOfRange)
        );
    }

    #[test]
    fn xml_missing_nb_chunks_is_rejected() {
        assert_eq!(xml("<upload/>"), Err(BodyError::NbChunksMissing));
        assert_eq!(xml("<upload> </upload>"), Err(BodyError::NbChunksMissing));
        assert_eq!(
            xml("<upload><x><nb_chunks>1</nb_chunks></x></upload>"),
            Err(BodyError::NbChunksMissing)
        );
    }

    #[test]
    fn xml_root_with_only_text_is_rejected() {
        assert_eq!(xml("<upload>1</upload>"), Err(BodyError::Shape));
    }

    #[test]
    fn xml_duplicate_sibling_elements_are_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><nb_chunks>2</nb_chunks></upload>"),
            Err(BodyError::Duplicate)
        );
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><m><a/><a/></m></upload>"),
            Err(BodyError::Duplicate)
        );
    }

    #[test]
    fn xml_mixed_content_is_rejected() {
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><m>x<a/></m></upload>"),
            Err(BodyError::MixedContent)
        );
        assert_eq!(
            xml("<upload>x<nb_chunks>1</nb_chunks></upload>"),
            Err(BodyError::MixedContent)
        );
    }

    #[test]
    fn xml_attributes_other_than_namespace_declarations_are_rejected() {
        assert_eq!(
            xml(r#"<upload id="1"><nb_chunks>1</nb_chunks></upload>"#),
            Err(BodyError::Attribute)
        );
        assert_eq!(
            xml(r#"<upload><nb_chunks unit="x">1</nb_chunks></upload>"#),
            Err(BodyError::Attribute)
        );
        assert!(
            xml(r#"<upload xmlns="urn:u" xmlns:a="urn:a"><nb_chunks>1</nb_chunks></upload>"#)
                .is_ok()
        );
    }

    #[test]
    fn xml_prefixed_or_invalid_element_names_are_rejected() {
        assert_eq!(
            xml("<a:upload><nb_chunks>1</nb_chunks></a:upload>"),
            Err(BodyError::XmlName)
        );
        assert_eq!(
            xml("<upload><nb_chunks>1</nb_chunks><1x/></upload>"),
            Err(BodyError::XmlName)
        );
    }

    #[test]
    fn xml_nesting_up_to_32_is_accepted_and_deeper_is_rejected() {
        assert!(xml(&nested_xml(MAX_DEPTH)).is_ok());
        assert_eq!(xml(&nested_xml(MAX_DEPTH + 1)), Err(BodyError::TooDeep));
    }

    #[test]
    fn malformed_xml_is_rejected() {
        for body in [
            "<upload><nb_chunks>1</nb_chunks>",
            "<upload><nb_chunks>1</upload>",
            "<upload><nb_chunks>1</nb_chunks></upload></x>",
            "<upload><nb_chunks>1 & 2</nb_chunks></upload>",
            "<upload",
        ] {
            assert!(matches!(xml(body), Err(BodyError::Xml { .. })), "{body}");
        }
    }

    #[test]
    fn errors_have_distinct_reasons_and_never_echo_the_body() {
        let errors = [
            json(r#"{"SECRET":1,"SECRET":2}"#),
            json(r#"{"nb_chunks":"SECRET"}"#),
            json(r#"{"SECRET""#),
            xml("<SECRET/>"),
            xml("<upload><nb_chunks>1</nb_chunks></upload>SECRET"),
            xml("<upload SECRET='1'/>"),
            xml("<upload>&SECRET;</upload>"),
        ]
        .map(|result| result.expect_err("an invalid body"));
        let mut reasons: Vec<_> = errors.iter().map(BodyError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        for error in errors {
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
    }

    fn field_name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_.-]{0,8}".prop_filter("not a key the shape reads", |name| {
            name != "nb_chunks" && name != "upload"
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Short decimals only: without serde_json's `float_roundtrip` feature, reading a
            // 17-digit float back may land one ULP away, so those are no fixpoint.
            (any::<i32>(), 0..4u32).prop_filter_map("finite", |(n, scale)| {
                Number::from_f64(f64::from(n) / 10f64.powi(scale as i32)).map(Value::Number)
            }),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((field_name(), inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn other_json_fields_reach_the_upstream_with_their_exact_text() {
        let body = r#"{"upload": {"nb_chunks": 2, "big": 12345678901234567890123, "huge": -123456789012345678901234567890,
            "one": 1.0, "exp": 1e5, "neg_zero": -0, "s": "caf\u00e9 \"q\" ", "nested": {"a": [1 , 2.50, {"b" : null}]}}}"#;
        let upload = json(body).unwrap();
        assert_eq!(
            String::from_utf8(upload.canonical).unwrap(),
            r#"{"upload":{"nb_chunks":2,"big":12345678901234567890123,"huge":-123456789012345678901234567890,"one":1.0,"exp":1e5,"neg_zero":-0,"s":"caf\u00e9 \"q\" ","nested":{"a":[1,2.50,{"b":null}]}}}"#
        );
    }

    #[test]
    fn bare_json_fields_keep_their_text_too() {
        let upload = json(r#"{"x": 100000000000000000000001, "nb_chunks": 3}"#).unwrap();
        assert_eq!(
            upload.canonical,
            br#"{"upload":{"nb_chunks":3,"x":100000000000000000000001}}"#
        );
    }

    #[test]
    fn an_escaped_spelling_of_nb_chunks_is_the_same_key() {
        // The decoded key is what the upstream reads: it counts as nb_chunks (a duplicate here).
        assert_eq!(
            json(r#"{"nb_chunks": 1, "nb\u005fchunks": 9}"#),
            Err(BodyError::Duplicate)
        );
        let upload = json(r#"{"nb\u005fchunks": 4}"#).unwrap();
        assert_eq!(upload.canonical, br#"{"upload":{"nb_chunks":4}}"#);
    }

    proptest! {
        #[test]
        fn validate_never_panics_on_arbitrary_bytes(
            content_type in prop::option::of("[a-z/+*;= -]{0,30}"),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = validate_finish_body(content_type.as_deref(), &body, MAX);
        }

        #[test]
        fn validate_never_panics_on_structured_input(
            body in r#"(<upload>|</upload>|<nb_chunks>|</nb_chunks>|<a>|</a>|<a/>|<!--x-->|<![CDATA[y]]>|&amp;|&#49;|&x;|<?pi?>|<?xml version="1.0"?>|\{|\}|\[|\]|"nb_chunks"|"upload"|:|,|1|-1|1\.5|null| |x){0,30}"#,
        ) {
            let _ = validate_finish_body(None, body.as_bytes(), MAX);
        }

        #[test]
        fn canonical_output_of_a_valid_json_body_revalidates_to_itself(
            nb_chunks in 1..=MAX,
            fields in prop::collection::vec((field_name(), json_value()), 0..5),
            wrapped in any::<bool>(),
        ) {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert("nb_chunks".into(), nb_chunks.into());
            let mut document = Value::Object(object);
            if wrapped {
                document = serde_json::json!({ "upload": document });
            }
            let body = serde_json::to_vec_pretty(&document).expect("serialisable");
            let first = validate_finish_body(None, &body, MAX).expect("valid");
            prop_assert_eq!(first.nb_chunks, nb_chunks);
            let again = validate_finish_body(Some("application/json"), &first.canonical, MAX)
                .expect("canonical is valid");
            prop_assert_eq!(again, first);
        }

        #[test]
        fn canonical_output_of_a_valid_xml_body_revalidates_to_itself(
            nb_chunks in 1..=MAX,
            fields in prop::collection::btree_map(field_name(), r"[^<&\x00-\x1F\x{FFFE}\x{FFFF}]{0,10}", 0..5),
        ) {
            let mut body = format!("<upload><nb_chunks>{nb_chunks}</nb_chunks>");
            for (name, text) in &fields {
                body.push_str(&format!("<{name}>{text}</{name}>"));
            }
            body.push_str("</upload>");
            let first = validate_finish_body(Some("text/xml"), body.as_bytes(), MAX);
            let first = first.expect("valid");
            let again = validate_finish_body(None, &first.canonical, MAX).expect("canonical is valid");
            prop_assert_eq!(again, first);
        }
    }
}
