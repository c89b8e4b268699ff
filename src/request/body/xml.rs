//! The small, strict XML reader of the finish body: elements and text only, no DTD, no
//! entities beyond the predefined ones, no prefixed names, turned into the same JSON shape the
//! JSON reader produces.

use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::Reader;
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::{is_utf8_label, is_xml_whitespace, BodyError, MAX_DEPTH};
use crate::xml_names::{is_unprefixed_name, is_xml_char};

/// An open XML element while its content is read.
pub(super) struct Element {
    name: String,
    children: Map<String, Value>,
    text: String,
    /// Whether the text holds anything but XML whitespace.
    has_text: bool,
}

impl Element {
    fn open(start: &BytesStart<'_>) -> Result<Self, BodyError> {
        let name =
            std::str::from_utf8(start.name().into_inner()).map_err(|_| BodyError::NotUtf8)?;
        if !is_unprefixed_name(name) {
            return Err(BodyError::XmlName);
        }
        for attribute in start.attributes() {
            // A malformed attribute is refused like any other attribute.
            let attribute = attribute.map_err(|_| BodyError::Attribute)?;
            let key = attribute.key.as_ref();
            if key != b"xmlns" && !key.starts_with(b"xmlns:") {
                return Err(BodyError::Attribute);
            }
        }
        Ok(Element {
            name: name.to_owned(),
            children: Map::new(),
            text: String::new(),
            has_text: false,
        })
    }

    fn push_text(&mut self, text: &str) -> Result<(), BodyError> {
        if !text.chars().all(is_xml_char) {
            return Err(BodyError::XmlCharacter);
        }
        self.has_text |= !text.chars().all(is_xml_whitespace);
        self.text.push_str(text);
        Ok(())
    }

    /// Text only -> string (`""` when empty), elements -> object, both -> refused.
    fn close(self) -> Result<(String, Value), BodyError> {
        let value = if self.children.is_empty() {
            Value::String(self.text)
        } else if self.has_text {
            return Err(BodyError::MixedContent);
        } else {
            Value::Object(self.children)
        };
        Ok((self.name, value))
    }
}

/// Parses `<upload>...</upload>` and returns its children as JSON fields.
pub(super) fn parse_xml_upload(text: &str) -> Result<Map<String, Value>, BodyError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Map<String, Value>> = None;
    let mut prolog_started = false;
    loop {
        let event = reader.read_event().map_err(|_| BodyError::Xml {
            position: reader.error_position(),
        })?;
        let in_prolog = !prolog_started;
        let blank = |text: &[u8]| text.iter().all(|b| is_xml_whitespace(char::from(*b)));
        if !matches!(&event, Event::Text(text) if blank(text)) {
            prolog_started = true;
        }
        match event {
            Event::Decl(declaration) if in_prolog => {
                check_declaration(&declaration, reader.buffer_position())?;
            }
            Event::Decl(_) | Event::PI(_) => return Err(BodyError::ProcessingInstruction),
            Event::DocType(_) => return Err(BodyError::Doctype),
            Event::Comment(_) => {}
            Event::Start(start) => {
                let element = open_element(&start, &open, root.is_some())?;
                open.push(element);
            }
            Event::Empty(start) => {
                let element = open_element(&start, &open, root.is_some())?;
                close_element(element, &mut open, &mut root)?;
            }
            Event::End(_) => {
                let element = open.pop().ok_or(BodyError::Xml {
                    position: reader.buffer_position(),
                })?;
                close_element(element, &mut open, &mut root)?;
            }
            Event::Text(content) => {
                let content = content.xml10_content().map_err(|_| BodyError::NotUtf8)?;
                match open.last_mut() {
                    Some(element) => element.push_text(&content)?,
                    None if content.chars().all(is_xml_whitespace) => {}
                    None if root.is_some() => return Err(BodyError::TrailingContent),
                    None => return Err(BodyError::Shape),
                }
            }
            Event::CData(content) => {
                let content = content.xml10_content().map_err(|_| BodyError::NotUtf8)?;
                open.last_mut()
                    .ok_or(BodyError::Shape)?
                    .push_text(&content)?;
            }
            Event::GeneralRef(reference) => {
                let element = open.last_mut().ok_or(BodyError::Shape)?;
                let character = match &*reference {
                    b"lt" => '<',
                    b"gt" => '>',
                    b"amp" => '&',
                    b"apos" => '\'',
                    b"quot" => '"',
                    _ => reference
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .ok_or(BodyError::Entity)?,
                };
                element.push_text(character.encode_utf8(&mut [0; 4]))?;
                // A reference is written on purpose, so even `&#32;` counts as text.
                element.has_text = true;
            }
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(BodyError::Xml {
            position: reader.buffer_position(),
        });
    }
    root.ok_or(BodyError::Shape)
}

pub(super) fn check_declaration(
    declaration: &BytesDecl<'_>,
    position: u64,
) -> Result<(), BodyError> {
    let malformed = BodyError::Xml { position };
    declaration.version().map_err(|_| malformed)?;
    match declaration.encoding() {
        None => Ok(()),
        Some(Ok(encoding)) if is_utf8_label(&encoding) => Ok(()),
        Some(Ok(_)) => Err(BodyError::XmlEncoding),
        Some(Err(_)) => Err(malformed),
    }
}

pub(super) fn open_element(
    start: &BytesStart<'_>,
    open: &[Element],
    root_done: bool,
) -> Result<Element, BodyError> {
    if open.is_empty() && root_done {
        return Err(BodyError::TrailingContent);
    }
    if open.len() >= MAX_DEPTH {
        return Err(BodyError::TooDeep);
    }
    let element = Element::open(start)?;
    if open.is_empty() && element.name != "upload" {
        return Err(BodyError::Shape);
    }
    Ok(element)
}

pub(super) fn close_element(
    element: Element,
    open: &mut [Element],
    root: &mut Option<Map<String, Value>>,
) -> Result<(), BodyError> {
    let (name, value) = element.close()?;
    let Some(parent) = open.last_mut() else {
        *root = Some(match value {
            Value::Object(children) => children,
            Value::String(text) if text.chars().all(is_xml_whitespace) => Map::new(),
            _ => return Err(BodyError::Shape),
        });
        return Ok(());
    };
    match parent.children.entry(name) {
        Entry::Occupied(_) => Err(BodyError::Duplicate),
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
    }
}
