#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Selection driven by a simulated network and clock: probes are sent on the prober's schedule
//! (interval after a good answer, fast interval after a failure, answers arrive after their
//! latency or the timeout), and `select` runs every tick like the runtime's ticker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use expect_test::{Expect, expect};

use super::*;

/// 2026-01-01T00:00:00Z.
const BASE: u64 = 1_767_225_600_000;

fn at(secs: f64) -> Time {
    Time::from_unix_ms(BASE + (secs * 1000.0).round() as u64)
}

fn secs(t: Time) -> f64 {
    (t.unix_ms() - BASE) as f64 / 1000.0
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ok(latency_ms: f64) -> Outcome {
    Outcome::Ok {
        latency: Duration::from_secs_f64(latency_ms.max(0.0) / 1000.0),
    }
}

const REFUSED: Outcome = Outcome::Failed(Failure::Connect);
const SILENT: Outcome = Outcome::Failed(Failure::Timeout);

fn site(name: &str, preference: u32, nodes: u8) -> Site {
    Site {
        name: name.to_owned(),
        preference,
        host: format!("gw.{}.example.com", name.to_lowercase()),
        endpoints: (1..=nodes)
            .map(|k| SocketAddr::from(([10, 0, preference as u8, k], 443)))
            .collect(),
    }
}

fn two_sites() -> Vec<Site> {
    vec![site("A", 1, 1), site("B", 2, 1)]
}

/// What the network does to a probe sent to an endpoint at a time (seconds).
type Net = Box<dyn FnMut(&Endpoint, f64) -> Outcome>;

struct Sim {
    sites: Vec<Site>,
    config: SelectConfig,
    history: History,
    exclusions: Vec<Exclusion>,
    sheds: Vec<Shed>,
    current: Option<Current>,
    /// Simulated time in ms since BASE.
    now_ms: u64,
    tick_ms: u64,
    interval_ms: u64,
    fast_ms: u64,
    timeout_ms: u64,
    next_probe: BTreeMap<Endpoint, u64>,
    in_flight: Vec<(u64, Endpoint, Sample)>,
    /// (time, from, to, reason) of every change of the chosen site.
    switches: Vec<(f64, Option<String>, Option<String>, String)>,
    last: Option<Selection>,
    net: Net,
}

impl Sim {
    fn new(sites: Vec<Site>, net: impl FnMut(&Endpoint, f64) -> Outcome + 'static) -> Self {
        Self {
            sites,
            config: SelectConfig::default(),
            history: History::new(),
            exclusions: Vec::new(),
            sheds: Vec::new(),
            current: None,
            now_ms: 0,
            tick_ms: 50,
            interval_ms: 1000,
            fast_ms: 200,
            timeout_ms: 800,
            next_probe: BTreeMap::new(),
            in_flight: Vec::new(),
            switches: Vec::new(),
            last: None,
            net: Box::new(net),
        }
    }

    /// Advances the clock tick by tick to `until` seconds.
    fn run_until(&mut self, until: f64) {
        let until_ms = (until * 1000.0).round() as u64;
        while self.now_ms < until_ms {
            self.now_ms += self.tick_ms;
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now_ms;
        let endpoints: Vec<Endpoint> = self
            .sites
            .iter()
            .flat_map(|s| {
                s.endpoints.iter().map(|&addr| Endpoint {
                    site: s.name.clone(),
                    addr,
                })
            })
            .collect();
        for (i, ep) in endpoints.into_iter().enumerate() {
            // Endpoints start probing a little apart, like independent tasks.
            let due = *self
                .next_probe
                .entry(ep.clone())
                .or_insert(now + 10 * i as u64);
            if due > now {
                continue;
            }
            let mut outcome = (self.net)(&ep, now as f64 / 1000.0);
            let took = match outcome {
                Outcome::Ok { latency } if latency.as_millis() as u64 >= self.timeout_ms => {
                    outcome = SILENT;
                    self.timeout_ms
                }
                Outcome::Ok { latency } => latency.as_millis() as u64,
                Outcome::Failed(Failure::Timeout) => self.timeout_ms,
                Outcome::Failed(_) => 1,
            };
            let wait = match outcome {
                Outcome::Ok { .. } => self.interval_ms,
                Outcome::Failed(_) => self.fast_ms,
            };
            self.next_probe
                .insert(ep.clone(), (now + wait).max(now + took));
            self.in_flight.push((
                now + took,
                ep,
                Sample {
                    at: Time::from_unix_ms(BASE + now),
                    outcome,
                    source: Source::Probe,
                },
            ));
        }
        let (arrived, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|(visible, _, _)| *visible <= now);
        self.in_flight = waiting;
        for (_, ep, sample) in arrived {
            self.history.record(ep, sample);
        }
        self.evaluate();
    }

    fn evaluate(&mut self) {
        let now = Time::from_unix_ms(BASE + self.now_ms);
        self.history
            .prune(now.minus(self.config.retention()), &self.sites);
        let sel = select(&Input {
            sites: &self.sites,
            history: &self.history,
            exclusions: &self.exclusions,
            sheds: &self.sheds,
            current: self.current.as_ref(),
            config: &self.config,
            now,
        });
        let before = self.current.as_ref().map(|c| c.site.clone());
        if before != sel.site {
            self.switches
                .push((secs(now), before, sel.site.clone(), sel.reason.to_string()));
            self.current = sel.site.clone().map(|site| Current { site, since: now });
        }
        self.last = Some(sel);
    }

    fn selection(&self) -> &Selection {
        self.last.as_ref().unwrap()
    }

    fn site(&self) -> Option<&str> {
        self.selection().site.as_deref()
    }

    /// Switches after the first choice.
    fn later_switches(&self) -> Vec<f64> {
        self.switches.iter().skip(1).map(|s| s.0).collect()
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for (t, from, to, reason) in &self.switches {
            let from = from.as_deref().unwrap_or("-");
            let to = to.as_deref().unwrap_or("-");
            writeln!(out, "{t:.2} {from} -> {to}: {reason}").unwrap();
        }
        out
    }
}

/// Runs a scenario to `until` and compares the log of switches with `expected`.
fn check(sim: &mut Sim, until: f64, expected: Expect) {
    sim.run_until(until);
    expected.assert_eq(&sim.log());
}

/// A site-wide behaviour: the outcome of a probe to `site` at time `t`.
fn by_site(
    mut f: impl FnMut(&str, f64) -> Outcome + 'static,
) -> impl FnMut(&Endpoint, f64) -> Outcome {
    move |ep, t| f(&ep.site, t)
}

#[test]
fn blackout_refused_fails_over_within_the_budget() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if t >= 40.0 => REFUSED,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    check(
        &mut sim,
        45.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.50 A -> B: failed over: site A missed 3 probes (last: could not connect)
        "#]],
    );
    // Detected within one probe interval plus the fast re-probes of the budget.
    let t = sim.later_switches()[0];
    assert!(t - 40.0 <= 1.0 + 0.5, "failover took {} s", t - 40.0);
}

#[test]
fn blackout_silent_gateway_fails_over_within_the_budget() {
    // A accepts connections but never answers: each probe times out after 800 ms.
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if t >= 40.0 => SILENT,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    check(
        &mut sim,
        45.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            41.05 A -> B: failed over: site A failed probes for 1 s (last: no answer within the timeout)
        "#]],
    );
    let t = sim.later_switches()[0];
    // One interval until the first silent probe, then the 1 s failure budget.
    assert!(t - 40.0 <= 1.0 + 1.0, "failover took {} s", t - 40.0);
}

#[test]
fn one_lost_probe_moves_nobody() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if (30.0..30.5).contains(&t) => SILENT,
            "A" if (50.0..50.5).contains(&t) => REFUSED,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    sim.run_until(70.0);
    assert_eq!(sim.later_switches(), Vec::<f64>::new(), "{}", sim.log());
}

