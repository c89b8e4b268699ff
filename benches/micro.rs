//! Micro benchmarks of the gateway's per-request work (criterion): `cargo bench --bench micro`.
//!
//! - `request/*`: negotiation, query normalisation, body validation with the canonical JSON
//!   for the upstream, and `request/finish_core`, all three as the finish call runs them.
//! - `render/*`: the documented 200 response turned into XML or pretty JSON.
//! - `auth/cold/*`: one full verification per algorithm (cache disabled), `auth/cached/*`
//!   the same token through the verified-token cache.
//! - `auth/cache_hit/N`: a hit in a cache holding N distinct verified tokens (EdDSA, because
//!   signing 10^6 RS256 tokens takes too long; the measured token is any cached one), looked up
//!   in a random order over all N so that big caches pay their memory misses; the token's bytes
//!   are in the CPU cache as after reading the request. `.../token_bytes_cold`: the same with
//!   the token read in place, so that its bytes miss the CPU caches too. `MICRO_CACHE_SIZES=1000,100000` skips the 10^6 fill
//!   (about a minute on two cores).
//!
//! - `contention/*/N`: the structures every request shares across worker threads (the
//!   verified-token cache on a hit, the key set behind its `ArcSwap`, the local rate limiter),
//!   driven by N threads at once, each on its own keys; throughput is in elements (one element
//!   = one operation), so the aggregate rate against N shows whether they contend. Beyond
//!   the machine's cores the threads only share cores (this machine has 2).
//!
//! Keep runs short on small machines: `cargo bench --bench micro -- --warm-up-time 1
//! --measurement-time 3`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "a test, bench or example fails loudly; criterion_group! defines an undocumented fn"
)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use upload_gateway::auth::{AuthPolicy, KeySet, TokenVerifier};
use upload_gateway::demo::issuer_keys::{jwks_json, mint, SigningKey};
use upload_gateway::demo::upload_service::completing_document;
use upload_gateway::render::{render_upstream_body, render_value, RenderOptions, ResponseFormat};
use upload_gateway::request::body::validate_finish_body;
use upload_gateway::request::negotiate::format_from_accept;
use upload_gateway::request::query::{lenient_render_options, normalise};

// The allocator the shipped binary uses (src/main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UPLOAD_ID: &str = "5475f75ce4b084a392305dcb";
const QUERY: &str = "format=xml&human=true";
const JSON_BODY: &[u8] = br#"{"upload":{"nb_chunks":1}}"#;
const XML_BODY: &[u8] = b"<upload><nb_chunks>1</nb_chunks></upload>";
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
const ISSUER: &str = "https://bench-issuer.example/";
const AUDIENCE: &str = "upload-api";
const MAX_NB_CHUNKS: u64 = 10_000;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn request_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.bench_function("negotiate/accept_json", |b| {
        b.iter(|| format_from_accept(black_box(Some("application/json"))));
    });
    g.bench_function("negotiate/accept_browser", |b| {
        b.iter(|| format_from_accept(black_box(Some(BROWSER_ACCEPT))));
    });
    g.bench_function("query/lenient_render_options", |b| {
        b.iter(|| lenient_render_options(black_box(Some(QUERY)), black_box(None)));
    });
    g.bench_function("query/normalise", |b| {
        b.iter(|| normalise(black_box(Some(QUERY))));
    });
    g.bench_function("body/validate_json+canonical", |b| {
        b.iter(|| {
            validate_finish_body(
                black_box(Some("application/json")),
                black_box(JSON_BODY),
                MAX_NB_CHUNKS,
            )
        });
    });
    g.bench_function("body/validate_xml+canonical", |b| {
        b.iter(|| {
            validate_finish_body(
                black_box(Some("application/xml")),
                black_box(XML_BODY),
                MAX_NB_CHUNKS,
            )
        });
    });
    // What the finish call does before contacting the upstream, minus the token: lenient
    // options (for errors), strict normalisation, body validation and canonical JSON.
    g.bench_function("finish_core", |b| {
        b.iter(|| {
            let opts = lenient_render_options(black_box(Some(QUERY)), black_box(None));
            let query = normalise(black_box(Some(QUERY))).expect("valid query");
            let body = validate_finish_body(
                black_box(Some("application/json")),
                black_box(JSON_BODY),
                MAX_NB_CHUNKS,
            )
            .expect("valid body");
            (opts, query, body)
        });
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let doc = completing_document(UPLOAD_ID, &json!(1));
    let body = serde_json::to_vec(&doc).expect("serialisable");
    let opts = |format, human| RenderOptions {
        format,
        human,
        show_null: false,
    };
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for (name, o) in [
        ("upstream_body/xml", opts(ResponseFormat::Xml, false)),
        ("upstream_body/xml_human", opts(ResponseFormat::Xml, true)),
        ("upstream_body/json_human", opts(ResponseFormat::Json, true)),
        (
            "upstream_body/json_compact",
            opts(ResponseFormat::Json, false),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| render_upstream_body(black_box(&body), o).expect("JSON"));
        });
    }
    g.bench_function("value/xml_human", |b| {
        b.iter(|| render_value(black_box(&doc), opts(ResponseFormat::Xml, true)));
    });
    g.bench_function("value/json_human", |b| {
        b.iter(|| render_value(black_box(&doc), opts(ResponseFormat::Json, true)));
    });
    g.finish();
}

