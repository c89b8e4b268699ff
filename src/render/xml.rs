//! XML rendering of a response document (SPEC §4.6), written straight into the response buffer
//! in one pass. It must never turn a key into an attribute or text, never emit an element name
//! that is not an XML 1.0 Name, and never emit a character XML 1.0 cannot carry.
//!
//! The mapping:
//! - `<?xml version="1.0" encoding="UTF-8"?>` first; the root follows directly when compact, on
//!   the next line when human.
//! - A document that is an object with exactly one (rendered) key: that key is the root element
//!   (`<upload>`, `<error>`). Anything else (several keys, none, an array, a scalar, null): the
//!   root is `<response>` holding the document. With null keys removed, `{"upload":…,"x":null}`
//!   has one key, so its root is `<upload>`.
//! - Objects become child elements in key order; an array becomes one `<item>` per element
//!   inside the key's element (nested arrays nest `<item>`s); numbers are their JSON text,
//!   booleans `true`/`false`.
//! - Null, when rendered, is `<k xsi:nil="true"/>`, and the root element then declares
//!   `xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"`. The declaration appears only when
//!   at least one nil does, so ordinary answers and the error envelope carry no attribute at all.
//! - An empty string, empty array or empty object is the empty element `<k/>` (no `xsi:nil`).
//! - Text escapes `&`, `<`, `>`, and writes CR as `&#13;` so parsers do not turn it into LF.
//!   Characters XML 1.0 cannot carry (U+0000–U+0008, U+000B, U+000C, U+000E–U+001F, U+FFFE,
//!   U+FFFF) become U+FFFD. Everything else, C1 controls included, is legal and kept.
//! - Human mode indents by 2 spaces, one element per line, leaf elements on one line; it never
//!   adds whitespace inside a leaf, so text is identical in both modes. No trailing newline.
//! - Element names: see [`element_name`].

use crate::xml_names::{is_name_char, is_name_start_char, is_unprefixed_name};
use std::borrow::Cow;

use serde_json::Value;

use super::node::Node;

const DECLARATION: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?>"#;
const XSI_NAMESPACE: &[u8] = br#" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;
const NIL: &[u8] = br#" xsi:nil="true"/>"#;
const DEFAULT_ROOT: &str = "response";
const ARRAY_ITEM: &str = "item";
const REPLACEMENT_CHARACTER: &[u8] = "\u{FFFD}".as_bytes();

/// Appends `value` as an XML document to `out`, null keys included (rendered as `xsi:nil`).
pub fn write_xml(value: &Value, human: bool, out: &mut Vec<u8>) {
    write_document(&Node::from(value), human, true, out);
}

/// Appends `value` as an XML document to `out` without the null-valued keys: the same bytes as
/// [`crate::render::json::strip_nulls`] followed by [`write_xml`], without copying the
/// document. Null array elements are kept and render as `<item xsi:nil="true"/>`.
pub fn write_xml_skipping_null_keys(value: &Value, human: bool, out: &mut Vec<u8>) {
    write_document(&Node::from(value), human, false, out);
}

/// The element name a JSON key is written as: the key itself when it is already an XML 1.0
/// (Fifth Edition) Name without a colon, which is the common case and borrows; otherwise a
/// deterministic repair:
/// - every character that cannot appear in a name, and every `:` (so no namespace prefix is
///   ever produced), becomes `_`: `a b` → `a_b`, `@x` → `_x`, `$text` → `_text`, `xsi:nil` →
///   `xsi_nil`;
/// - a first character that may appear in a name but not start one (digit, `-`, `.`, U+00B7,
///   combining marks) gets a `_` in front: `1st` → `_1st`;
/// - the empty key becomes `_`.
///
/// Names starting with `xml` are kept: they are reserved for future W3C use, not ill-formed,
/// and renaming them would mangle ordinary keys such as `xml_url`. Distinct keys may map to
/// the same name (`a b` and `a_b`); XML allows repeated sibling elements, so the document
/// stays well-formed.
#[must_use]
pub fn element_name(key: &str) -> Cow<'_, str> {
    if is_unprefixed_name(key) {
        return Cow::Borrowed(key);
    }
    let mut name = String::with_capacity(key.len() + 1);
    let mut chars = key.chars();
    match chars.next() {
        Some(first) if is_name_start_char(first) => name.push(first),
        Some(first) if is_name_char(first) => {
            name.push('_');
            name.push(first);
        }
        // Empty key, or a first character that is not a name character at all.
        _ => name.push('_'),
    }
    name.extend(chars.map(|c| if is_name_char(c) { c } else { '_' }));
    Cow::Owned(name)
}

