//! Fuzzes `Accept` negotiation (SPEC §4.1).
//!
//! Input: the header value (read lossily). Invariants: never panics, and the result does not
//! depend on ASCII case (media ranges and parameter names match case-insensitively).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upload_gateway::request::negotiate::format_from_accept;

fuzz_target!(|data: &[u8]| {
    let accept = String::from_utf8_lossy(data);
    let format = format_from_accept(Some(&accept));
    assert_eq!(
        format_from_accept(Some(&accept.to_ascii_uppercase())),
        format,
        "upper-casing changed the result for {accept:?}"
    );
    assert_eq!(
        format_from_accept(Some(&accept.to_ascii_lowercase())),
        format,
        "lower-casing changed the result for {accept:?}"
    );
});