#[test]
fn failback_only_after_hold_down() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if (40.0..60.0).contains(&t) => REFUSED,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    check(
        &mut sim,
        120.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.50 A -> B: failed over: site A missed 3 probes (last: could not connect)
            90.05 B -> A: preferred site healthy
        "#]],
    );
    // A answered again at about 60.1 s; it must have been healthy for the hold-down (30 s).
    let back = sim.later_switches()[1];
    assert!((90.0..92.0).contains(&back), "failback at {back}");
    // While waiting, the reason says why.
    let mut sim2 = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if (40.0..60.0).contains(&t) => REFUSED,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    sim2.run_until(75.0);
    expect![
        "site A healthy again; returning to it at 2026-01-01T00:01:30Z after the hold-down period"
    ]
    .assert_eq(&sim2.selection().reason.to_string());
}

#[test]
fn brownout_moves_after_the_sustained_margin_and_returns() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            // 90 ms added to A's path between 40 s and 100 s.
            "A" if (40.0..100.0).contains(&t) => ok(110.0),
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    check(
        &mut sim,
        140.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            43.05 A -> B: brownout: B faster than A by 68 ms (held for 2 s)
            104.05 B -> A: preferred site healthy
        "#]],
    );
    let moved = sim.later_switches()[0];
    let sustained = sim.config.sustained.as_secs_f64();
    assert!(
        moved >= 40.0 + sustained && moved <= 40.0 + sustained + 2.0,
        "moved at {moved}"
    );
}

