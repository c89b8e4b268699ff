//! The strict JSON reader of the finish body: one document, no duplicate keys at any depth, a
//! bounded nesting, so that the gateway and the upstream can never read different values.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::{BodyError, MAX_DEPTH};

/// Why the JSON walk stopped, when `serde_json`'s own error would not say.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    Duplicate,
    TooDeep,
}

/// Parses the JSON document and returns the `upload` object's fields (wrapped or bare form).
pub(super) fn parse_json_upload(text: &str) -> Result<Map<String, Value>, BodyError> {
    let refusal = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Level 0: the wrapped form's outer object, which the limit does not count; the bare form's
    // top level is checked once the form is known.
    let seed = StrictValue {
        depth: 0,
        refusal: &refusal,
    };
    let document = seed
        .deserialize(&mut deserializer)
        .map_err(|error| match refusal.get() {
            Some(Refusal::Duplicate) => BodyError::Duplicate,
            Some(Refusal::TooDeep) => BodyError::TooDeep,
            None => BodyError::Json {
                line: error.line(),
                column: error.column(),
            },
        })?;
    deserializer.end().map_err(|_| BodyError::TrailingContent)?;
    let Value::Object(mut top) = document else {
        return Err(BodyError::Shape);
    };
    if !top.contains_key("upload") {
        if 1 + top.values().map(nesting).max().unwrap_or(0) > MAX_DEPTH {
            return Err(BodyError::TooDeep);
        }
        return Ok(top);
    }
    match top.remove("upload") {
        Some(Value::Object(upload)) if top.is_empty() => Ok(upload),
        _ => Err(BodyError::Shape),
    }
}

/// How many arrays and objects deep `value` is: 0 for a scalar.
pub(super) fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Builds a `serde_json::Value` like `serde_json` does, but refuses a key repeated in an
/// object (its `Map` would keep the last one silently) and nesting beyond [`MAX_DEPTH`].
#[derive(Clone, Copy)]
pub(super) struct StrictValue<'a> {
    /// The depth of the value being read; the top-level value is at 0 (see
    /// `parse_json_upload`), so containers are accepted down to level `MAX_DEPTH`.
    depth: usize,
    refusal: &'a Cell<Option<Refusal>>,
}

impl StrictValue<'_> {
    /// Enters the array or object being read: the seed for its members, one level deeper.
    fn enter<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DEPTH {
            self.refusal.set(Some(Refusal::TooDeep));
            return Err(E::custom("nested too deep"));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            refusal: self.refusal,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Occupied(_) => {
                    self.refusal.set(Some(Refusal::Duplicate));
                    return Err(A::Error::custom("duplicate key"));
                }
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(child)?);
                }
            }
        }
        Ok(Value::Object(object))
    }
}