fn policy() -> AuthPolicy {
    AuthPolicy {
        issuer: Some(ISSUER.into()),
        audiences: vec![AUDIENCE.into()],
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        leeway_s: 30,
        max_token_lifetime_s: 86_400,
        required_scopes: Vec::new(),
        claims_to_headers: vec![("sub".into(), "X-Auth-Subject".into())],
        key_claim: None,
    }
}

fn claims(subject: &str, now: u64) -> Value {
    json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    })
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn key_set(keys: &[&SigningKey]) -> KeySet {
    KeySet::from_jwks_json(jwks_json(keys).as_bytes())
        .expect("valid JWKS")
        .0
}

fn tokens(c: &mut Criterion) {
    let now = now_s();
    let keys: Vec<SigningKey> = [
        (Algorithm::RS256, "rs"),
        (Algorithm::ES256, "es"),
        (Algorithm::EdDSA, "ed"),
    ]
    .into_iter()
    .map(|(alg, kid)| SigningKey::generate(alg, kid).expect("key"))
    .collect();
    let set = key_set(&keys.iter().collect::<Vec<_>>());
    let uncached = TokenVerifier::new(policy(), 0).expect("policy");
    let cached = TokenVerifier::new(policy(), 1000).expect("policy");

    let mut g = c.benchmark_group("auth");
    for key in &keys {
        let header = bearer(&mint(key, &claims("bench-user", now)).expect("mint"));
        uncached.verify(&set, Some(&header), now).expect("valid");
        g.bench_function(format!("cold/{:?}", key.alg), |b| {
            b.iter(|| uncached.verify(&set, black_box(Some(&header)), now));
        });
        // The same token through the verified-token cache: its cost differs per algorithm
        // only through the token's length (the SHA-256 of the cache key).
        cached.verify(&set, Some(&header), now).expect("valid");
        g.bench_function(format!("cached/{:?}", key.alg), |b| {
            b.iter(|| cached.verify(&set, black_box(Some(&header)), now));
        });
    }
    g.finish();
}

/// `count` distinct valid EdDSA tokens as `Authorization` values, minted on every core.
fn mint_headers(key: &SigningKey, count: usize, now: u64) -> Vec<Vec<u8>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = count.div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    (w * per..count.min((w + 1) * per))
                        .map(|i| bearer(&mint(key, &claims(&format!("u{i}"), now)).expect("mint")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("minting thread"))
            .collect()
    })
}

