//! Decision latency at scale: 1,000 policies over 100 apps, 100,000 users in
//! random groups, random requests (random user, app, method, address and
//! device posture; bursts of 100 requests per second at random seconds of a
//! week).
//!
//! `cargo bench -p tsuzuku-policy` runs the criterion benchmarks and prints
//! the latency distribution of 100,000 single decisions, ending with the line
//! `decide p99: N us`. `cargo bench -p tsuzuku-policy -- --test` is a quick
//! smoke run (each benchmark once, 2,000 decisions measured).

// Benchmark code, like test code: a failed setup should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use tsuzuku_policy::{
    AppFacts, DeviceFacts, PolicyDoc, PolicyEngine, RequestFacts, TimeZone, UserFacts,
};

const APPS: usize = 100;
const USERS: usize = 100_000;
const GROUPS: usize = 50;
const PER_APP_POLICIES: usize = 9;
const SHARED_POLICIES: usize = 100;
/// 2026-11-23T00:00:00+09:00, a Monday in Tokyo.
const MONDAY: i64 = 1_795_359_600;

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Conditions a permit may carry, the way real policies mix them.
const CONDITIONS: [&str; 8] = [
    r#"context.local_time >= duration("9h") && context.local_time < duration("18h")"#,
    r#"context.source_ip.isInRange(ip("10.0.0.0/8"))"#,
    "principal.mfa",
    "context has device && context.device.company_issued && context.device.antivirus_version >= 400182403000009",
    r#"["Mon", "Tue", "Wed", "Thu", "Fri"].contains(context.weekday)"#,
    "principal.auth_age_secs < 28800",
    r#"context.path like "/api/*" || context.method == "GET""#,
    r#"principal.auth_method == "oidc" || principal.auth_method == "password+totp""#,
];

fn policies(rng: &mut Rng) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let group = |rng: &mut Rng| format!("Tsuzuku::Group::\"g{}\"", rng.below(GROUPS));
    for app in 0..APPS {
        let resource = format!("resource == Tsuzuku::App::\"app{app}\"");
        for n in 0..5 {
            let condition = CONDITIONS[rng.below(CONDITIONS.len())];
            docs.push((
                format!("app{app}-permit{n}"),
                format!(
                    "permit (principal in {}, action in Tsuzuku::Action::\"access\", {resource})\n\
                     when {{ {condition} }};",
                    group(rng)
                ),
            ));
        }
        for n in 0..2 {
            docs.push((
                format!("app{app}-read{n}"),
                format!(
                    "permit (principal in {}, action == Tsuzuku::Action::\"read\", {resource});",
                    group(rng)
                ),
            ));
        }
        docs.push((
            format!("app{app}-write-mfa"),
            format!(
                "forbid (principal, action == Tsuzuku::Action::\"write\", {resource})\n\
                 unless {{ principal.mfa }};"
            ),
        ));
        docs.push((
            format!("app{app}-no-home-net"),
            format!(
                "forbid (principal in {}, action, {resource})\n\
                 when {{ context.source_ip.isInRange(ip(\"192.168.0.0/16\")) }};",
                group(rng)
            ),
        ));
    }
    assert_eq!(docs.len(), APPS * PER_APP_POLICIES);
    for n in 0..SHARED_POLICIES {
        // One in ten names no group and applies to every request.
        let text = match (n % 10, n % 4) {
            (9, _) => match n % 3 {
                0 => format!(
                    "forbid (principal, action, resource)\n\
                     when {{ context.source_ip.isInRange(ip(\"198.51.{}.0/24\")) }};",
                    n
                ),
                1 => "forbid (principal, action == Tsuzuku::Action::\"write\", resource)\n\
                      when { resource.data_class == \"restricted\" }\n\
                      unless { principal.mfa };"
                    .to_owned(),
                _ => "forbid (principal, action, resource)\n\
                      when { context has device && context.device.posture_age_secs > 86400 };"
                    .to_owned(),
            },
            (_, 0) => format!(
                "forbid (principal in {}, action, resource)\n\
                 unless {{ context.local_time >= duration(\"7h\") && context.local_time < duration(\"22h\") }};",
                group(rng)
            ),
            (_, 1) => format!(
                "forbid (principal in {}, action, resource)\n\
                 when {{ resource.data_class == \"restricted\" }}\n\
                 unless {{ context has device && context.device.company_issued && context.device.disk_encrypted }};",
                group(rng)
            ),
            (_, 2) => format!(
                "forbid (principal in {}, action == Tsuzuku::Action::\"write\", resource)\n\
                 when {{ resource.critical }}\n\
                 unless {{ principal.mfa && principal.auth_age_secs < 3600 }};",
                group(rng)
            ),
            _ => format!(
                "permit (principal in {}, action == Tsuzuku::Action::\"read\", resource)\n\
                 when {{ resource.data_class == \"public\" }};",
                group(rng)
            ),
        };
        docs.push((format!("shared{n}"), text));
    }
    docs
}

fn users(rng: &mut Rng) -> Vec<UserFacts> {
    (0..USERS)
        .map(|n| {
            let groups = (0..1 + rng.below(5))
                .map(|_| format!("g{}", rng.below(GROUPS)))
                .collect();
            let (auth_method, mfa) = match rng.below(3) {
                0 => ("password", false),
                1 => ("password+totp", true),
                _ => ("oidc", rng.chance(70)),
            };
            UserFacts {
                id: format!("user{n}"),
                username: format!("user{n}"),
                groups,
                auth_method: auth_method.to_owned(),
                mfa,
                auth_time: MONDAY - rng.below(86_400) as i64,
            }
        })
        .collect()
}

