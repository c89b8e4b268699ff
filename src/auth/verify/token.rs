//! The verified token as the cache keeps it: what a request needs of it (identity headers, the
//! rate-limit key) and what a cache hit re-checks, in as few bytes as it can be (SPEC budget:
//! the verified-token cache holds up to `verified_cache_capacity` of these, 100,000 by
//! default). One allocation for the struct (inside its `Arc`) and one for all of its claim
//! texts; the `kid` and the header names are shared with the key set and the policy.
//!
//! The packing of the claim texts is written by hand: a `Vec<(String, String)>` and three
//! `Option<String>` cost five to eight allocations and about 250 bytes more per cached token
//! (measured with `MEMORY_SWEEP` in `benches/load/run.sh`), and no crate packs a handful of
//! optional strings into one allocation with back-references for repeats.

use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::Algorithm;

/// A token that passed every check, shared by all requests presenting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub(super) exp: u64,
    /// The `nbf` claim; 0 when absent (a `nbf` of 0 constrains nothing).
    pub(super) nbf: u64,
    /// [`super::KeySet::generation`] of the set that verified it.
    pub(super) key_set: u64,
    /// The first 128 bits of the verifying key's thumbprint.
    pub(super) key_thumbprint: [u8; 16],
    /// `kid` of the key that verified it.
    pub(super) kid: Option<Arc<str>>,
    /// The provider's `claims_to_headers` names, in the order of the header texts.
    pub(super) header_names: Arc<[HeaderName]>,
    /// `sub`, the key claim, then one text per header name.
    pub(super) texts: Texts,
    /// The provider whose key set verified it: a hit is re-checked against that set only.
    pub(super) provider: u32,
    pub(super) alg: Algorithm,
    /// The header named the `kid` (so the selection is replayed with it).
    pub(super) kid_in_header: bool,
}

/// Index of `sub` among the texts.
pub(super) const SUBJECT: usize = 0;
/// Index of the policy's `key_claim` among the texts.
pub(super) const KEY_CLAIM: usize = 1;
/// Index of the first header text.
pub(super) const FIRST_HEADER: usize = 2;

impl VerifiedToken {
    /// Which provider (index into the policies the verifier was built with) verified it.
    pub fn provider(&self) -> usize {
        self.provider as usize
    }

    /// `kid` of the key that verified it.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `exp` claim (seconds since the epoch).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// The `sub` claim when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.texts.get(SUBJECT)
    }

    /// The policy's `key_claim` as text, when the token has it as a scalar.
    pub fn key_claim(&self) -> Option<&str> {
        self.texts.get(KEY_CLAIM)
    }

    /// (header name, value) for each `claims_to_headers` entry whose claim is a scalar.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&HeaderName, &str)> {
        self.header_names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| Some((name, self.texts.get(FIRST_HEADER + i)?)))
    }

    /// The `nbf` claim, when the token had one.
    pub(super) fn nbf(&self) -> Option<u64> {
        (self.nbf > 0).then_some(self.nbf)
    }
}

/// Optional strings packed in one allocation: a count, one `u16` entry per string (its length,
/// [`ABSENT`], or [`REPEAT`] with the index of an earlier equal string), then the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Texts(Box<[u8]>);

const ABSENT: u16 = u16::MAX;
const REPEAT: u16 = 0x8000;
/// Longest text kept; longer ones are dropped (as absent). A token is at most
/// [`super::MAX_TOKEN_BYTES`], so no claim of a verified token comes near it.
const MAX_TEXT: usize = (REPEAT - 1) as usize;

impl Texts {
    /// Packs `texts` (at most 255 of them).
    pub(super) fn pack(texts: &[Option<&str>]) -> Texts {
        let count = texts.len().min(255);
        let texts = &texts[..count];
        let mut entries: Vec<u16> = Vec::with_capacity(count);
        let mut bytes = 0usize;
        for (i, text) in texts.iter().enumerate() {
            let entry = match text {
                Some(text) if text.len() <= MAX_TEXT => {
                    match texts[..i]
                        .iter()
                        .position(|earlier| earlier == &Some(*text))
                    {
                        // u16: i < 255.
                        Some(j) if entries[j] != ABSENT && entries[j] & REPEAT == 0 => {
                            REPEAT | j as u16
                        }
                        _ => {
                            bytes += text.len();
                            text.len() as u16
                        }
                    }
                }
                _ => ABSENT,
            };
            entries.push(entry);
        }
        let mut out = Vec::with_capacity(1 + 2 * count + bytes);
        out.push(count as u8);
        for entry in &entries {
            out.extend_from_slice(&entry.to_le_bytes());
        }
        for (text, entry) in texts.iter().zip(&entries) {
            if let Some(text) = text {
                if *entry != ABSENT && entry & REPEAT == 0 {
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        Texts(out.into_boxed_slice())
    }

    fn entry(&self, i: usize) -> Option<u16> {
        let count = usize::from(*self.0.first()?);
        if i >= count {
            return None;
        }
        let at = 1 + 2 * i;
        Some(u16::from_le_bytes([*self.0.get(at)?, *self.0.get(at + 1)?]))
    }

    /// The `i`-th text, if present.
    pub(super) fn get(&self, i: usize) -> Option<&str> {
        let entry = self.entry(i)?;
        if entry == ABSENT {
            return None;
        }
        if entry & REPEAT != 0 {
            return self.get(usize::from(entry & !REPEAT));
        }
        let count = usize::from(self.0[0]);
        let mut start = 1 + 2 * count;
        for j in 0..i {
            let earlier = self.entry(j)?;
            if earlier != ABSENT && earlier & REPEAT == 0 {
                start += usize::from(earlier);
            }
        }
        let bytes = self.0.get(start..start + usize::from(entry))?;
        std::str::from_utf8(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_texts_read_back_as_given() {
        let cases: [&[Option<&str>]; 5] = [
            &[],
            &[None, None],
            &[Some("alice"), None, Some("alice"), Some("42"), Some("")],
            &[Some(""), Some("é ü"), None, Some("é ü"), Some("x")],
            &[None, Some("k"), Some("k"), Some("k"), None],
        ];
        for texts in cases {
            let packed = Texts::pack(texts);
            for (i, text) in texts.iter().enumerate() {
                assert_eq!(packed.get(i), *text, "{texts:?} at {i}");
            }
            assert_eq!(packed.get(texts.len()), None);
        }
    }

    #[test]
    fn a_repeated_text_is_stored_once() {
        let once = Texts::pack(&[Some("bench-user-123456")]);
        let thrice = Texts::pack(&[
            Some("bench-user-123456"),
            Some("bench-user-123456"),
            Some("bench-user-123456"),
        ]);
        // Two more entries, no more bytes.
        assert_eq!(thrice.0.len(), once.0.len() + 4);
    }

    #[test]
    fn a_cached_token_stays_small() {
        // The cache holds up to 100,000 of these by default: a new field must earn its bytes.
        assert!(std::mem::size_of::<VerifiedToken>() <= 96);
    }

    #[test]
    fn an_overlong_text_is_absent_not_cut() {
        let long = "a".repeat(MAX_TEXT + 1);
        let packed = Texts::pack(&[Some(&long), Some("b")]);
        assert_eq!(packed.get(0), None);
        assert_eq!(packed.get(1), Some("b"));
    }
}