fn cache_sizes() -> Vec<usize> {
    std::env::var("MICRO_CACHE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

fn cache_hits(c: &mut Criterion) {
    let now = now_s();
    let key = SigningKey::generate(Algorithm::EdDSA, "ed").expect("key");
    let set = key_set(&[&key]);
    let mut g = c.benchmark_group("auth/cache_hit");
    for size in cache_sizes() {
        let headers = mint_headers(&key, size, now);
        let verifier = TokenVerifier::new(policy(), 2 * size as u64).expect("policy");
        // Fill: every token verified once (cold), on every core.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|s| {
            for chunk in headers.chunks(size.div_ceil(workers)) {
                let verifier = &verifier;
                let set = &set;
                s.spawn(move || {
                    for h in chunk {
                        verifier.verify(set, Some(h), now).expect("valid token");
                    }
                });
            }
        });
        let mut order: Vec<usize> = (0..size).collect();
        fastrand::Rng::with_seed(7).shuffle(&mut order);
        let before = verifier.cache_stats();
        // The token's bytes are copied into a fresh buffer just before each timed lookup, as
        // if just read from the socket (in cache), while the cache's own memory is as cold as
        // its size makes it: 64 lookups per timed batch amortise the timer.
        let mut next = 0usize;
        g.bench_function(size.to_string(), |b| {
            b.iter_batched_ref(
                || {
                    next = (next + 1) % size;
                    headers[order[next]].clone()
                },
                |h| verifier.verify(&set, Some(h), now),
                BatchSize::NumIterations(64),
            );
        });
        // The same lookups reading the token in place, spread over all N tokens: at large N
        // the token's own bytes miss the CPU caches too (an upper bound).
        g.bench_function(format!("{size}/token_bytes_cold"), |b| {
            b.iter_batched(
                || {
                    next = (next + 1) % size;
                    &headers[order[next]]
                },
                |h| verifier.verify(&set, Some(h), now),
                BatchSize::SmallInput,
            );
        });
        let after = verifier.cache_stats();
        assert_eq!(
            before.misses, after.misses,
            "auth/cache_hit/{size}: some lookups missed the cache"
        );
        eprintln!(
            "auth/cache_hit/{size}: {} hits, 0 misses during measurement, {} entries",
            after.hits - before.hits,
            after.entries
        );
    }
    g.finish();
}

/// Choosing the provider on the cached path: a cache hit with one provider (the single-issuer
/// form) against four (`[[auth.providers]]`, the token of the last one). The hit names its
/// provider, so the issuer is only read from the token on a miss (`cold/...`).
fn providers(c: &mut Criterion) {
    let now = now_s();
    let key = SigningKey::generate(Algorithm::EdDSA, "ed").expect("key");
    let set = key_set(&[&key]);
    let with_issuer = |iss: &str| AuthPolicy {
        issuer: Some(iss.to_owned()),
        ..policy()
    };
    let issuers: Vec<String> = (0..4)
        .map(|i| format!("https://idp-{i}.example.com/"))
        .collect();
    let single = TokenVerifier::new(with_issuer(&issuers[3]), 1000).expect("policy");
    let four =
        TokenVerifier::with_providers(issuers.iter().map(|i| with_issuer(i)).collect(), 1000)
            .expect("policies");
    let mut token_claims = claims("bench-user", now);
    token_claims["iss"] = json!(issuers[3]);
    let header = bearer(&mint(&key, &token_claims).expect("mint"));
    let mut g = c.benchmark_group("auth/providers");
    for (name, verifier) in [("1", &single), ("4", &four)] {
        let prepared = verifier.prepare(Some(&header)).expect("token");
        verifier.finish(&prepared, &set, now).expect("valid");
        g.bench_function(format!("cache_hit/{name}"), |b| {
            b.iter(|| {
                let prepared = verifier.prepare(black_box(Some(&header))).expect("token");
                verifier.finish(&prepared, &set, now)
            });
        });
    }
    let uncached =
        TokenVerifier::with_providers(issuers.iter().map(|i| with_issuer(i)).collect(), 0)
            .expect("policies");
    g.bench_function("select_on_miss/4", |b| {
        b.iter(|| {
            uncached
                .prepare(black_box(Some(&header)))
                .map(|p| p.provider)
        });
    });
    g.finish();
}

