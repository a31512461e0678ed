#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
use std::time::Instant;
use crate::tests::{Case, engine};

#[test]
fn profile_tmp() {
    let conds = [
        r#"context.local_time >= duration("9h") && context.local_time < duration("18h")"#,
        r#"context.source_ip.isInRange(ip("10.0.0.0/8"))"#,
        "principal.mfa",
        "context has device && context.device.company_issued && context.device.antivirus_version >= 400182403000009",
        r#"["Mon", "Tue", "Wed", "Thu", "Fri"].contains(context.weekday)"#,
        "principal.auth_age_secs < 28800",
        r#"context.path like "/api/*" || context.method == "GET""#,
        r#"principal.auth_method == "oidc" || principal.auth_method == "password+totp""#,
        "resource.critical",
        r#"resource.data_class == "restricted""#,
    ];
    let docs: Vec<(String, String)> = conds.iter().enumerate().map(|(i, c)| (format!("p{i}"), format!("forbid (principal in Tsuzuku::Group::\"sales\", action, resource) when {{ {c} }};"))).collect();
    let refs: Vec<(&str, &str)> = docs.iter().map(|(a,b)| (a.as_str(), b.as_str())).collect();
    let e = engine(&refs);
    let c = Case::new();
    let n = 20000;
    let (p, _) = e.prepare(&c.user, c.device.as_ref(), &c.app, &c.req);
    let p = p.unwrap();
    let set = &e.compiled.all;
    let t = Instant::now();
    for _ in 0..n { std::hint::black_box(e.authorizer.is_authorized(&p.request, set, &p.entities)); }
    println!("api is_authorized 10: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    // own loop
    use cedar_policy_core::evaluator::Evaluator;
    use cedar_policy_core::extensions::Extensions;
    let pols: Vec<cedar_policy_core::ast::Policy> = set.policies().map(|x| AsRef::<cedar_policy_core::ast::Policy>::as_ref(x).clone()).collect();
    let conds: Vec<_> = pols.iter().map(|p| (p.condition(), p.env().clone())).collect();
    let req: &cedar_policy_core::ast::Request = p.request.as_ref();
    let ents: &cedar_policy_core::entities::Entities = p.entities.as_ref();
    let t = Instant::now();
    for _ in 0..n {
        let ev = Evaluator::new(req.clone(), ents, Extensions::all_available());
        let mut k = 0;
        for (cond, env) in &conds { if let Ok(v) = ev.interpret(cond, env) { if v == cedar_policy_core::ast::Value::from(true) { k += 1; } } }
        std::hint::black_box(k);
    }
    println!("own loop precomputed 10: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let ev = Evaluator::new(req.clone(), ents, Extensions::all_available());
        let mut k = 0;
        for p in &pols { if let Ok(v) = ev.interpret(&p.condition(), p.env()) { if v == cedar_policy_core::ast::Value::from(true) { k += 1; } } }
        std::hint::black_box(k);
    }
    println!("own loop condition() 10: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    for (i, (cond, env)) in conds.iter().enumerate() {
        let ev = Evaluator::new(req.clone(), ents, Extensions::all_available());
        let t = Instant::now();
        for _ in 0..n { std::hint::black_box(ev.interpret(cond, env).ok()); }
        println!("  cond {i}: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
