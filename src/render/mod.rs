//! Response rendering: turns a JSON document (the upstream's answer or the gateway's own
//! error envelope) into the bytes the client asked for. Pure: no I/O, no Pingora types.
//! It must never invent data, turn a key into an attribute, or emit characters XML cannot carry.
//!
//! `show_null=false` removes object *keys* whose value is null, at every depth (inside arrays'
//! objects too); null array *elements* are kept, since dropping one would shift the others.
//! [`json`] and [`xml`] hold the two writers and the details of each mapping.

pub mod json;
pub mod node;
pub mod xml;

use std::borrow::Cow;

use serde_json::Value;

use node::Node;

pub use crate::media::{RenderOptions, ResponseFormat};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Renders `value` as the client asked: null keys removed unless `show_null`, then JSON
/// (compact, or 2-space pretty when `human`) or XML. Never fails.
/// Recursion follows the document's nesting, which is at most 128 for a parsed body.
#[must_use]
pub fn render_value(value: &Value, opts: RenderOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    render_into(value, opts, &mut out);
    out
}

/// Like [`render_value`], appending to `out` (for a caller that reuses a buffer).
pub fn render_into(value: &Value, opts: RenderOptions, out: &mut Vec<u8>) {
    render_node(&Node::from(value), opts, out);
}

/// The one dispatch on the options, for documents read from bytes and views of a `Value`.
fn render_node(node: &Node<'_>, opts: RenderOptions, out: &mut Vec<u8>) {
    match opts.format {
        ResponseFormat::Json => json::write_node(node, opts.human, opts.show_null, out),
        ResponseFormat::Xml => xml::write_document(node, opts.human, opts.show_null, out),
    }
}

/// Renders an upstream body as the client asked, or `None` when it is not JSON (empty,
/// truncated, HTML, invalid UTF-8, nested deeper than `serde_json`'s limit of 128): the caller
/// decides what that means (a JSON-labelled answer that is not JSON is a broken upstream). A
/// leading UTF-8 BOM is tolerated. Numbers keep the upstream's own text (a 30-digit integer,
/// `1.10`, `1e400`); a key named twice keeps its first place and its last value.
#[must_use]
pub fn render_upstream_body(body: &[u8], opts: RenderOptions) -> Option<Vec<u8>> {
    let json = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    // Read as a borrowed document: strings copied only when escaped, numbers as written.
    let node = Node::parse(std::str::from_utf8(json).ok()?)?;
    let mut out = Vec::with_capacity(capacity_hint(json.len(), opts));
    render_node(&node, opts, &mut out);
    Some(out)
}

/// Whether the caller may skip [`render_upstream_body`] and forward the upstream's JSON bytes
/// as they are: JSON, not human, nulls kept. Rendering would then only re-serialize the same
/// document compactly, equal as a value but not always byte for byte (the upstream's own
/// whitespace, string escapes and number spellings, a BOM, duplicate keys would otherwise be
/// normalised). A caller that must guarantee compact bytes renders anyway; the result is
/// still correct.
#[must_use]
pub fn is_passthrough(opts: RenderOptions) -> bool {
    opts.format == ResponseFormat::Json && !opts.human && opts.show_null
}

/// Renders the API's error envelope (SPEC §4.7), `{"error":{"error_code":…,"error_message":…}}`
/// or `<error><error_code>…</error_code><error_message>…</error_message></error>`, like any
/// other response.
#[must_use]
pub fn render_error_envelope(
    error_code: &str,
    error_message: &str,
    opts: RenderOptions,
) -> Vec<u8> {
    let fields = Node::Object(vec![
        (
            Cow::Borrowed("error_code"),
            Node::String(Cow::Borrowed(error_code)),
        ),
        (
            Cow::Borrowed("error_message"),
            Node::String(Cow::Borrowed(error_message)),
        ),
    ]);
    let envelope = Node::Object(vec![(Cow::Borrowed("error"), fields)]);
    let mut out = Vec::with_capacity(256);
    render_node(&envelope, opts, &mut out);
    out
}

