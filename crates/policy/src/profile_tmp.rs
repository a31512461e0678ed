#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
use crate::tests::{Case, engine};
use std::time::Instant;

#[test]
fn profile_tmp() {
    let mut docs = Vec::new();
    for i in 0..110 {
        docs.push((format!("p{i}"), format!(r#"permit (principal in Tsuzuku::Group::"g{i}", action in Tsuzuku::Action::"access", resource == Tsuzuku::App::"sales") when {{ context.local_time >= duration("9h") && context.local_time < duration("18h") }};"#)));
    }
    let refs: Vec<(&str, &str)> = docs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let e = engine(&refs);
    let e0 = engine(&[]);
    let c = Case::new();
    let n = 20000;
    for (name, eng) in [("110", &e), ("0", &e0)] {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(c.decide(eng));
        }
        println!(
            "{name}: decide {:.2} us",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e.prepare(&c.user, c.device.as_ref(), &c.app, &c.req));
    }
    println!(
        "prepare {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let (p, _s) = e.prepare(&c.user, c.device.as_ref(), &c.app, &c.req);
    let p = p.unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e.authorizer.is_authorized(
            &p.request,
            e.slice_for("sales"),
            &p.entities,
        ));
    }
    println!(
        "authorize 110 {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e.authorizer.is_authorized(
            &p.request,
            e.slice_for("nothing"),
            &p.entities,
        ));
    }
    println!(
        "authorize 0 {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
