//! End to end: the rate limit shared through a real `redis-server` (SPEC §4.10): one instance
//! keeps its buckets in Redis; two instances on one Redis admit together what one would; Redis
//! killed mid-test, hung, or absent from the start never fails a request (the local limit
//! stands in, `rate_limit_backend_errors_total` counts, `rate_limit_backend_up` says 0), and
//! the limit is shared again once Redis is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test, bench or example fails loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{
    client, finish_call, finish_path, issuer, upload_service, Gateway, GatewayConfig, AUDIENCE,
};
use upload_gateway::demo::issuer::Issuer;

const BURST: usize = 4;

fn shared(service: std::net::SocketAddr, issuer: &Issuer, redis: &RedisServer) -> Gateway {
    let mut config = GatewayConfig::new(vec![service], issuer);
    config.extra_tail = Some(format!(
        "[rate_limit]\nenabled = true\nkey = \"sub\"\nrequests_per_second = 1\nburst = {BURST}\n\
         redis_url = \"{}\"\n",
        redis.url()
    ));
    Gateway::start(&config)
}

async fn metric(gateway: &Gateway, name: &str) -> i64 {
    let text = common::scrape(gateway).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("upload_gateway_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (bounded) until the gateway reports the backend up (1) or down (0).
async fn wait_backend(gateway: &Gateway, up: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(gateway, "rate_limit_backend_up").await != up {
        assert!(
            Instant::now() < deadline,
            "rate_limit_backend_up never became {up}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the gateway has counted at least one backend error.
async fn wait_backend_error(gateway: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(gateway, "rate_limit_backend_errors_total").await < 1 {
        assert!(Instant::now() < deadline, "no backend error counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` finish calls for `subject`, round robin over `gateways`; the statuses in order.
/// The Redis key of `subject`'s bucket: the claim's name and the provider's issuer, each
/// length-prefixed, then the value.
fn bucket(issuer: &Issuer, subject: &str) -> String {
    let iss = &issuer.issuer;
    format!("upload-gateway:rate:3:sub{}:{iss}{subject}", iss.len())
}

async fn calls(gateways: &[&Gateway], issuer: &Issuer, subject: &str, n: usize) -> Vec<u16> {
    let token = issuer
        .mint(&issuer.claims(subject, AUDIENCE, 3600))
        .unwrap();
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..n {
        let gateway = gateways[i % gateways.len()];
        let resp = finish_call(&http, gateway.url(&finish_path()), &token)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses
}

fn admitted(statuses: &[u16]) -> usize {
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    statuses.iter().filter(|s| **s == 200).count()
}

/// At one request per second, what a single bucket may admit over `elapsed`.
fn at_most(elapsed: Duration) -> usize {
    BURST + elapsed.as_secs() as usize + 1
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_keeps_its_buckets_in_redis() {
    let redis = RedisServer::start();
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = shared(service.addr(), &issuer, &redis);
    wait_backend(&gateway, 1).await;

    let started = Instant::now();
    let statuses = calls(&[&gateway], &issuer, "alice", BURST + 3).await;
    assert!(statuses[..BURST].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(admitted(&statuses) <= at_most(started.elapsed()));
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert_eq!(
        redis.keys("upload-gateway:rate:"),
        vec![bucket(&issuer, "alice")],
        "the bucket is not in Redis"
    );
    assert_eq!(metric(&gateway, "rate_limit_backend_errors_total").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_admit_together_what_one_would() {
    let redis = RedisServer::start();
    let service = upload_service().await;
    let issuer = issuer().await;
    let a = shared(service.addr(), &issuer, &redis);
    let b = shared(service.addr(), &issuer, &redis);
    wait_backend(&a, 1).await;
    wait_backend(&b, 1).await;

    // Alone, each instance would admit BURST of these: 2 × BURST in all.
    let started = Instant::now();
    let statuses = calls(&[&a, &b], &issuer, "bob", 4 * BURST).await;
    let together = admitted(&statuses);
    assert!(together >= BURST, "{statuses:?}");
    assert!(
        together <= at_most(started.elapsed()) && together < 2 * BURST,
        "the instances did not share the limit: {statuses:?}"
    );
    // Both answered 429s: each saw the other's requests.
    assert!(
        statuses.iter().step_by(2).any(|s| *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().skip(1).step_by(2).any(|s| *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_mid_test_falls_back_to_the_local_limit_and_comes_back() {
    let mut redis = RedisServer::start();
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = shared(service.addr(), &issuer, &redis);
    wait_backend(&gateway, 1).await;

    // Carol's shared bucket is spent; Redis dies.
    let spent = calls(&[&gateway], &issuer, "carol", BURST + 1).await;
    assert_eq!(*spent.last().unwrap(), 429, "{spent:?}");
    redis.kill();

    // Every request is answered (200 or 429, never 5xx): the local bucket, fresh, admits a
    // burst of its own, then limits.
    let started = Instant::now();
    let statuses = calls(&[&gateway], &issuer, "carol", BURST + 3).await;
    let local = admitted(&statuses);
    assert!(
        local >= BURST - 1 && local <= at_most(started.elapsed()),
        "{statuses:?}"
    );
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert!(metric(&gateway, "rate_limit_backend_errors_total").await >= 1);
    assert_eq!(metric(&gateway, "rate_limit_backend_up").await, 0);
    assert!(
        gateway.logs().contains("rate limit: Redis"),
        "no warning logged"
    );

    // Redis again (empty, on the same address): reconnected in the background, shared again.
    redis.start_on();
    wait_backend(&gateway, 1).await;
    let statuses = calls(&[&gateway], &issuer, "dave", 1).await;
    assert_eq!(statuses, vec![200]);
    assert_eq!(
        redis.keys("upload-gateway:rate:"),
        vec![bucket(&issuer, "dave")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_redis_costs_a_bounded_wait_then_nothing() {
    let redis = RedisServer::start();
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = shared(service.addr(), &issuer, &redis);
    wait_backend(&gateway, 1).await;

    redis.pause(true);
    // The first request waits for Redis (50 ms at most), then the local limit decides; the
    // client's own timeout (20 s) would turn a blocked request into a failure here.
    let statuses = calls(&[&gateway], &issuer, "erin", BURST + 2).await;
    assert!(statuses[..BURST].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert_eq!(metric(&gateway, "rate_limit_backend_up").await, 0);
    assert!(metric(&gateway, "rate_limit_backend_errors_total").await >= 1);
    redis.pause(false);
    wait_backend(&gateway, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_absent_from_the_start_leaves_the_limit_local_until_it_appears() {
    let mut redis = RedisServer::absent();
    let service = upload_service().await;
    let issuer = issuer().await;
    let gateway = shared(service.addr(), &issuer, &redis);
    gateway.wait_keys_loaded();

    let statuses = calls(&[&gateway], &issuer, "frank", BURST + 2).await;
    assert!(statuses[..BURST].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    assert_eq!(metric(&gateway, "rate_limit_backend_up").await, 0);
    wait_backend_error(&gateway).await;
    let ready = reqwest::get(gateway.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "Redis is not a readiness condition");

    redis.start_on();
    wait_backend(&gateway, 1).await;
    calls(&[&gateway], &issuer, "grace", 1).await;
    assert_eq!(
        redis.keys("upload-gateway:rate:"),
        vec![bucket(&issuer, "grace")]
    );
}

#[test]
fn check_accepts_redis_addresses_and_refuses_others_without_echoing_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let write = |url: &str| {
        std::fs::write(
            &path,
            format!(
                "[auth]\njwks_url = \"http://127.0.0.1:1/j\"\n[rate_limit]\nenabled = true\n\
                 redis_url = \"{url}\"\n"
            ),
        )
        .unwrap();
        std::process::Command::new(common::binary())
            .args(["check", "--no-bind", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    for good in [
        "redis://127.0.0.1:6379/0",
        "redis://:hunter2@cache.internal:6380/2",
        "redis+unix:///run/redis.sock",
    ] {
        let out = write(good);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("hunter2"), "check printed the password");
    }
    for bad in ["http://127.0.0.1:6379", "redis://:hunter2@[::1", "nonsense"] {
        let out = write(bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains("rate_limit.redis_url"), "{bad}: {stderr}");
        assert!(!stderr.contains("hunter2"), "check echoed the password");
    }
}
