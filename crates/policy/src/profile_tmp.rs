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

#[test]
fn profile_parts_tmp() {
    use cedar_policy::*;
    use std::collections::{HashMap, HashSet};
    use std::str::FromStr;
    let n = 20000;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{name}: {:.2} us",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    };
    time("ctx strings only (7)", &mut || {
        std::hint::black_box(
            Context::from_pairs((0..7).map(|i| {
                (
                    format!("k{i}"),
                    RestrictedExpression::new_string("x".into()),
                )
            }))
            .unwrap(),
        );
    });
    time("ctx ip", &mut || {
        std::hint::black_box(
            Context::from_pairs([("ip".to_owned(), RestrictedExpression::new_ip("10.0.0.1"))])
                .unwrap(),
        );
    });
    time("ctx datetime", &mut || {
        std::hint::black_box(
            Context::from_pairs([(
                "d".to_owned(),
                RestrictedExpression::new_datetime("2026-11-23T01:00:00Z"),
            )])
            .unwrap(),
        );
    });
    time("ctx duration", &mut || {
        std::hint::black_box(
            Context::from_pairs([("d".to_owned(), RestrictedExpression::new_duration("36000s"))])
                .unwrap(),
        );
    });
    time("ctx date", &mut || {
        std::hint::black_box(
            Context::from_pairs([(
                "d".to_owned(),
                RestrictedExpression::new_datetime("2026-11-23"),
            )])
            .unwrap(),
        );
    });
    time("ctx record 8", &mut || {
        std::hint::black_box(
            Context::from_pairs([(
                "d".to_owned(),
                RestrictedExpression::new_record(
                    (0..8).map(|i| (format!("k{i}"), RestrictedExpression::new_long(i))),
                )
                .unwrap(),
            )])
            .unwrap(),
        );
    });
    let ut = EntityTypeName::from_str("Tsuzuku::User").unwrap();
    let gt = EntityTypeName::from_str("Tsuzuku::Group").unwrap();
    let user = || {
        let attrs = HashMap::from([
            (
                "username".to_owned(),
                RestrictedExpression::new_string("alice".into()),
            ),
            (
                "auth_method".to_owned(),
                RestrictedExpression::new_string("x".into()),
            ),
            ("mfa".to_owned(), RestrictedExpression::new_bool(true)),
            (
                "auth_age_secs".to_owned(),
                RestrictedExpression::new_long(5),
            ),
        ]);
        let parents: HashSet<EntityUid> = (0..3)
            .map(|i| EntityUid::from_type_name_and_id(gt.clone(), EntityId::new(format!("g{i}"))))
            .collect();
        Entity::new(
            EntityUid::from_type_name_and_id(ut.clone(), EntityId::new("u1")),
            attrs,
            parents,
        )
        .unwrap()
    };
    time("user entity", &mut || {
        std::hint::black_box(user());
    });
    let u = user();
    let actions: Vec<Entity> = crate::schema::schema()
        .unwrap()
        .action_entities()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    time("entities user only", &mut || {
        std::hint::black_box(Entities::from_entities([u.clone()], None).unwrap());
    });
    time("entities user+3 actions", &mut || {
        std::hint::black_box(
            Entities::from_entities([u.clone()].into_iter().chain(actions.iter().cloned()), None)
                .unwrap(),
        );
    });
    let base = Entities::from_entities(actions.iter().cloned(), None).unwrap();
    time("base.clone().add_entities(user)", &mut || {
        std::hint::black_box(base.clone().add_entities([u.clone()], None).unwrap());
    });
    let c = Case::new();
    time("summary", &mut || {
        std::hint::black_box(crate::engine::summary_for_profile(&c));
    });
}
