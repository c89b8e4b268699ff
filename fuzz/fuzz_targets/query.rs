//! Fuzzes query normalisation (SPEC §4.2) and the lenient pre-authentication reading.
//!
//! Input: the query string, then optionally `\n` and an `Accept` value (both read lossily).
//! Invariants: never panics; when `normalise` accepts a query, normalising its
//! `upstream_query` again gives the same upstream query and the same `human`/`show_null`, no
//! upstream parameter name form-decodes to `format`, and `lenient_render_options` agrees with
//! the strict result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upload_gateway::request::query::{lenient_render_options, normalise};

/// `application/x-www-form-urlencoded` decoding, written independently of the gateway's.
fn form_decode(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (query, accept) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let query = String::from_utf8_lossy(query);
    let accept = accept.map(String::from_utf8_lossy);
    let accept = accept.as_deref();

    let lenient = lenient_render_options(Some(&query), accept);
    let Ok(normalised) = normalise(Some(&query)) else {
        return;
    };
    assert_eq!(
        lenient,
        normalised.render_options(accept),
        "lenient reading disagrees with the strict one for {query:?}"
    );
    let Some(upstream) = normalised.upstream_query.as_deref() else {
        return;
    };
    assert!(!upstream.is_empty(), "empty upstream query is Some");
    for segment in upstream.split('&') {
        assert!(
            !segment.is_empty(),
            "empty segment forwarded in {upstream:?}"
        );
        let name = segment.split_once('=').map_or(segment, |(name, _)| name);
        assert_ne!(
            form_decode(name),
            b"format",
            "`format` forwarded upstream: {upstream:?} from {query:?}"
        );
    }
    let again = normalise(Some(upstream))
        .unwrap_or_else(|e| panic!("upstream query {upstream:?} is refused: {e:?}"));
    assert_eq!(
        again.upstream_query.as_deref(),
        Some(upstream),
        "not a fixed point"
    );
    assert_eq!(again.format, None, "format survived in {upstream:?}");
    assert_eq!(
        again.human, normalised.human,
        "human changed via {upstream:?}"
    );
    assert_eq!(
        again.show_null, normalised.show_null,
        "show_null changed via {upstream:?}"
    );
});
