//! The document the writers walk: a JSON value that borrows its strings from the bytes it was
//! read from. Rendering an upstream answer only reads the document once, so building
//! `serde_json::Value` (an owned `String` per key and string, an `IndexMap` with a SipHash
//! table per object) cost about 30 allocations per answer for nothing; a [`Node`] read with
//! serde's borrowing visitor allocates one `Vec` per object or array and copies only strings
//! that hold escapes. No crate offers a borrowed JSON tree with `serde_json`'s exact number
//! reading and `preserve_order` duplicate rule, hence this file.
//!
//! It reads what `serde_json::Value` reads (nesting limited to 128 by `serde_json`, a key named
//! twice keeps its first position with the last value, as an `IndexMap` insert), except
//! numbers: a [`Node::Number`] is the number's own text in the document, so an answer is
//! rendered with the upstream's digits (a 30-digit integer, `1.10`, `1E2`, `-0` stay as
//! written), never through an `f64` (only a number beyond the range of an `f64`, `1e400`,
//! cannot be read: `serde_json` refuses it). `serde_json` validates the document and reports each
//! number in document order; [`number_texts`] lists the same numbers' spans in one pass over
//! the text, and the k-th report takes the k-th span.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value whose strings borrow from the parsed text where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number: its JSON text (as written in the document read).
    Number(Cow<'a, str>),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object's members in document order, each key once.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }
}

impl<'a> From<&'a Value> for Node<'a> {
    /// A view of `value` (its strings borrowed), for the writers.
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Node::Null,
            Value::Bool(flag) => Node::Bool(*flag),
            Value::Number(number) => Node::Number(Cow::Owned(number.to_string())),
            Value::String(text) => Node::String(Cow::Borrowed(text)),
            Value::Array(items) => Node::Array(items.iter().map(Node::from).collect()),
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(key, value)| (Cow::Borrowed(key.as_str()), Node::from(value)))
                    .collect(),
            ),
        }
    }
}

/// Objects up to this many members find a repeated key by scanning; bigger ones index their
/// keys, so a hostile answer with many members costs linear time.
const SCAN_MEMBERS: usize = 16;

impl<'a> Node<'a> {
    /// Reads one JSON document (nothing but whitespace after it); `None` when the text is
    /// not JSON, or nests deeper than 128.
    pub fn parse(text: &'a str) -> Option<Node<'a>> {
        let numbers = number_texts(text);
        let next = Cell::new(0);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let node = NodeSeed {
            numbers: &numbers,
            next: &next,
        }
        .deserialize(&mut deserializer)
        .ok()?;
        deserializer.end().ok()?;
        Some(node)
    }

    /// Serializes a number's text as it is (a JSON number, validated when it was read).
    pub(super) fn serialize_number<S: serde::Serializer>(
        text: &str,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// The spans of the numbers of a JSON text, in document order. Only meaningful for a text that
/// is JSON: outside strings, a `-` or a digit can only start a number.
fn number_texts(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                at += 1;
                while let Some(&inside) = bytes.get(at) {
                    at += if inside == b'\\' { 2 } else { 1 };
                    if inside == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while bytes
                    .get(at)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    at += 1;
                }
                spans.extend(text.get(start..at));
            }
            _ => at += 1,
        }
    }
    spans
}

/// Reads a [`Node`], taking each number's text from `numbers` in order.
#[derive(Clone, Copy)]
struct NodeSeed<'s, 'de> {
    numbers: &'s [&'de str],
    next: &'s Cell<usize>,
}

impl<'s, 'de> NodeSeed<'s, 'de> {
    fn number<E: serde::de::Error>(self) -> Result<Node<'de>, E> {
        let at = self.next.get();
        self.next.set(at + 1);
        let text = self
            .numbers
            .get(at)
            .ok_or_else(|| E::custom("a number the scan did not find"))?;
        Ok(Node::Number(Cow::Borrowed(text)))
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, 'de> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(flag))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Node<'de>, E> {
        self.number()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Node<'de>, E> {
        self.number()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Node<'de>, E> {
        self.number()
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(text)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(SCAN_MEMBERS));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        // Built once an object outgrows SCAN_MEMBERS: key -> position.
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let value = map.next_value_seed(self)?;
            let earlier = match &index {
                Some(index) => index.get(key.as_ref()).copied(),
                None => members.iter().position(|(seen, _)| *seen == key),
            };
            match earlier.and_then(|at| members.get_mut(at)) {
                Some(member) => member.1 = value,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(key.clone().into_owned(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() > SCAN_MEMBERS {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(at, (key, _))| (key.clone().into_owned(), at))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(Node::Object(members))
    }
}

/// An object key, borrowed when it holds no escape (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Node<'_> {
        Node::parse(text).unwrap()
    }

