#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{Summary, percentile_sorted};

#[test]
fn p99_of_fewer_than_a_hundred_values_is_the_maximum() {
    let v: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(percentile_sorted(&v, 99.0), Some(20.0));
    assert_eq!(percentile_sorted(&v, 50.0), Some(10.0));
    let v: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(percentile_sorted(&v, 99.0), Some(198.0));
}

#[test]
fn summary_sorts_and_rejects_empty_or_nan() {
    let s = Summary::of(&[30.0, 10.0, 20.0]).unwrap();
    assert_eq!(
        s,
        Summary {
            n: 3,
            min: 10.0,
            median: 20.0,
            p99: 30.0,
            max: 30.0
        }
    );
    assert_eq!(Summary::of(&[]), None);
    assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    assert_eq!(percentile_sorted(&[1.0], 0.0), None);
    assert_eq!(percentile_sorted(&[1.0], 101.0), None);
}