fn apps() -> Vec<AppFacts> {
    const CLASSES: [&str; 4] = ["public", "internal", "confidential", "restricted"];
    (0..APPS)
        .map(|n| AppFacts {
            name: format!("app{n}"),
            data_class: CLASSES[n % CLASSES.len()].to_owned(),
            critical: n % 5 == 0,
            isolated: n % 10 == 0,
        })
        .collect()
}

struct Request {
    user: usize,
    app: usize,
    device: Option<DeviceFacts>,
    req: RequestFacts,
}

/// Requests arrive the way a busy gateway sees them: in bursts of
/// `BURST` within one second, at random seconds of one week.
const BURST: usize = 100;

fn requests(rng: &mut Rng, count: usize) -> Vec<Request> {
    let mut now = MONDAY;
    (0..count)
        .map(|n| {
            if n % BURST == 0 {
                now = MONDAY + rng.below(7 * 86_400) as i64;
            }
            let ip = match rng.below(3) {
                0 => Ipv4Addr::new(10, rng.below(256) as u8, rng.below(256) as u8, 7),
                1 => Ipv4Addr::new(192, 168, rng.below(256) as u8, 20),
                _ => Ipv4Addr::new(203, 0, 113, rng.below(256) as u8),
            };
            let device = rng.chance(70).then(|| DeviceFacts {
                enrolled: rng.chance(80),
                company_issued: rng.chance(70),
                os: "windows".to_owned(),
                os_version: "10.0.22631".to_owned(),
                disk_encrypted: rng.chance(90),
                antivirus_running: rng.chance(95),
                antivirus_version: 400_182_403_000_000 + rng.below(20) as i64,
                reported_at: now - rng.below(600) as i64,
            });
            let method = if rng.chance(80) { "GET" } else { "POST" };
            let path = if rng.chance(50) {
                "/api/items"
            } else {
                "/index.html"
            };
            Request {
                user: rng.below(USERS),
                app: rng.below(APPS),
                device,
                req: RequestFacts {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    source_ip: IpAddr::V4(ip),
                    now_unix: now,
                },
            }
        })
        .collect()
}

struct World {
    engine: PolicyEngine,
    users: Vec<UserFacts>,
    apps: Vec<AppFacts>,
    requests: Vec<Request>,
}

impl World {
    fn build(request_count: usize) -> World {
        let mut rng = Rng(0x7453_757a_756b_7521);
        let docs = policies(&mut rng);
        let doc_refs: Vec<PolicyDoc<'_>> = docs
            .iter()
            .map(|(id, text)| PolicyDoc { id, text })
            .collect();
        let tz = TimeZone::get("Asia/Tokyo").expect("bundled time zone");
        let engine = PolicyEngine::compile(&doc_refs, tz).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            engine.policy_ids().len(),
            APPS * PER_APP_POLICIES + SHARED_POLICIES
        );
        World {
            engine,
            users: users(&mut rng),
            apps: apps(),
            requests: requests(&mut rng, request_count),
        }
    }

    fn decide(&self, r: &Request) -> bool {
        let user = &self.users[r.user];
        let app = &self.apps[r.app];
        self.engine
            .decide(user, r.device.as_ref(), app, &r.req)
            .allowed
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Times `count` single decisions and prints the distribution.
fn latency_report(world: &World, count: usize) {
    // Warm-up: caches, allocator, branch predictors.
    for r in world.requests.iter().take(count / 10) {
        black_box(world.decide(r));
    }
    let mut samples = Vec::with_capacity(count);
    let mut allowed = 0usize;
    for r in world.requests.iter().cycle().take(count) {
        let start = Instant::now();
        let ok = black_box(world.decide(r));
        samples.push(start.elapsed());
        allowed += usize::from(ok);
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "decide latency over {count} decisions ({} policies, {APPS} apps, {USERS} users, {:.0}% allowed): \
         median {:.1} us, p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        APPS * PER_APP_POLICIES + SHARED_POLICIES,
        allowed as f64 * 100.0 / count as f64,
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99)),
        us(percentile(&samples, 0.999)),
        us(samples[samples.len() - 1]),
    );
    println!(
        "decide p99: {:.0} us",
        us(percentile(&samples, 0.99)).ceil()
    );
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let decisions = if smoke { 2_000 } else { 100_000 };
    let world = World::build(decisions.min(20_000));

    let mut criterion = Criterion::default().configure_from_args();
    let mut next = 0usize;
    criterion.bench_function("decide (1000 policies, 100 apps, 100k users)", |b| {
        b.iter(|| {
            let r = &world.requests[next % world.requests.len()];
            next += 1;
            black_box(world.decide(r))
        })
    });
    {
        let r = &world.requests[0];
        let user = &world.users[r.user];
        let app = &world.apps[r.app];
        criterion.bench_function("explain (1000 policies)", |b| {
            b.iter(|| black_box(world.engine.explain(user, r.device.as_ref(), app, &r.req)))
        });
    }
    let mut rng = Rng(42);
    let docs = policies(&mut rng);
    let doc_refs: Vec<PolicyDoc<'_>> = docs
        .iter()
        .map(|(id, text)| PolicyDoc { id, text })
        .collect();
    let mut group = criterion.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("compile + validate 1000 policies", |b| {
        b.iter(|| {
            let tz = TimeZone::get("Asia/Tokyo").expect("bundled time zone");
            black_box(PolicyEngine::compile(&doc_refs, tz).map(|e| e.policy_ids().len()))
        })
    });
    group.finish();
    criterion.final_summary();

    latency_report(&world, decisions);
}