#[test]
fn brownout_smaller_than_the_margin_moves_nobody() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if t >= 40.0 => ok(60.0),
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    sim.run_until(200.0);
    assert_eq!(sim.later_switches(), Vec::<f64>::new(), "{}", sim.log());
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-spread, spread].
    fn jitter(&mut self, spread: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * spread
    }
}

#[test]
fn jitter_on_both_sites_does_not_flap() {
    // (A's base latency, B's base latency, most switches allowed in 10 minutes). ±30 ms of
    // jitter on every probe of both sites.
    let cases = [
        // Equal: jitter alone never moves anyone.
        (50.0, 50.0, 0),
        // B faster by half the margin: with three probes per sustained window, jitter now and
        // then makes it look faster by the margin; the dwell time still spaces switches.
        (60.0, 40.0, 10),
        // B faster by exactly the margin: the worst case for flapping.
        (80.0, 40.0, 10),
        // B faster by a little more than the margin: move once, then stay.
        (100.0, 40.0, 1),
    ];
    for (seed, &(a, b, allowed)) in cases.iter().enumerate() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed as u64 + 1));
        let mut sim = Sim::new(
            two_sites(),
            by_site(move |s, _| match s {
                "A" => ok(a + rng.jitter(30.0)),
                _ => ok(b + rng.jitter(30.0)),
            }),
        );
        sim.run_until(600.0);
        let switches = sim.later_switches();
        assert!(
            switches.len() <= allowed,
            "A {a} ms, B {b} ms: {} switches in 10 minutes, at most {allowed} allowed:\n{}",
            switches.len(),
            sim.log()
        );
        // Never more than one switch in any minute.
        for pair in switches.windows(2) {
            assert!(
                pair[1] - pair[0] >= 30.0,
                "A {a} ms, B {b} ms: switches at {} and {} s:\n{}",
                pair[0],
                pair[1],
                sim.log()
            );
        }
        let per_minute = switches.len() as f64 / 10.0;
        assert!(
            per_minute <= 1.0,
            "A {a} ms, B {b} ms: {per_minute} per minute"
        );
    }

    // The control: without hysteresis (no dwell time, no return margin, no sustained window)
    // the worst case flaps, so the assertions above measure something.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ 3);
    let mut sim = Sim::new(
        two_sites(),
        by_site(move |s, _| match s {
            "A" => ok(80.0 + rng.jitter(30.0)),
            _ => ok(40.0 + rng.jitter(30.0)),
        }),
    );
    sim.config = SelectConfig {
        min_dwell: Duration::ZERO,
        hold_down: Duration::ZERO,
        return_margin: sim.config.latency_margin,
        sustained: ms(1),
        ..SelectConfig::default()
    };
    sim.run_until(600.0);
    let flaps = sim.later_switches().len();
    assert!(flaps > 30, "without hysteresis only {flaps} switches");
}