/// A local limiter (no Redis) keyed on `sub` whose rate and burst are both `per_second`.
fn local_limiter(per_second: u32) -> upload_gateway::rate_limit::Limiter {
    use upload_gateway::config::{RateKey, RateLimitSettings};
    let metrics = upload_gateway::metrics::Metrics::new().expect("metrics");
    upload_gateway::rate_limit::Limiter::new(
        RateLimitSettings {
            key: RateKey::Claim("sub".into()),
            requests_per_second: per_second,
            burst: per_second,
            all_api_routes: false,
            redis_url: None,
        },
        &[ISSUER],
        &metrics,
    )
}

/// One local rate-limit check (`[rate_limit]`, no Redis): the key's GCRA bucket in governor's
/// keyed state, 10,000 distinct keys in the map, each check on another key and admitted.
fn rate_limit(c: &mut Criterion) {
    let limiter = local_limiter(1_000_000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    for key in &keys {
        limiter.check_local(key).expect("admitted");
    }
    let mut g = c.benchmark_group("rate_limit");
    let mut i = 0usize;
    g.bench_function("check_local", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.check_local(black_box(&keys[i]))
        });
    });
    // The other crate the issue names: Pingora's own `pingora-limits` (a count-min sketch of
    // events per fixed window, not a bucket: no burst, no wait to announce). A check is one
    // `observe` compared with the limit, as Pingora's rate-limiter example does.
    let rate = pingora_limits::rate::Rate::new(std::time::Duration::from_secs(1));
    g.bench_function("pingora_limits_observe", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            rate.observe(black_box(&keys[i]), 1) <= 1_000_000
        });
    });
    g.finish();
}

/// N threads hitting the shared structures at once, each on its own keys; one criterion
/// iteration is one operation on every thread (Throughput::Elements(N)).
fn contention(c: &mut Criterion) {
    use std::sync::Barrier;
    let now = now_s();
    let key = SigningKey::generate(Algorithm::EdDSA, "ed").expect("key");
    let keys = arc_swap::ArcSwap::from_pointee(key_set(&[&key]));
    let tokens_per_thread = 64;
    let headers = mint_headers(&key, 8 * tokens_per_thread, now);
    let verifier = TokenVerifier::new(policy(), 10_000).expect("policy");
    for h in &headers {
        verifier.verify(&keys.load(), Some(h), now).expect("valid");
    }
    let limiter = local_limiter(1_000_000_000);
    let subjects: Vec<String> = (0..8 * tokens_per_thread)
        .map(|i| format!("u{i}"))
        .collect();

    // Runs `op(thread, i)` `iters` times on each of `threads` threads, started together;
    // the wall time of the slowest is the batch's time.
    fn parallel(threads: usize, iters: u64, op: &(dyn Fn(usize, usize) + Sync)) -> Duration {
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        for i in 0..iters {
                            op(t, i as usize);
                        }
                        start.elapsed()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bench thread"))
                .max()
                .unwrap_or_default()
        })
    }

    let mut g = c.benchmark_group("contention");
    for threads in [1usize, 2, 4, 8] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(format!("cache_hit+key_set/{threads}"), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|t, i| {
                    let h = &headers[t * tokens_per_thread + i % tokens_per_thread];
                    black_box(verifier.verify(&keys.load(), Some(h), now).is_ok());
                })
            });
        });
        g.bench_function(format!("rate_limit_local/{threads}"), |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, &|t, i| {
                    let subject = &subjects[t * tokens_per_thread + i % tokens_per_thread];
                    black_box(limiter.check_local(subject).is_ok());
                })
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    request_core,
    render,
    tokens,
    cache_hits,
    providers,
    rate_limit,
    contention
);
criterion_main!(benches);
