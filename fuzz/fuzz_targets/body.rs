//! Fuzzes the finish-upload body parser (SPEC §4.3).
//!
//! Input: byte 0 picks the `Content-Type` (low nibble) and `max_nb_chunks` (bits 4-5); the
//! rest is the body. For the "custom" content type the body's first line is the header value.
//! Invariants: never panics; when accepted, `1 <= nb_chunks <= max` and the canonical JSON
//! re-validates as `application/json` to the same bytes and the same `nb_chunks`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upload_gateway::request::body::validate_finish_body;

const CONTENT_TYPES: [Option<&str>; 15] = [
    None,
    Some("application/json"),
    Some("application/xml"),
    Some("text/xml"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("application/vnd.api+json; charset=UTF-8"),
    Some("application/upload+xml; charset=\"utf8\""),
    Some(""),
    Some("application/json; charset=iso-8859-1"),
    Some("text/html"),
    Some("application/*"),
    Some("TEXT/XML;Charset=UTF-8"),
    Some("application/json;charset=\"utf-8;x\""),
    Some(" "),
];
const CUSTOM: usize = 15;
const MAXIMA: [u64; 4] = [10_000, 1, 100, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let max_nb_chunks = MAXIMA[usize::from(selector >> 4) & 3];
    let (content_type, body) = match usize::from(selector & 0x0f) {
        CUSTOM => {
            let (line, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(line) = std::str::from_utf8(line) else {
                return;
            };
            (Some(line), body)
        }
        index => (CONTENT_TYPES[index], rest),
    };

    let Ok(upload) = validate_finish_body(content_type, body, max_nb_chunks) else {
        return;
    };
    assert!(
        (1..=max_nb_chunks).contains(&upload.nb_chunks),
        "nb_chunks {} outside 1..={max_nb_chunks}",
        upload.nb_chunks
    );
    let again = validate_finish_body(Some("application/json"), &upload.canonical, max_nb_chunks);
    match again {
        Ok(again) => {
            assert_eq!(again.nb_chunks, upload.nb_chunks, "nb_chunks changed");
            assert_eq!(
                again.canonical,
                upload.canonical,
                "canonical JSON is not a fixed point: {:?} -> {:?}",
                String::from_utf8_lossy(&upload.canonical),
                String::from_utf8_lossy(&again.canonical)
            );
        }
        Err(error) => panic!(
            "canonical JSON {:?} is refused: {error:?}",
            String::from_utf8_lossy(&upload.canonical)
        ),
    }
});
