//! W3C Trace Context (SPEC §4.12): the `traceparent` a request arrives with, and the one the
//! upstream receives: the same trace id (a new one when the incoming header is absent or
//! invalid, or repeated) with the gateway's own span id, so the gateway is a hop in the trace.
//! `tracestate` is forwarded as it came with a valid `traceparent`, and dropped when the trace
//! starts here (W3C). Pure: no I/O.
//!
//! Written by hand: the header is four fixed-width hex fields, and the `opentelemetry`
//! propagator works on its own `Context` type, which the request path has no other use for.

/// The trace flags W3C defines: sampled (bit 0) and random trace id (bit 1, Level 2).
const KNOWN_FLAGS: u8 = 0x03;

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The caller's span id (the incoming `parent-id`), when a valid `traceparent` came.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's own span id for this request: the parent id sent upstream.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Continues the incoming trace, or starts one, with a fresh span id from `random`.
    pub fn from_header(traceparent: Option<&[u8]>, mut random: impl FnMut() -> u64) -> Self {
        let span_id = loop {
            let id = random().to_be_bytes();
            if id != [0; 8] {
                break id;
            }
        };
        if let Some((trace_id, parent, flags)) = traceparent.and_then(parse) {
            return Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id,
                // Only the flags W3C defines (sampled; random, Level 2) are passed on: the
                // others are reserved and set to zero when propagating.
                flags: flags & KNOWN_FLAGS,
            };
        }
        let trace_id = loop {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&random().to_be_bytes());
            id[8..].copy_from_slice(&random().to_be_bytes());
            if id != [0; 16] {
                break id;
            }
        };
        Self {
            trace_id,
            parent_span_id: None,
            span_id,
            flags: 0x01,
        }
    }

    /// The `traceparent` for the upstream: version 00, this trace, the gateway's span.
    pub fn traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }

    /// The trace id as 32 lowercase hex digits (the access log's `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.trace_id);
        out
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

fn hex_field<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2): lowercase hex, version `ff`
/// invalid, version 00 exactly 55 characters, a later version at least that prefix followed by
/// `-` or nothing; all-zero ids invalid.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = value.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let version = hex_field::<1>(&value[0..2])?[0];
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if version == 0 && value.len() != 55 {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = hex_field::<16>(&value[3..35])?;
    let parent = hex_field::<8>(&value[36..52])?;
    let flags = hex_field::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0u64;
        move || {
            n += 0x0101_0101;
            n
        }
    }

    #[test]
    fn a_valid_traceparent_keeps_its_trace_and_gets_the_gateways_span() {
        let ctx = TraceContext::from_header(Some(VALID), counter());
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_span_id,
            Some(*b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7")
        );
        let sent = ctx.traceparent();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"));
        assert_ne!(
            &sent[36..52],
            "00f067aa0ba902b7",
            "the caller's span id was reused"
        );
        assert_eq!(sent.len(), 55);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            &b""[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let ctx = TraceContext::from_header(Some(bad), counter());
            assert_eq!(
                ctx.parent_span_id,
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert_ne!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(ctx.flags, 1);
        }
    }

    /// Found by a black-box attack: `ff` went upstream as `ff`.
    #[test]
    fn reserved_flags_are_zeroed_when_propagating() {
        for (given, sent) in [
            ("ff", "03"),
            ("01", "01"),
            ("00", "00"),
            ("fd", "01"),
            ("02", "02"),
        ] {
            let header = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{given}");
            let ctx = TraceContext::from_header(Some(header.as_bytes()), counter());
            assert!(ctx.traceparent().ends_with(&format!("-{sent}")), "{given}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_prefix() {
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        let ctx = TraceContext::from_header(Some(later), counter());
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // What goes upstream is version 00.
        assert!(ctx.traceparent().starts_with("00-"));
    }

    #[test]
    fn new_traces_and_spans_are_never_zero() {
        // The source yields zeros first: ids are drawn again until not all zero.
        let mut draws = [0u64, 0, 0, 0, 7, 0, 9].into_iter();
        let ctx = TraceContext::from_header(None, move || draws.next().unwrap_or(5));
        assert_ne!(ctx.span_id, [0; 8]);
        assert_ne!(ctx.trace_id, [0; 16]);
    }
}