#[test]
fn select_knows_no_io() {
    // The architecture invariant, checked on the source: selection and the PAC text are pure.
    for (file, text) in [
        ("select.rs", include_str!("../select.rs")),
        ("pac.rs", include_str!("../pac.rs")),
    ] {
        for banned in [
            "tokio",
            "reqwest",
            "hyper",
            "std::io",
            "std::fs",
            "TcpStream",
            "UdpSocket",
            "SystemTime",
            "Instant",
            "std::thread",
            "std::process",
        ] {
            assert!(!text.contains(banned), "{file} mentions {banned}");
        }
    }
}

#[test]
fn excluded_site_is_left_and_returns_when_the_exclusion_expires() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, _| if s == "A" { ok(20.0) } else { ok(30.0) }),
    );
    sim.run_until(40.0);
    sim.exclusions.push(Exclusion {
        site: "A".to_owned(),
        until: at(100.0),
        reason: "maintenance".to_owned(),
    });
    check(
        &mut sim,
        130.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.05 A -> B: site A excluded until 2026-01-01T00:01:40Z (maintenance)
            100.00 B -> A: preferred site healthy
        "#]],
    );
}

#[test]
fn all_sites_down_says_so_and_recovers_without_restart() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, t| match s {
            "A" if (40.0..70.0).contains(&t) => REFUSED,
            "B" if (40.0..55.0).contains(&t) => REFUSED,
            "A" => ok(20.0),
            _ => ok(30.0),
        }),
    );
    sim.run_until(45.0);
    assert_eq!(sim.site(), None);
    expect!["all sites down: A missed 25 probes (last: could not connect); B missed 25 probes (last: could not connect)"]
        .assert_eq(&sim.selection().reason.to_string());
    // Every endpoint is still tried, most preferred first.
    assert_eq!(
        sim.selection()
            .attempts(0)
            .iter()
            .map(|e| e.site.as_str())
            .collect::<Vec<_>>(),
        ["A", "B"]
    );
    check(
        &mut sim,
        120.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.50 A -> B: failed over: site A missed 3 probes (last: could not connect)
            40.55 B -> -: all sites down: A missed 3 probes (last: could not connect); B missed 3 probes (last: could not connect)
            55.15 - -> B: failed over: site A missed 76 probes (last: could not connect)
            100.05 B -> A: preferred site healthy
        "#]],
    );
}

#[test]
fn load_shedding_site_is_avoided_while_it_sheds() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, _| if s == "A" { ok(20.0) } else { ok(30.0) }),
    );
    sim.run_until(40.0);
    sim.sheds.push(Shed {
        site: "A".to_owned(),
        until: at(70.0),
    });
    check(
        &mut sim,
        100.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.05 A -> B: site A is shedding load
            70.05 B -> A: preferred site healthy
        "#]],
    );
    // When every site sheds, shedding decides nothing.
    sim.sheds = vec![
        Shed {
            site: "A".to_owned(),
            until: at(200.0),
        },
        Shed {
            site: "B".to_owned(),
            until: at(200.0),
        },
    ];
    sim.run_until(110.0);
    assert_eq!(sim.site(), Some("A"), "{}", sim.log());
}

