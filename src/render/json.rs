//! JSON rendering of a response document: compact or pretty (2-space indent), with or without
//! the object keys whose value is null (SPEC §4.6). Key order is the document's own, because
//! `serde_json` is built with `preserve_order`. It must never reorder keys, drop anything but
//! null-valued *keys*, or allocate a copy of the document just to leave the nulls out.
//!
//! Null array elements are kept even when null keys are removed: only keys are "not set to a
//! value"; dropping an element would shift the positions of the others.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::node::Node;

/// Removes, at every depth, the object keys whose value is null — including inside objects
/// that are array elements. Null array elements themselves are kept (see the module docs).
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Appends `value` as JSON to `out`, null keys included: compact, or pretty with `serde_json`'s
/// `PrettyFormatter` (2-space indent, no trailing newline) when `human`.
pub fn write_json(value: &Value, human: bool, out: &mut Vec<u8>) {
    write_node(&Node::from(value), human, true, out);
}

/// Appends `value` as JSON to `out` without the null-valued keys: the same bytes as
/// [`strip_nulls`] followed by [`write_json`], without copying the document.
pub fn write_json_skipping_null_keys(value: &Value, human: bool, out: &mut Vec<u8>) {
    write_node(&Node::from(value), human, false, out);
}

/// Appends `node` as JSON to `out`, its null-valued keys only when `keep_null_keys`.
pub(crate) fn write_node(node: &Node<'_>, human: bool, keep_null_keys: bool, out: &mut Vec<u8>) {
    let view = Json {
        node,
        keep_null_keys,
    };
    let result = if human {
        view.serialize(&mut serde_json::Serializer::pretty(&mut *out))
    } else {
        view.serialize(&mut serde_json::Serializer::new(&mut *out))
    };
    // Cannot fail: a Vec sink never returns an I/O error, and a Node has only string keys and
    // numbers that are JSON text. Nothing is left to report to the client if it ever did.
    debug_assert!(result.is_ok(), "serializing a document into a Vec failed");
}

