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
    let c = Case::new();
    let n = 20000;
    let e0 = engine(&[]);
    let t = Instant::now();
    for i in 0..n {
        let mut c = c.clone();
        c.req.now_unix += i as i64;
        std::hint::black_box(c.decide(&e0));
    }
    println!(
        "base decide {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e0.prepare(&c.user, c.device.as_ref(), &c.app, &c.req));
    }
    println!(
        "prepare {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let tz = crate::tests::tokyo();
    let clock = crate::request::local_clock(&tz, c.req.now_unix).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::request::summary(
            &c.user,
            c.device.as_ref(),
            &c.app,
            &c.req,
            "read",
            &tz,
            Some(&clock),
        ));
    }
    println!(
        "summary {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let types = crate::request::Types::new().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(
            cedar_policy::Context::from_pairs(
                crate::request::context_pairs(&types, &c.req, c.device.as_ref(), &clock).unwrap(),
            )
            .unwrap(),
        );
    }
    println!(
        "context {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::request::user_entity(&types, &c.user, 5).unwrap());
    }
    println!(
        "user entity {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