/// Appends `value` as an XML document to `out`, its null-valued keys only when
/// `keep_null_keys`.
pub(crate) fn write_document(
    value: &Node<'_>,
    human: bool,
    keep_null_keys: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(DECLARATION);
    if human {
        out.push(b'\n');
    }
    let (root, content) = root_of(value, keep_null_keys);
    let declare_xsi = renders_nil(content, keep_null_keys);
    let mut writer = XmlWriter {
        out,
        human,
        keep_null_keys,
    };
    writer.element(&root, content, 0, declare_xsi);
}

/// The root element's name and the value it holds.
fn root_of<'n, 'a>(value: &'n Node<'a>, keep_null_keys: bool) -> (Cow<'n, str>, &'n Node<'a>) {
    if let Node::Object(map) = value {
        let mut rendered = map.iter().filter(|(_, v)| keep_null_keys || !v.is_null());
        if let (Some((key, only)), None) = (rendered.next(), rendered.next()) {
            return (element_name(key), only);
        }
    }
    (Cow::Borrowed(DEFAULT_ROOT), value)
}

/// Whether rendering `value` writes at least one `xsi:nil`, so the root must declare `xsi`.
fn renders_nil(value: &Node<'_>, keep_null_keys: bool) -> bool {
    match value {
        Node::Null => true,
        Node::Array(items) => items.iter().any(|v| renders_nil(v, keep_null_keys)),
        Node::Object(map) => map.iter().any(|(_, v)| match v {
            Node::Null => keep_null_keys,
            other => renders_nil(other, keep_null_keys),
        }),
        Node::Bool(_) | Node::Number(_) | Node::String(_) => false,
    }
}

struct XmlWriter<'o> {
    out: &'o mut Vec<u8>,
    human: bool,
    keep_null_keys: bool,
}

impl XmlWriter<'_> {
    /// Writes one element holding `value`; `depth` 0 is the root.
    fn element(&mut self, name: &str, value: &Node<'_>, depth: usize, declare_xsi: bool) {
        if depth > 0 {
            self.line_break(depth);
        }
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        if declare_xsi {
            self.out.extend_from_slice(XSI_NAMESPACE);
        }
        match value {
            Node::Null => self.out.extend_from_slice(NIL),
            Node::Bool(flag) => {
                self.out.push(b'>');
                self.out
                    .extend_from_slice(if *flag { b"true" } else { b"false" });
                self.end_tag(name);
            }
            Node::Number(text) => {
                self.out.push(b'>');
                // The number's JSON text, as the upstream wrote it: no escaping needed.
                self.out.extend_from_slice(text.as_bytes());
                self.end_tag(name);
            }
            Node::String(text) if text.is_empty() => self.out.extend_from_slice(b"/>"),
            Node::String(text) => {
                self.out.push(b'>');
                write_text(self.out, text);
                self.end_tag(name);
            }
            Node::Array(items) if items.is_empty() => self.out.extend_from_slice(b"/>"),
            Node::Array(items) => {
                self.out.push(b'>');
                for item in items {
                    self.element(ARRAY_ITEM, item, depth + 1, false);
                }
                self.line_break(depth);
                self.end_tag(name);
            }
            Node::Object(map) => {
                // Whether any child is rendered is only known while iterating, so the start
                // tag is closed lazily instead of scanning the map twice.
                let mut open = false;
                for (key, child) in map {
                    if child.is_null() && !self.keep_null_keys {
                        continue;
                    }
                    if !open {
                        self.out.push(b'>');
                        open = true;
                    }
                    self.element(&element_name(key), child, depth + 1, false);
                }
                if open {
                    self.line_break(depth);
                    self.end_tag(name);
                } else {
                    self.out.extend_from_slice(b"/>");
                }
            }
        }
    }

    fn end_tag(&mut self, name: &str) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
    }

    /// In human mode, starts a new line indented for `depth`; nothing in compact mode.
    fn line_break(&mut self, depth: usize) {
        if self.human {
            self.out.push(b'\n');
            let indented = self.out.len() + 2 * depth;
            self.out.resize(indented, b' ');
        }
    }
}

