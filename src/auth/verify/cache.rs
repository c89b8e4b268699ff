//! The verified-token cache: tokens keyed by the SHA-256 of their text, cut to 128 bits
//! (S3-FIFO, quick_cache), hashed by the digest itself, and the counters the metrics read.

use std::sync::Arc;

use aws_lc_rs::digest;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::UnitWeighter;

use super::VerifiedToken;

/// Verified-token cache counters, for the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a verified token.
    pub hits: u64,
    /// Lookups that had to verify the token.
    pub misses: u64,
    /// Tokens currently cached (approximate).
    pub entries: u64,
}

/// Verified tokens by the first 128 bits of the SHA-256 of the token: finding another token
/// with the same key is a second preimage of 128 bits (and two tokens of one's own that
/// collide, 2^64 work, gain nothing: the entry is the first token's own verified claims).
/// Sixteen bytes fewer per entry than the whole digest. S3-FIFO (quick_cache): a hit is a hash lookup
/// under a shard's read lock plus one atomic, with no frequency sketch or access queue to
/// touch, so the cost stays close to one table probe as the cache grows. Expired entries are
/// refused (and removed) on the hit that finds them; capacity bounds the rest.
pub(super) type TokenCache = Cache<
    Fingerprint,
    Arc<VerifiedToken>,
    UnitWeighter,
    FingerprintHasher,
    DefaultLifecycle<Fingerprint, Arc<VerifiedToken>>,
>;

/// Hashes a cache key by taking 8 of its bytes: the key is already a SHA-256 digest, uniform
/// and not choosable by a client, so hashing it again would only cost time.
#[derive(Clone, Copy, Default)]
pub(super) struct FingerprintHasher;

impl std::hash::BuildHasher for FingerprintHasher {
    type Hasher = FingerprintHash;

    fn build_hasher(&self) -> FingerprintHash {
        FingerprintHash(0)
    }
}

/// See [`FingerprintHasher`]: the last 8-byte-or-longer write wins (the digest, after the
/// array's length prefix).
pub(super) struct FingerprintHash(u64);

impl std::hash::Hasher for FingerprintHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(head) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*head);
        }
    }
}

/// A cache key: see [`TokenCache`].
pub(super) type Fingerprint = [u8; 16];

/// The cache key of a token's text.
pub(super) fn fingerprint(bytes: &[u8]) -> Fingerprint {
    let digest = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}