#[test]
fn less_preferred_site_far_faster_is_chosen_from_scratch() {
    // After a failover from A, C (least preferred) is clearly faster than B: it is chosen
    // directly rather than B and then C.
    let sites = vec![site("A", 1, 1), site("B", 2, 1), site("C", 3, 1)];
    let mut sim = Sim::new(
        sites,
        by_site(|s, t| match s {
            "A" if t >= 40.0 => REFUSED,
            "A" => ok(20.0),
            "B" => ok(150.0),
            _ => ok(30.0),
        }),
    );
    // Until A fails, A is both preferred and fast.
    check(
        &mut sim,
        45.0,
        expect![[r#"
            0.05 - -> A: preferred site healthy
            40.50 A -> C: failed over: site A missed 3 probes (last: could not connect)
        "#]],
    );
}

#[test]
fn dead_node_is_skipped_at_once_and_connections_spread() {
    let sites = vec![site("A", 1, 2), site("B", 2, 1)];
    let node2 = SocketAddr::from(([10, 0, 1, 2], 443));
    let mut sim = Sim::new(sites, move |ep, t| match ep.site.as_str() {
        "A" if ep.addr == node2 && t >= 20.0 => REFUSED,
        "A" => ok(20.0),
        _ => ok(30.0),
    });
    sim.run_until(10.0);
    let firsts = |sim: &Sim| -> Vec<SocketAddr> {
        (0..4)
            .map(|seq| sim.selection().attempts(seq)[0].addr)
            .collect()
    };
    let node1 = SocketAddr::from(([10, 0, 1, 1], 443));
    assert_eq!(firsts(&sim), [node1, node2, node1, node2]);
    // The whole order: A's nodes (rotated), then B.
    assert_eq!(
        sim.selection()
            .attempts(1)
            .iter()
            .map(|e| e.addr.to_string())
            .collect::<Vec<_>>(),
        ["10.0.1.2:443", "10.0.1.1:443", "10.0.2.1:443"]
    );
    // A failed connection of user traffic makes node 2 skipped at once.
    sim.history.record(
        Endpoint {
            site: "A".to_owned(),
            addr: node2,
        },
        Sample::traffic_failure(at(10.02), Failure::Connect),
    );
    sim.evaluate();
    assert_eq!(firsts(&sim), [node1; 4]);
    // Node 2's probes then fail too: the site stays up on node 1 and nobody switches.
    sim.run_until(40.0);
    assert_eq!(firsts(&sim), [node1; 4]);
    assert_eq!(sim.site(), Some("A"));
    assert_eq!(sim.later_switches(), Vec::<f64>::new(), "{}", sim.log());
    let a = sim.selection().site_view("A").unwrap();
    assert!(matches!(a.health, Health::Healthy { .. }));
    assert!(a.endpoints[1].health.is_down(), "{:?}", a.endpoints[1]);
}

#[test]
fn status_shows_latency_and_loss() {
    let mut sim = Sim::new(two_sites(), {
        let mut probes_of_a = 0u32;
        by_site(move |s, _| match s {
            "A" => {
                // Every fourth probe of A is refused.
                probes_of_a += 1;
                if probes_of_a.is_multiple_of(4) {
                    REFUSED
                } else {
                    ok(20.0)
                }
            }
            _ => ok(30.0),
        })
    });
    sim.run_until(100.0);
    let a = sim.selection().site_view("A").unwrap();
    let b = sim.selection().site_view("B").unwrap();
    assert_eq!(a.latency, Some(ms(20)));
    assert_eq!(b.latency, Some(ms(30)));
    let loss = a.loss.unwrap();
    assert!((0.15..0.35).contains(&loss), "loss {loss}");
    assert_eq!(b.loss, Some(0.0));
}

#[test]
fn unknown_sites_start_on_the_preferred_one() {
    let sites = two_sites();
    let history = History::new();
    let config = SelectConfig::default();
    let sel = select(&Input {
        sites: &sites,
        history: &history,
        exclusions: &[],
        sheds: &[],
        current: None,
        config: &config,
        now: at(0.0),
    });
    assert_eq!(sel.site.as_deref(), Some("A"));
    assert_eq!(sel.reason, Reason::Preferred);
    assert_eq!(sel.site_view("A").unwrap().health, Health::Unknown);
}

#[test]
fn every_up_site_excluded_uses_one_anyway() {
    let mut sim = Sim::new(
        two_sites(),
        by_site(|s, _| if s == "A" { ok(20.0) } else { ok(30.0) }),
    );
    sim.run_until(5.0);
    for s in ["A", "B"] {
        sim.exclusions.push(Exclusion {
            site: s.to_owned(),
            until: at(100.0),
            reason: String::new(),
        });
    }
    sim.run_until(6.0);
    assert_eq!(sim.site(), Some("A"));
    expect!["every site that is up is excluded; using an excluded site"]
        .assert_eq(&sim.selection().reason.to_string());
}

#[test]
fn history_keeps_time_order_and_prunes() {
    let sites = two_sites();
    let a = Endpoint {
        site: "A".to_owned(),
        addr: sites[0].endpoints[0],
    };
    let mut h = History::new();
    h.record(a.clone(), Sample::ok(at(2.0), ms(1)));
    h.record(a.clone(), Sample::ok(at(1.0), ms(2)));
    h.record(a.clone(), Sample::ok(at(3.0), ms(3)));
    let order: Vec<f64> = h.samples(&a).map(|s| secs(s.at)).collect();
    assert_eq!(order, [1.0, 2.0, 3.0]);
    h.prune(at(2.5), &sites);
    assert_eq!(h.samples(&a).count(), 1);
    // The newest is kept even when it is old.
    h.prune(at(10.0), &sites);
    assert_eq!(h.samples(&a).count(), 1);
    // Endpoints no longer configured are forgotten.
    h.prune(at(0.0), &sites[1..]);
    assert_eq!(h.samples(&a).count(), 0);
}

#[test]
fn invalid_settings_and_sites_are_explained() {
    let cases: Vec<(SelectConfig, Expect)> = vec![
        (
            SelectConfig {
                smoothing: 0.0,
                ..SelectConfig::default()
            },
            expect!["selection setting smoothing must be a number above 0 and at most 1, not 0"],
        ),
        (
            SelectConfig {
                return_margin: ms(50),
                ..SelectConfig::default()
            },
            expect!["selection setting return_margin must be at most latency_margin, not 50 ms"],
        ),
        (
            SelectConfig {
                stale_after: ms(500),
                ..SelectConfig::default()
            },
            expect!["selection setting stale_after must be longer than down_after, not 500 ms"],
        ),
    ];
    for (config, expected) in cases {
        expected.assert_eq(&config.validate().unwrap_err().to_string());
    }
    assert_eq!(SelectConfig::default().validate(), Ok(()));

    let mut dup = two_sites();
    dup[1].name = "A".to_owned();
    let mut no_endpoints = two_sites();
    no_endpoints[0].endpoints.clear();
    let mut bad_host = two_sites();
    bad_host[0].host = "gw example.com".to_owned();
    let cases: Vec<(Vec<Site>, Expect)> = vec![
        (
            vec![],
            expect!["the site list is empty: configure at least one gateway site"],
        ),
        (
            dup,
            expect![[r#"site "A" appears twice in the site list: site names must be unique"#]],
        ),
        (
            no_endpoints,
            expect![[
                r#"site "A" has no gateway endpoints: give at least one address such as 192.0.2.10:443"#
            ]],
        ),
        (
            bad_host,
            expect![[
                r#"site "A": "gw example.com" is not a host name (only letters, digits, hyphens and dots are allowed); give the gateway's DNS name such as gw.example.com"#
            ]],
        ),
    ];
    for (sites, expected) in cases {
        expected.assert_eq(&validate_sites(&sites).unwrap_err().to_string());
    }
    assert_eq!(validate_sites(&two_sites()), Ok(()));
}