/// Bytes of text that cannot be copied as they are: markup, CR, the C0 controls XML 1.0
/// forbids, and 0xEF, the lead byte of U+FFFE and U+FFFF (looked at further when met).
fn needs_attention(byte: u8) -> bool {
    matches!(
        byte,
        0x00..=0x08 | 0x0B | 0x0C | 0x0D | 0x0E..=0x1F | b'&' | b'<' | b'>' | 0xEF
    )
}

/// Appends `text` escaped for element content, copying each unchanged run in one piece.
fn write_text(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = rest.iter().position(|&byte| needs_attention(byte)) {
        let Some((clean, special)) = rest.split_at_checked(at) else {
            break;
        };
        out.extend_from_slice(clean);
        let (replacement, tail): (&[u8], &[u8]) = match special {
            [b'&', tail @ ..] => (b"&amp;", tail),
            [b'<', tail @ ..] => (b"&lt;", tail),
            [b'>', tail @ ..] => (b"&gt;", tail),
            [b'\r', tail @ ..] => (b"&#13;", tail),
            [0xEF, 0xBF, 0xBE | 0xBF, tail @ ..] => (REPLACEMENT_CHARACTER, tail),
            // Any other character with this lead byte is legal: copy the byte, and its
            // continuation bytes are copied with the next clean run.
            [0xEF, tail @ ..] => (&[0xEF], tail),
            [_, tail @ ..] => (REPLACEMENT_CHARACTER, tail),
            [] => break,
        };
        out.extend_from_slice(replacement);
        rest = tail;
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::json::strip_nulls;
    use proptest::prelude::*;
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    use quick_xml::reader::NsReader;
    use serde_json::json;

    const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn xml(value: &Value, human: bool, show_null: bool) -> String {
        let mut out = Vec::new();
        if show_null {
            write_xml(value, human, &mut out);
        } else {
            write_xml_skipping_null_keys(value, human, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn compact(value: &Value) -> String {
        xml(value, false, true)
    }

    #[test]
    fn specification_example_renders_exactly() {
        let doc = json!({"upload": {"nb_chunks": 1, "tags": ["a", "b"]}});
        assert_eq!(
            compact(&doc),
            format!("{DECL}<upload><nb_chunks>1</nb_chunks><tags><item>a</item><item>b</item></tags></upload>")
        );
    }

    #[test]
    fn error_envelope_renders_with_error_root_and_no_attributes() {
        let doc = json!({"error": {"error_code": "0x0230001", "error_message": "Invalid Input"}});
        assert_eq!(
            compact(&doc),
            format!("{DECL}<error><error_code>0x0230001</error_code><error_message>Invalid Input</error_message></error>")
        );
    }

    #[test]
    fn documented_response_renders_as_pretty_xml() {
        let doc = json!({"upload": {
            "form_post_url": "https://s3-eu-west-1.amazonaws.com/prd-xmc-xvid-s3-eu-west-1/",
            "status": "COMPLETING",
            "nb_chunks": 1,
            "storage_type": "S3",
            "object_key": "uploads/test.mp4",
            "pipeline": {"id": "547f3eede4b025bcbff38657"},
            "file": {"id": "598358fe6baa605b1e33754e"},
            "id": "598358fe6baa605b1e33754e"
        }});
        let expected = format!(
            "{DECL}
<upload>
  <form_post_url>https://s3-eu-west-1.amazonaws.com/prd-xmc-xvid-s3-eu-west-1/</form_post_url>
  <status>COMPLETING</status>
  <nb_chunks>1</nb_chunks>
  <storage_type>S3</storage_type>
  <object_key>uploads/test.mp4</object_key>
  <pipeline>
    <id>547f3eede4b025bcbff38657</id>
  </pipeline>
  <file>
    <id>598358fe6baa605b1e33754e</id>
  </file>
  <id>598358fe6baa605b1e33754e</id>
</upload>"
        );
        assert_eq!(xml(&doc, true, false), expected);
    }

    #[test]
    fn human_mode_puts_items_and_empty_elements_on_their_own_lines() {
        let doc = json!({"a": {"list": [[1], "x", []], "empty": {}}});
        let expected = format!(
            "{DECL}
<a>
  <list>
    <item>
      <item>1</item>
    </item>
    <item>x</item>
    <item/>
  </list>
  <empty/>
</a>"
        );
        assert_eq!(xml(&doc, true, true), expected);
    }

    #[test]
    fn human_mode_never_adds_whitespace_inside_text() {
        let doc = json!({"a": {"b": "  spaced\nlines  "}});
        assert!(xml(&doc, true, true).contains("<b>  spaced\nlines  </b>"));
    }

    #[test]
    fn compact_declaration_is_followed_directly_by_the_root() {
        assert!(compact(&json!({"a": 1})).starts_with(&format!("{DECL}<a>")));
        assert!(xml(&json!({"a": 1}), true, true).starts_with(&format!("{DECL}\n<a>")));
    }

    #[test]
    fn several_top_level_keys_are_wrapped_in_response() {
        assert_eq!(
            compact(&json!({"a": 1, "b": 2})),
            format!("{DECL}<response><a>1</a><b>2</b></response>")
        );
    }

    #[test]
    fn empty_top_level_object_is_an_empty_response() {
        assert_eq!(compact(&json!({})), format!("{DECL}<response/>"));
    }

    #[test]
    fn top_level_array_becomes_items_of_response() {
        assert_eq!(
            compact(&json!([1, "x"])),
            format!("{DECL}<response><item>1</item><item>x</item></response>")
        );
    }

    #[test]
    fn top_level_scalar_is_the_text_of_response() {
        assert_eq!(
            compact(&json!("hi")),
            format!("{DECL}<response>hi</response>")
        );
        assert_eq!(
            compact(&json!(true)),
            format!("{DECL}<response>true</response>")
        );
    }

    #[test]
    fn removed_null_key_does_not_count_towards_the_root_decision() {
        let doc = json!({"upload": {"id": "x"}, "debug": null});
        assert_eq!(
            xml(&doc, false, false),
            format!("{DECL}<upload><id>x</id></upload>")
        );
        assert!(xml(&doc, false, true).contains("<response"));
    }

    #[test]
    fn kept_null_renders_xsi_nil_with_namespace_on_root() {
        let doc = json!({"upload": {"id": "x", "deep": {"gone": null}}});
        assert_eq!(
            xml(&doc, false, true),
            format!(
                r#"{DECL}<upload xmlns:xsi="{XSI}"><id>x</id><deep><gone xsi:nil="true"/></deep></upload>"#
            )
        );
    }

    #[test]
    fn null_key_is_removed_by_default_and_no_namespace_is_declared() {
        let doc = json!({"upload": {"id": "x", "deep": {"gone": null}}});
        assert_eq!(
            xml(&doc, false, false),
            format!("{DECL}<upload><id>x</id><deep/></upload>")
        );
    }

    #[test]
    fn null_array_element_renders_as_nil_item_even_without_null_keys() {
        let doc = json!({"list": [null, 1]});
        assert_eq!(
            xml(&doc, false, false),
            format!(r#"{DECL}<list xmlns:xsi="{XSI}"><item xsi:nil="true"/><item>1</item></list>"#)
        );
    }

    #[test]
    fn null_document_is_a_nil_response() {
        assert_eq!(
            compact(&Value::Null),
            format!(r#"{DECL}<response xmlns:xsi="{XSI}" xsi:nil="true"/>"#)
        );
    }

    #[test]
    fn single_null_key_is_a_nil_root_when_kept() {
        assert_eq!(
            compact(&json!({"upload": null})),
            format!(r#"{DECL}<upload xmlns:xsi="{XSI}" xsi:nil="true"/>"#)
        );
        assert_eq!(
            xml(&json!({"upload": null}), false, false),
            format!("{DECL}<response/>")
        );
    }

    #[test]
    fn empty_string_is_an_empty_element_without_nil() {
        assert_eq!(
            compact(&json!({"a": {"s": ""}})),
            format!("{DECL}<a><s/></a>")
        );
    }

    #[test]
    fn empty_array_and_empty_object_are_empty_elements() {
        assert_eq!(
            compact(&json!({"a": {"l": [], "o": {}}})),
            format!("{DECL}<a><l/><o/></a>")
        );
    }

    #[test]
    fn nested_arrays_nest_items() {
        assert_eq!(
            compact(&json!({"m": [[1, 2], []]})),
            format!("{DECL}<m><item><item>1</item><item>2</item></item><item/></m>")
        );
    }

    #[test]
    fn numbers_render_as_their_json_text() {
        for number in [
            json!(0),
            json!(-3),
            json!(u64::MAX),
            json!(1.5),
            json!(1e-7),
            json!(1e300),
        ] {
            let expected = format!("{DECL}<n>{}</n>", serde_json::to_string(&number).unwrap());
            assert_eq!(compact(&json!({ "n": number })), expected);
        }
    }

    #[test]
    fn booleans_render_as_true_and_false() {
        assert_eq!(
            compact(&json!({"a": {"t": true, "f": false}})),
            format!("{DECL}<a><t>true</t><f>false</f></a>")
        );
    }

    #[test]
    fn markup_characters_in_text_are_escaped() {
        assert_eq!(
            compact(&json!({"a": "<b>&\"'</b>]]>"})),
            format!("{DECL}<a>&lt;b&gt;&amp;\"'&lt;/b&gt;]]&gt;</a>")
        );
    }

    #[test]
    fn carriage_return_is_written_as_character_reference() {
        assert_eq!(
            compact(&json!({"a": "x\r\ny"})),
            format!("{DECL}<a>x&#13;\ny</a>")
        );
    }

    #[test]
    fn control_characters_are_never_emitted_raw() {
        let text: String = (0u8..0x20).map(char::from).collect();
        let out = compact(&json!({ "a": text }));
        assert!(
            !out.bytes().any(|b| b < 0x20 && b != b'\t' && b != b'\n'),
            "{out:?}"
        );
        let expected_text: String = (0u8..0x20)
            .map(|b| match b {
                b'\t' => "\t".to_string(),
                b'\n' => "\n".to_string(),
                b'\r' => "&#13;".to_string(),
                _ => "\u{FFFD}".to_string(),
            })
            .collect();
        assert_eq!(out, format!("{DECL}<a>{expected_text}</a>"));
    }

    #[test]
    fn noncharacters_fffe_and_ffff_are_replaced_but_neighbours_are_kept() {
        // U+FFFD and U+EFBF.. share the 0xEF lead byte with the forbidden ones.
        let out = compact(&json!({"a": "\u{FFFE}\u{FFFF}\u{FFFD}\u{FFBE}\u{F000}é\u{10FFFF}"}));
        assert_eq!(
            out,
            format!("{DECL}<a>\u{FFFD}\u{FFFD}\u{FFFD}\u{FFBE}\u{F000}é\u{10FFFF}</a>")
        );
    }

    #[test]
    fn c1_controls_and_line_separators_are_legal_and_kept() {
        let text = "\u{7F}\u{85}\u{9F}\u{2028}";
        assert_eq!(
            compact(&json!({ "a": text })),
            format!("{DECL}<a>{text}</a>")
        );
    }

    #[test]
    fn key_starting_with_at_sign_never_becomes_an_attribute() {
        assert_eq!(
            compact(&json!({"a": {"@x": "1"}})),
            format!("{DECL}<a><_x>1</_x></a>")
        );
    }

    #[test]
    fn dollar_text_key_never_becomes_text() {
        assert_eq!(
            compact(&json!({"a": {"$text": "t", "$value": "v"}})),
            format!("{DECL}<a><_text>t</_text><_value>v</_value></a>")
        );
    }

    #[test]
    fn colon_in_key_never_produces_a_namespace_prefix() {
        assert_eq!(element_name("xsi:nil"), "xsi_nil");
        assert_eq!(element_name(":a"), "_a");
        assert_eq!(element_name("xmlns:x"), "xmlns_x");
    }

    #[test]
    fn key_starting_with_a_name_character_that_cannot_start_a_name_gets_underscore_prefix() {
        assert_eq!(element_name("1st"), "_1st");
        assert_eq!(element_name("-x"), "_-x");
        assert_eq!(element_name(".x"), "_.x");
        assert_eq!(element_name("\u{300}x"), "_\u{300}x");
    }

    #[test]
    fn empty_key_becomes_underscore() {
        assert_eq!(element_name(""), "_");
        assert_eq!(compact(&json!({"": 1})), format!("{DECL}<_>1</_>"));
    }

    #[test]
    fn invalid_characters_in_key_become_one_underscore_each() {
        assert_eq!(element_name("a b"), "a_b");
        assert_eq!(element_name("a<b>&\"c"), "a_b___c");
        assert_eq!(element_name("\0\u{FFFE}x"), "__x");
        assert_eq!(element_name("été 😀"), "été_😀");
        assert_eq!(element_name("a\u{D7}b"), "a_b");
    }

    #[test]
    fn valid_names_are_kept_and_borrowed() {
        for key in [
            "nb_chunks",
            "a-b.c",
            "été",
            "日本",
            "_x1",
            "A\u{B7}\u{300}",
            "xml_url",
            "XMLish",
        ] {
            assert!(
                matches!(element_name(key), Cow::Borrowed(name) if name == key),
                "{key}"
            );
        }
        assert!(matches!(element_name("a b"), Cow::Owned(_)));
    }

    #[test]
    fn writers_append_without_clearing_the_buffer() {
        let mut out = b"x".to_vec();
        write_xml(&json!({"a": 1}), false, &mut out);
        assert_eq!(out, format!("x{DECL}<a>1</a>").into_bytes());
    }

    /// One parsed element: what a client's XML parser sees.
    #[derive(Debug, PartialEq)]
    struct Element {
        name: String,
        nil: bool,
        text: String,
        children: Vec<Element>,
    }

    fn element(name: &str, nil: bool, text: String, children: Vec<Element>) -> Element {
        let name = name.to_string();
        Element {
            name,
            nil,
            text,
            children,
        }
    }

    /// What the mapping promises for `value`, derived independently from the writer.
    fn expected(name: &str, value: &Value) -> Element {
        let is_xml_char = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
        match value {
            Value::Null => element(name, true, String::new(), vec![]),
            Value::Bool(b) => element(name, false, b.to_string(), vec![]),
            Value::Number(n) => element(name, false, n.to_string(), vec![]),
            Value::String(s) => {
                let text = s
                    .chars()
                    .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' });
                element(name, false, text.collect(), vec![])
            }
            Value::Array(items) => element(
                name,
                false,
                String::new(),
                items.iter().map(|v| expected("item", v)).collect(),
            ),
            Value::Object(map) => {
                let children = map
                    .iter()
                    .map(|(k, v)| expected(&element_name(k), v))
                    .collect();
                element(name, false, String::new(), children)
            }
        }
    }

    /// Parses `document` with a namespace-aware reader to the end, checking on the way that it
    /// has one declaration, one root, no prefixed element, only the attributes the mapping
    /// allows, and `xsi` bound wherever it is used.
    fn parse(document: &str, human: bool) -> Result<Element, String> {
        let mut reader = NsReader::from_str(document);
        let mut stack: Vec<Element> = Vec::new();
        let mut root = None;
        let mut declarations = 0;
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
            let ns_unbound = matches!(ns, ResolveResult::Unbound);
            match event {
                Event::Decl(decl) => {
                    declarations += 1;
                    let version = decl.version().map_err(|e| e.to_string())?;
                    let encoding = decl
                        .encoding()
                        .ok_or("no encoding")?
                        .map_err(|e| e.to_string())?;
                    if version.as_ref() != b"1.0" || encoding.as_ref() != b"UTF-8" {
                        return Err("bad declaration".into());
                    }
                }
                Event::Start(ref start) | Event::Empty(ref start) => {
                    if declarations != 1 || !ns_unbound || root.is_some() {
                        return Err(format!("misplaced or prefixed element {start:?}"));
                    }
                    let name = std::str::from_utf8(start.name().as_ref())
                        .map_err(|e| e.to_string())?
                        .to_string();
                    let mut nil = false;
                    for attribute in start.attributes() {
                        let attribute = attribute.map_err(|e| e.to_string())?;
                        let value = attribute.value.as_ref();
                        if attribute.key.as_ref() == b"xmlns:xsi"
                            && value == XSI.as_bytes()
                            && stack.is_empty()
                        {
                            continue;
                        }
                        let (bound, local) = reader.resolve_attribute(attribute.key);
                        let in_xsi = matches!(bound, ResolveResult::Bound(n) if n.as_ref() == XSI.as_bytes());
                        if in_xsi && local.as_ref() == b"nil" && value == b"true" && !nil {
                            nil = true;
                        } else {
                            return Err(format!("unexpected attribute {attribute:?}"));
                        }
                    }
                    stack.push(element(&name, nil, String::new(), vec![]));
                    if matches!(event, Event::Empty(_)) {
                        close(&mut stack, &mut root, human)?;
                    }
                }
                Event::End(_) => close(&mut stack, &mut root, human)?,
                Event::Text(text) => {
                    let text = text.xml10_content().map_err(|e| e.to_string())?;
                    match stack.last_mut() {
                        Some(open) => open.text.push_str(&text),
                        None if human && text == "\n" && root.is_none() => {}
                        None => return Err(format!("text outside the root: {text:?}")),
                    }
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c,
                        None => match &*reference {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            other => return Err(format!("unknown entity {other:?}")),
                        },
                    };
                    stack
                        .last_mut()
                        .ok_or("reference outside the root")?
                        .text
                        .push(resolved);
                }
                Event::Eof => break,
                other => return Err(format!("unexpected event {other:?}")),
            }
        }
        if !stack.is_empty() {
            return Err("unclosed element".into());
        }
        root.ok_or_else(|| "no root".into())
    }

    /// Pops the innermost open element; layout whitespace around children is not content.
    fn close(
        stack: &mut Vec<Element>,
        root: &mut Option<Element>,
        human: bool,
    ) -> Result<(), String> {
        let mut done = stack.pop().ok_or("end tag without start")?;
        if !done.children.is_empty() {
            let layout_only = if human {
                done.text.chars().all(|c| c == ' ' || c == '\n')
            } else {
                done.text.is_empty()
            };
            if !layout_only {
                return Err(format!("mixed content in {}", done.name));
            }
            done.text.clear();
        }
        if done.nil && !(done.text.is_empty() && done.children.is_empty()) {
            return Err(format!("nil element {} has content", done.name));
        }
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
        Ok(())
    }

    /// The root the mapping promises for `doc`, decided independently from the writer.
    fn expected_document(doc: &Value) -> Element {
        match doc {
            Value::Object(map) if map.len() == 1 => {
                let (key, value) = map.iter().next().unwrap();
                expected(&element_name(key), value)
            }
            other => expected("response", other),
        }
    }

    fn uses_nil(element: &Element) -> bool {
        element.nil || element.children.iter().any(uses_nil)
    }

    #[test]
    fn parser_helper_rejects_what_the_mapping_forbids() {
        let d = DECL;
        assert!(parse(&format!("{d}<a b=\"1\"/>"), false).is_err());
        assert!(parse(&format!("{d}<a>1<b/></a>"), false).is_err());
        assert!(parse(&format!("{d}<a xsi:nil=\"true\"/>"), false).is_err());
        assert!(parse(&format!("{d}<a/><b/>"), false).is_err());
        assert!(parse(&format!("{d}<x:a/>"), false).is_err());
        assert!(parse("<a/>", false).is_err());
        assert!(parse(&format!("{d}<a></b>"), false).is_err());
        assert_eq!(
            parse(&format!("{d}<a>&#13;&amp;</a>"), false).unwrap().text,
            "\r&"
        );
    }

    proptest! {
        #[test]
        fn any_document_renders_to_well_formed_xml_that_parses_back_to_the_mapping(
            doc in crate::render::json::tests::arb_value(),
            human in any::<bool>(),
            show_null in any::<bool>(),
        ) {
            let rendered = xml(&doc, human, show_null);
            prop_assert!(
                rendered.chars().all(|c| matches!(c, '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)),
                "raw character XML cannot carry (or raw CR) in {:?}", rendered
            );
            let parsed = parse(&rendered, human);
            prop_assert!(parsed.is_ok(), "{:?} for {:?}", parsed, rendered);
            let parsed = parsed.unwrap();

            let mut rendered_doc = doc.clone();
            if !show_null {
                strip_nulls(&mut rendered_doc);
            }
            let expected_root = expected_document(&rendered_doc);
            prop_assert_eq!(
                rendered.contains("xmlns:xsi"),
                uses_nil(&expected_root),
                "namespace declared iff a nil is rendered: {}", rendered
            );
            prop_assert_eq!(parsed, expected_root);
        }

        #[test]
        fn skipping_writer_matches_strip_then_write(
            doc in crate::render::json::tests::arb_value(),
            human in any::<bool>(),
        ) {
            let mut stripped = doc.clone();
            strip_nulls(&mut stripped);
            prop_assert_eq!(xml(&doc, human, false), xml(&stripped, human, true));
        }

        #[test]
        fn any_key_maps_to_a_valid_unprefixed_name(
            key in prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
        ) {
            let name = element_name(&key);
            let mut chars = name.chars();
            prop_assert!(chars.next().is_some_and(is_name_start_char));
            prop_assert!(chars.all(is_name_char));
            prop_assert!(!name.contains(':'));
            prop_assert_eq!(name.chars().count(), key.chars().count().max(1) + usize::from(
                key.chars().next().is_some_and(|c| !is_name_start_char(c) && is_name_char(c))
            ));
        }
    }
}
