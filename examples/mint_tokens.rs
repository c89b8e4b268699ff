//! Key material and tokens for the load benchmark (`benches/load/run.sh`).
//!
//! Reads an RSA private key made by openssl (the same key HAProxy verifies with, through its
//! public PEM), publishes its public half as a JWK next to a freshly generated Ed25519 key, and
//! mints tokens with `upload_gateway::demo::issuer_keys`:
//!
//! ```sh
//! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem
//! cargo run --release --example mint_tokens -- --rsa-key rsa.pem --out-dir DIR \
//!     --issuer https://bench-issuer.example/ --audience upload-api \
//!     --cold-count 200000 --cold-alg EdDSA
//! ```
//!
//! Writes into `DIR`: `jwks.json` (RS256 key `bench-rs256` + EdDSA key `bench-eddsa`),
//! `token.txt` (one RS256 token: the "cached token" runs) and `cold_tokens.txt` (`--cold-count`
//! distinct valid tokens, one per line, signed with `--cold-alg`: the "cold token" runs).
//! Every token lives `--lifetime-s` seconds (default 23 h, under the gateway's 24 h cap).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

use std::fs;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use upload_gateway::demo::issuer_keys::{jwks_json, mint, SigningKey};

struct Args {
    rsa_key: PathBuf,
    out_dir: PathBuf,
    issuer: String,
    audience: String,
    lifetime_s: u64,
    cold_count: usize,
    cold_alg: Algorithm,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rsa_key: PathBuf::new(),
        out_dir: PathBuf::from("."),
        issuer: "https://bench-issuer.example/".into(),
        audience: "upload-api".into(),
        lifetime_s: 23 * 3600,
        cold_count: 0,
        cold_alg: Algorithm::EdDSA,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rsa-key" => args.rsa_key = value.into(),
            "--out-dir" => args.out_dir = value.into(),
            "--issuer" => args.issuer = value,
            "--audience" => args.audience = value,
            "--lifetime-s" => {
                args.lifetime_s = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--cold-count" => {
                args.cold_count = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--cold-alg" => {
                args.cold_alg = match value.as_str() {
                    "EdDSA" => Algorithm::EdDSA,
                    "RS256" => Algorithm::RS256,
                    "ES256" => Algorithm::ES256,
                    _ => return Err(format!("{flag}: EdDSA, RS256 or ES256")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.rsa_key.as_os_str().is_empty() {
        return Err("--rsa-key FILE (PKCS#8 PEM, from openssl genpkey) is required".into());
    }
    Ok(args)
}

/// The RS256 signing key of an openssl-generated PKCS#8 PEM, with its public JWK.
fn rsa_signing_key(pem: &[u8], kid: &str) -> Result<SigningKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the RSA key is not PEM text")?;
    let b64: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("the RSA key's PEM body: {e}"))?;
    let pair = RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("the RSA key is not a PKCS#8 private key: {e}"))?;
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let encoding_key = EncodingKey::from_rsa_pem(pem).map_err(|e| format!("jsonwebtoken: {e}"))?;
    Ok(SigningKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding_key,
        public_jwk: json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        }),
    })
}

fn claims(args: &Args, now: u64, subject: &str) -> Value {
    json!({
        "iss": args.issuer,
        "sub": subject,
        "aud": args.audience,
        "iat": now,
        "nbf": now,
        "exp": now + args.lifetime_s,
    })
}

/// Mints `count` distinct tokens (distinct `sub`) on every core.
fn mint_many(key: &SigningKey, args: &Args, now: u64, count: usize) -> Result<Vec<String>, String> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = count.div_ceil(workers.max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let start = w * per_worker;
                let end = count.min(start + per_worker);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| {
                            mint(key, &claims(args, now, &format!("bench-user-{i}")))
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for handle in handles {
            all.extend(handle.join().map_err(|_| "a minting thread panicked")??);
        }
        Ok(all)
    })
}

fn run(args: &Args) -> Result<(), String> {
    let pem = fs::read(&args.rsa_key).map_err(|e| format!("{}: {e}", args.rsa_key.display()))?;
    let rsa = rsa_signing_key(&pem, "bench-rs256")?;
    let eddsa = SigningKey::generate(Algorithm::EdDSA, "bench-eddsa").map_err(|e| e.to_string())?;
    let es256 = SigningKey::generate(Algorithm::ES256, "bench-es256").map_err(|e| e.to_string())?;
    fs::create_dir_all(&args.out_dir).map_err(|e| e.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        fs::write(args.out_dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))
    };
    write("jwks.json", jwks_json(&[&rsa, &eddsa, &es256]).as_bytes())?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let token = mint(&rsa, &claims(args, now, "bench-user")).map_err(|e| e.to_string())?;
    write("token.txt", format!("{token}\n").as_bytes())?;

    if args.cold_count > 0 {
        let key = match args.cold_alg {
            Algorithm::RS256 => &rsa,
            Algorithm::ES256 => &es256,
            _ => &eddsa,
        };
        let started = Instant::now();
        let tokens = mint_many(key, args, now, args.cold_count)?;
        let path = args.out_dir.join("cold_tokens.txt");
        let file = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = BufWriter::new(file);
        for token in &tokens {
            writeln!(out, "{token}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
        eprintln!(
            "mint_tokens: {} {:?} tokens in {:.1} s",
            tokens.len(),
            args.cold_alg,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mint_tokens: {message}");
            ExitCode::FAILURE
        }
    }
}