    fn number(text: &str) -> Node<'_> {
        Node::Number(Cow::Borrowed(text))
    }

    #[test]
    fn reads_like_value_with_numbers_as_written() {
        let text = r#"{"a":[1,-2,2.5,1000.0,true,null,"x\u00e9"],"b":{}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(read(text), Node::from(&value));
    }

    /// Found by a black-box attack: numbers were rendered through f64 (digits lost, `1.10`
    /// turned into `1.1`, `1e400` made the answer a 502).
    #[test]
    fn numbers_keep_their_text() {
        for text in [
            "123456789012345678901234567890",
            "18446744073709551616",
            "-99999999999999999999",
            "1.10",
            "1E2",
            "-0",
            "1e300",
            "0.000000000000000000000000000001",
        ] {
            assert_eq!(read(text), number(text), "{text}");
            let document = format!(r#"{{"s":"-1 2e5","n":[{text},"{text}"],"m":{text}}}"#);
            let Node::Object(members) = read(&document) else {
                panic!("not an object");
            };
            assert_eq!(members[0].1, Node::String(Cow::Borrowed("-1 2e5")));
            assert_eq!(
                members[1].1,
                Node::Array(vec![number(text), Node::String(Cow::Borrowed(text))])
            );
            assert_eq!(members[2].1, number(text));
        }
    }

    /// `serde_json` refuses a number beyond the range of f64 (`1e400`) while validating, so
    /// such a document cannot be read (documented: the answer is then a broken upstream's).
    #[test]
    fn a_number_beyond_f64_range_is_not_read() {
        assert!(Node::parse("1e400").is_none());
        assert!(Node::parse(r#"{"e":-1e400}"#).is_none());
    }

    #[test]
    fn what_is_not_one_json_document_is_refused() {
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "1 2",
            "{\"a\":1} x",
            "01",
            "-",
            "1.",
            "nul",
        ] {
            assert!(Node::parse(text).is_none(), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Node::parse(&deep).is_none());
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let Node::Object(members) = read(r#"{"plain":"text","esc\u0061ped":"a\nb\"1"}"#) else {
            panic!("not an object");
        };
        assert!(matches!(members[0].0, Cow::Borrowed("plain")));
        assert!(matches!(members[0].1, Node::String(Cow::Borrowed("text"))));
        assert!(matches!(members[1].0, Cow::Owned(ref key) if key == "escaped"));
        assert!(matches!(members[1].1, Node::String(Cow::Owned(ref text)) if text == "a\nb\"1"));
    }

    /// A repeated key keeps its first position and its last value, as `Value` (an IndexMap)
    /// does, in small objects (scanned) and big ones (indexed), escapes decoded; the numbers
    /// of the replaced values do not shift the others.
    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        for filler in [0usize, 3, 40] {
            let mut text = String::from(r#"{"k":1,"#);
            for i in 0..filler {
                text.push_str(&format!(r#""f{i}":{i},"#));
            }
            text.push_str(r#""\u006b":2,"z":null,"k":3}"#);
            let value: Value = serde_json::from_str(&text).unwrap();
            let node = read(&text);
            assert_eq!(node, Node::from(&value), "filler {filler}");
            let Node::Object(members) = node else {
                panic!("not an object");
            };
            assert_eq!(members.len(), filler + 2);
            assert_eq!(members[0], (Cow::Borrowed("k"), number("3")));
        }
        let value = json!({"k": 3});
        assert_eq!(read(r#"{"k":1,"k":2,"k":3}"#), Node::from(&value));
    }
}