/// A first buffer size that the usual response fills without growing: XML repeats every key
/// in the end tag and pretty printing adds indentation, roughly doubling the size.
fn capacity_hint(json_len: usize, opts: RenderOptions) -> usize {
    if opts.format == ResponseFormat::Json && !opts.human {
        json_len + 16
    } else {
        json_len.saturating_mul(2).saturating_add(128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn opts(format: ResponseFormat, human: bool, show_null: bool) -> RenderOptions {
        RenderOptions {
            format,
            human,
            show_null,
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn content_types_are_the_specified_ones() {
        assert_eq!(ResponseFormat::Json.content_type(), "application/json");
        assert_eq!(
            ResponseFormat::Xml.content_type(),
            "application/xml; charset=utf-8"
        );
    }

    #[test]
    fn defaults_are_compact_json_without_null_keys() {
        let value = json!({"a": null, "b": {"c": null, "d": 1}, "e": [{"f": null}]});
        assert_eq!(
            text(render_value(&value, RenderOptions::default())),
            r#"{"b":{"d":1},"e":[{}]}"#
        );
    }

    #[test]
    fn show_null_keeps_null_keys_in_json_and_xml() {
        let value = json!({"upload": {"a": null}});
        assert_eq!(
            text(render_value(
                &value,
                opts(ResponseFormat::Json, false, true)
            )),
            r#"{"upload":{"a":null}}"#
        );
        assert!(
            text(render_value(&value, opts(ResponseFormat::Xml, false, true)))
                .contains(r#"<a xsi:nil="true"/>"#)
        );
    }

    #[test]
    fn error_envelope_renders_as_exact_xml() {
        let out = render_error_envelope(
            "0x0230001",
            "Invalid Input",
            opts(ResponseFormat::Xml, false, false),
        );
        assert_eq!(
            text(out),
            format!("{DECL}<error><error_code>0x0230001</error_code><error_message>Invalid Input</error_message></error>")
        );
    }

    #[test]
    fn error_envelope_renders_as_the_apis_json() {
        let out = render_error_envelope(
            "0x0000003",
            "Invalid access token",
            RenderOptions::default(),
        );
        assert_eq!(
            text(out),
            r#"{"error":{"error_code":"0x0000003","error_message":"Invalid access token"}}"#
        );
        let human = render_error_envelope(
            "0x0000003",
            "Invalid access token",
            opts(ResponseFormat::Json, true, false),
        );
        assert_eq!(
            text(human),
            "{\n  \"error\": {\n    \"error_code\": \"0x0000003\",\n    \"error_message\": \"Invalid access token\"\n  }\n}"
        );
    }

    #[test]
    fn documented_response_renders_as_pretty_json() {
        let body = br#"{"upload":{"status":"COMPLETING","nb_chunks":1,"pipeline":{"id":"547f"},"file":null}}"#;
        let out = render_upstream_body(body, opts(ResponseFormat::Json, true, false)).unwrap();
        let expected = "{\n  \"upload\": {\n    \"status\": \"COMPLETING\",\n    \"nb_chunks\": 1,\n    \"pipeline\": {\n      \"id\": \"547f\"\n    }\n  }\n}";
        assert_eq!(text(out), expected);
    }

    #[test]
    fn upstream_body_renders_as_xml() {
        let body = br#"{"upload":{"nb_chunks":1,"tags":["a","b"]}}"#;
        let out = render_upstream_body(body, opts(ResponseFormat::Xml, false, false)).unwrap();
        assert_eq!(text(out), format!("{DECL}<upload><nb_chunks>1</nb_chunks><tags><item>a</item><item>b</item></tags></upload>"));
    }

    #[test]
    fn upstream_body_with_bom_is_rendered() {
        let out = render_upstream_body(b"\xEF\xBB\xBF {\"a\": 1}", RenderOptions::default());
        assert_eq!(out.map(text).as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn non_json_upstream_body_is_not_rendered() {
        let xml = opts(ResponseFormat::Xml, true, false);
        for body in [
            &b""[..],
            b"   ",
            b"<html>502</html>",
            b"{\"a\":",
            b"{\"a\":1} trailing",
            b"\xEF\xBB\xBF",
            b"\"\xFF\"",
            b"1e999",
            b"\xEF\xBB\xBF\xEF\xBB\xBF{}",
        ] {
            assert_eq!(render_upstream_body(body, xml), None, "{body:?}");
        }
    }

    #[test]
    fn nesting_beyond_serde_json_limit_is_passed_through_not_rendered() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            render_upstream_body(deep.as_bytes(), opts(ResponseFormat::Xml, true, true)),
            None
        );
    }

    #[test]
    fn passthrough_only_for_compact_json_with_nulls_kept() {
        assert!(is_passthrough(opts(ResponseFormat::Json, false, true)));
        assert!(!is_passthrough(RenderOptions::default()));
        assert!(!is_passthrough(opts(ResponseFormat::Json, true, true)));
        assert!(!is_passthrough(opts(ResponseFormat::Xml, false, true)));
    }

    #[test]
    fn passthrough_options_render_an_equal_document() {
        let body = br#"{ "b": null, "a": [1, 2.5, "\u00e9"] }"#;
        let out = render_upstream_body(body, opts(ResponseFormat::Json, false, true)).unwrap();
        let reparsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(reparsed, serde_json::from_slice::<Value>(body).unwrap());
        assert_eq!(text(out), r#"{"b":null,"a":[1,2.5,"é"]}"#);
    }

    /// Found by a black-box attack: numbers went through f64 on every rendered answer.
    #[test]
    fn upstream_numbers_keep_their_digits_in_json_and_xml() {
        let body = br#"{"upload":{"n":123456789012345678901234567890,"f":1.10,"e":1E2,"z":-0}}"#;
        let json = render_upstream_body(body, RenderOptions::default()).unwrap();
        assert_eq!(
            text(json),
            r#"{"upload":{"n":123456789012345678901234567890,"f":1.10,"e":1E2,"z":-0}}"#
        );
        let pretty = render_upstream_body(body, opts(ResponseFormat::Json, true, false)).unwrap();
        assert!(text(pretty).contains("\"n\": 123456789012345678901234567890,"));
        let xml = render_upstream_body(body, opts(ResponseFormat::Xml, false, false)).unwrap();
        assert_eq!(
            text(xml),
            format!("{DECL}<upload><n>123456789012345678901234567890</n><f>1.10</f><e>1E2</e><z>-0</z></upload>")
        );
    }

    #[test]
    fn render_into_appends_to_the_buffer() {
        let mut out = b"x".to_vec();
        render_into(&json!({"a": 1}), RenderOptions::default(), &mut out);
        assert_eq!(text(out), r#"x{"a":1}"#);
    }

    proptest! {
        #[test]
        fn any_upstream_bytes_render_or_pass_through_without_panicking(
            body in prop::collection::vec(any::<u8>(), 0..64),
            format in prop::sample::select(vec![ResponseFormat::Json, ResponseFormat::Xml]),
            human in any::<bool>(),
            show_null in any::<bool>(),
        ) {
            // Rendered exactly when it is JSON (the same bytes as the Value's rendering is the
            // next property's: random bytes may spell numbers that keep their own text).
            let options = opts(format, human, show_null);
            let parsed = serde_json::from_slice::<Value>(&body).ok();
            prop_assert_eq!(render_upstream_body(&body, options).is_some(), parsed.is_some());
        }

        #[test]
        fn upstream_json_renders_like_the_parsed_value(
            doc in json::tests::arb_value(),
            format in prop::sample::select(vec![ResponseFormat::Json, ResponseFormat::Xml]),
            human in any::<bool>(),
            show_null in any::<bool>(),
        ) {
            let options = opts(format, human, show_null);
            let body = serde_json::to_vec_pretty(&doc).unwrap();
            prop_assert_eq!(render_upstream_body(&body, options), Some(render_value(&doc, options)));
        }
    }
}
