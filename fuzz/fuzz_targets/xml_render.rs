//! Fuzzes the XML renderer (SPEC §4.6).
//!
//! Input: byte 0 bit 0 is `show_null`; the rest is an upstream body. Bodies that are not JSON
//! are skipped (`render_upstream_body` must then return `None`). Each document is rendered in
//! both human modes. Invariants: never panics; `render_upstream_body` equals `render_value` of
//! the parsed document; the output reads to `Eof` with quick-xml's `Reader` as one well-formed
//! document (declaration, one root, matching end tags, only valid references, only
//! `xmlns:xsi` on the root and `xsi:nil="true"` on empty elements as attributes, unprefixed
//! names) and holds only XML 1.0 characters, with no raw C0 control other than TAB and LF (CR
//! is written as `&#13;`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::Value;
use upload_gateway::render::{render_upstream_body, render_value, RenderOptions, ResponseFormat};

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const XSI: &[u8] = b"http://www.w3.org/2001/XMLSchema-instance";

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks a start tag: unprefixed name, and only the attributes the mapping allows.
fn check_start(start: &BytesStart<'_>, is_root: bool, empty: bool, xsi_declared: &mut bool) {
    let name = start.name();
    let name = std::str::from_utf8(name.as_ref()).expect("element name is UTF-8");
    assert!(
        !name.is_empty() && !name.contains(':'),
        "bad element name {name:?}"
    );
    for attribute in start.attributes().with_checks(true) {
        let attribute = attribute.expect("well-formed attribute");
        let value = attribute
            .unescape_value()
            .expect("attribute value unescapes");
        match attribute.key.as_ref() {
            b"xmlns:xsi" if is_root => {
                assert_eq!(value.as_bytes(), XSI, "wrong xsi namespace");
                *xsi_declared = true;
            }
            b"xsi:nil" if empty => {
                assert!(*xsi_declared, "xsi:nil without xmlns:xsi on the root");
                assert_eq!(value, "true");
            }
            other => panic!(
                "unexpected attribute {:?} on {name:?}",
                String::from_utf8_lossy(other)
            ),
        }
    }
}

fn check_well_formed(xml: &[u8]) {
    let text = std::str::from_utf8(xml).expect("XML output is UTF-8");
    if let Some(bad) = text.chars().find(|&c| !is_xml_char(c) || c == '\r') {
        panic!("raw character {bad:?} XML cannot carry in {text:?}");
    }
    assert!(text.starts_with(DECLARATION), "no declaration: {text:?}");

    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut seen_decl = false;
    let mut xsi_declared = false;
    loop {
        let event = reader.read_event().unwrap_or_else(|e| {
            panic!(
                "not well-formed at {}: {e} in {text:?}",
                reader.error_position()
            )
        });
        match event {
            Event::Decl(_) => {
                assert!(
                    !seen_decl && roots == 0 && depth == 0,
                    "misplaced declaration"
                );
                seen_decl = true;
            }
            Event::Start(start) => {
                if depth == 0 {
                    roots += 1;
                }
                check_start(&start, depth == 0, false, &mut xsi_declared);
                depth += 1;
            }
            Event::Empty(start) => {
                if depth == 0 {
                    roots += 1;
                }
                check_start(&start, depth == 0, true, &mut xsi_declared);
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).expect("end tag without start");
            }
            Event::Text(content) => {
                let content = content.xml10_content().expect("text decodes");
                if depth == 0 {
                    assert!(
                        content
                            .chars()
                            .all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')),
                        "text outside the root: {text:?}"
                    );
                }
            }
            Event::GeneralRef(reference) => {
                assert!(depth > 0, "reference outside the root: {text:?}");
                match &*reference {
                    b"lt" | b"gt" | b"amp" | b"apos" | b"quot" => {}
                    _ => {
                        let c = reference
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| panic!("bad reference in {text:?}"));
                        assert!(is_xml_char(c), "reference to a non-XML character {c:?}");
                    }
                }
            }
            Event::CData(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                panic!("unexpected markup in {text:?}")
            }
            Event::Eof => break,
        }
    }
    assert!(seen_decl, "no declaration");
    assert_eq!(depth, 0, "unclosed element in {text:?}");
    assert_eq!(roots, 1, "{roots} root elements in {text:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let show_null = selector & 1 == 1;
    let parsed: Option<Value> = {
        let json = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        serde_json::from_slice(json).ok()
    };
    for human in [false, true] {
        let opts = RenderOptions {
            format: ResponseFormat::Xml,
            human,
            show_null,
        };
        let rendered = render_upstream_body(body, opts);
        let Some(value) = &parsed else {
            assert!(rendered.is_none(), "non-JSON body was rendered");
            continue;
        };
        let direct = render_value(value, opts);
        assert_eq!(
            rendered.as_deref(),
            Some(&direct[..]),
            "upstream body renders differently"
        );
        check_well_formed(&direct);
    }
});