/// A document serialized by serde_json (its escaping and pretty printing), optionally without
/// its null-valued keys.
struct Json<'n, 'a> {
    node: &'n Node<'a>,
    keep_null_keys: bool,
}

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let child = |node| Json {
            node,
            keep_null_keys: self.keep_null_keys,
        };
        match self.node {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(flag) => serializer.serialize_bool(*flag),
            Node::Number(text) => Node::serialize_number(text, serializer),
            Node::String(text) => serializer.serialize_str(text),
            Node::Object(members) => {
                // Length unknown up front when nulls are left out: serde_json only uses it to
                // short-cut `{}`, which it also writes for an open-then-closed map, so the
                // bytes are the same.
                let mut entries = serializer.serialize_map(None)?;
                for (key, value) in members
                    .iter()
                    .filter(|(_, value)| self.keep_null_keys || !value.is_null())
                {
                    entries.serialize_entry(key.as_ref(), &child(value))?;
                }
                entries.end()
            }
            Node::Array(items) => {
                let mut elements = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    elements.serialize_element(&child(item))?;
                }
                elements.end()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn to_string(value: &Value, human: bool, show_null: bool) -> String {
        let mut out = Vec::new();
        if show_null {
            write_json(value, human, &mut out);
        } else {
            write_json_skipping_null_keys(value, human, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn null_is_removed_at_every_depth_by_default() {
        let mut doc = json!({
            "a": null,
            "b": {"c": null, "d": {"e": null, "f": 1}},
            "g": [{"h": null, "i": 2}, [{"j": null}]]
        });
        let expected = json!({"b": {"d": {"f": 1}}, "g": [{"i": 2}, [{}]]});
        assert_eq!(to_string(&doc, false, false), expected.to_string());
        strip_nulls(&mut doc);
        assert_eq!(doc, expected);
    }

    #[test]
    fn null_array_elements_are_kept_when_null_keys_are_removed() {
        let mut doc = json!({"list": [null, 1, null]});
        assert_eq!(to_string(&doc, false, false), r#"{"list":[null,1,null]}"#);
        strip_nulls(&mut doc);
        assert_eq!(doc, json!({"list": [null, 1, null]}));
    }

    #[test]
    fn object_whose_keys_are_all_null_becomes_empty_object() {
        let doc = json!({"a": {"b": null}});
        assert_eq!(to_string(&doc, false, false), r#"{"a":{}}"#);
        assert_eq!(to_string(&doc, true, false), "{\n  \"a\": {}\n}");
    }

    #[test]
    fn show_null_keeps_null_keys() {
        let doc = json!({"a": null, "b": {"c": null}});
        assert_eq!(to_string(&doc, false, true), r#"{"a":null,"b":{"c":null}}"#);
    }

    #[test]
    fn compact_json_has_no_insignificant_whitespace() {
        let doc = json!({"upload": {"nb_chunks": 1, "tags": ["a b", "c"]}});
        assert_eq!(
            to_string(&doc, false, true),
            r#"{"upload":{"nb_chunks":1,"tags":["a b","c"]}}"#
        );
    }

    #[test]
    fn human_json_is_indented_with_two_spaces() {
        let doc = json!({"upload": {"nb_chunks": 1, "tags": ["a"]}});
        let expected = "{\n  \"upload\": {\n    \"nb_chunks\": 1,\n    \"tags\": [\n      \"a\"\n    ]\n  }\n}";
        assert_eq!(to_string(&doc, true, true), expected);
        assert_eq!(to_string(&doc, true, false), expected);
    }

    #[test]
    fn key_order_is_the_documents_own() {
        let doc: Value = serde_json::from_str(r#"{"z":1,"a":null,"m":2,"b":3}"#).unwrap();
        assert_eq!(
            to_string(&doc, false, true),
            r#"{"z":1,"a":null,"m":2,"b":3}"#
        );
        assert_eq!(to_string(&doc, false, false), r#"{"z":1,"m":2,"b":3}"#);
    }

    #[test]
    fn writers_append_without_clearing_the_buffer() {
        let mut out = b"prefix:".to_vec();
        write_json_skipping_null_keys(&json!({"a": null, "b": 1}), false, &mut out);
        assert_eq!(out, br#"prefix:{"b":1}"#);
    }

    /// Arbitrary documents: keys and strings with control characters, markup, noncharacters
    /// and any Unicode; floats limited to short decimals, which serde_json (without
    /// `float_roundtrip`) parses back exactly.
    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let weird_char = prop_oneof![
            4 => any::<char>(),
            1 => prop::sample::select(vec![
                '\0', '\u{1}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1f}', '\u{7f}',
                '\u{85}', '\u{fffe}', '\u{ffff}', '\u{fffd}', '\u{10ffff}', '<', '>', '&', '"',
                '\'', ':', '@', '$', '-', '.', '0', ' ', 'é', '\u{300}', '\u{b7}', ']',
            ]),
        ];
        let weird_string =
            prop::collection::vec(weird_char, 0..8).prop_map(|chars| chars.into_iter().collect());
        let key = prop_oneof![
            3 => weird_string.clone(),
            2 => "[a-z_][a-z0-9_]{0,7}",
            1 => prop::sample::select(vec![
                "@x", "$text", "xmlns", "xsi:nil", "item", "xml", "XmlThing", "", "1st", "a b",
            ])
            .prop_map(String::from),
        ];
        let number = prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (any::<i32>(), 0u32..6).prop_map(|(mantissa, scale)| {
                Value::from(format!("{mantissa}e-{scale}").parse::<f64>().unwrap_or(0.0))
            }),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            weird_string.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_output_parses_back_to_the_rendered_document(doc in arb_value(), human in any::<bool>()) {
            let kept: Value = serde_json::from_str(&to_string(&doc, human, true)).unwrap();
            prop_assert_eq!(&kept, &doc);

            let mut stripped = doc.clone();
            strip_nulls(&mut stripped);
            let without: Value = serde_json::from_str(&to_string(&doc, human, false)).unwrap();
            prop_assert_eq!(without, stripped);
        }

        #[test]
        fn skipping_writer_matches_strip_then_write(doc in arb_value(), human in any::<bool>()) {
            let mut stripped = doc.clone();
            strip_nulls(&mut stripped);
            prop_assert_eq!(to_string(&doc, human, false), to_string(&stripped, human, true));
        }

        #[test]
        fn output_matches_serde_json_formatting(doc in arb_value()) {
            prop_assert_eq!(to_string(&doc, false, true), serde_json::to_string(&doc).unwrap());
            prop_assert_eq!(to_string(&doc, true, true), serde_json::to_string_pretty(&doc).unwrap());
        }
    }
}
