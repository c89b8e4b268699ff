//! The document the writers walk: a JSON value that borrows its strings from the bytes it was
//! read from. Rendering an upstream answer only reads the document once, so building
//! `serde_json::Value` (an owned `String` per key and string, an `IndexMap` with a SipHash
//! table per object) cost about 30 allocations per answer for nothing; a [`Node`] read with
//! serde's borrowing visitor allocates one `Vec` per object or array and copies only strings
//! that hold escapes. No crate offers a borrowed JSON tree with `serde_json`'s exact number
//! reading and `preserve_order` duplicate rule, hence this file.
//!
//! It reads exactly what `serde_json::Value` reads, so both render the same bytes: numbers
//! through the same visitor calls (integers beyond 64 bits become floats), nesting limited to
//! 128 by `serde_json`, and a key named twice keeps its first position with the last value
//! (an `IndexMap` insert).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A JSON value whose strings borrow from the parsed text where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as `serde_json` reads it.
    Number(Number),
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
            Value::Number(number) => Node::Number(number.clone()),
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

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(number.into()))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Node<'de>, E> {
        // serde_json never reads a non-finite number; Value turns one into null, so do we.
        Ok(Number::from_f64(number).map_or(Node::Null, Node::Number))
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
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        // Built once an object outgrows SCAN_MEMBERS: key -> position.
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some(Key(key)) = map.next_key()? {
            let value: Node<'de> = map.next_value()?;
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

impl<'de> Deserialize<'de> for Key<'de> {
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
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_like_value() {
        let text =
            r#"{"a":[1,-2,2.5,1e3,123456789012345678901234567890,true,null,"x\u00e9"],"b":{}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(read(text), Node::from(&value));
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let Node::Object(members) = read(r#"{"plain":"text","esc\u0061ped":"a\nb"}"#) else {
            panic!("not an object");
        };
        assert!(matches!(members[0].0, Cow::Borrowed("plain")));
        assert!(matches!(members[0].1, Node::String(Cow::Borrowed("text"))));
        assert!(matches!(members[1].0, Cow::Owned(ref key) if key == "escaped"));
        assert!(matches!(members[1].1, Node::String(Cow::Owned(ref text)) if text == "a\nb"));
    }

    /// A repeated key keeps its first position and its last value, as `Value` (an IndexMap)
    /// does, in small objects (scanned) and big ones (indexed), escapes decoded.
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
            assert_eq!(members[0], (Cow::Borrowed("k"), Node::Number(3.into())));
        }
        let value = json!({"k": 3});
        assert_eq!(read(r#"{"k":1,"k":2,"k":3}"#), Node::from(&value));
    }
}
