#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{Delay, DelayProxy, Direction};

/// A TCP echo server on a free loopback port.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Time for `msg` to come back through `s`.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_delay_is_added_in_each_direction_and_can_be_changed_at_runtime() {
    let p = DelayProxy::start(echo().await).await.unwrap();
    p.set(Delay::fixed(Duration::from_millis(40)));
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    for _ in 0..3 {
        let rtt = round_trip(&mut s, b"ping").await;
        assert!(
            rtt >= Duration::from_millis(80),
            "round trip {rtt:?} < 2 x 40 ms"
        );
        assert!(rtt < Duration::from_secs(2), "round trip {rtt:?}");
    }
    // Off, on the same connection: the best of a few round trips is well under the delay.
    p.handle().set(Delay::NONE);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        best = best.min(round_trip(&mut s, b"pong").await);
    }
    assert!(best < Duration::from_millis(40), "best round trip {best:?}");
    assert_eq!(p.handle().accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_direction_can_be_delayed_alone() {
    let p = DelayProxy::start(echo().await).await.unwrap();
    p.set_direction(Direction::ToClient, Delay::fixed(Duration::from_millis(60)));
    assert_eq!(p.handle().get(Direction::ToTarget), Delay::NONE);
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let mut best = Duration::MAX;
    for _ in 0..4 {
        let rtt = round_trip(&mut s, b"x").await;
        assert!(rtt >= Duration::from_millis(60), "round trip {rtt:?}");
        best = best.min(rtt);
    }
    assert!(
        best < Duration::from_millis(120),
        "best round trip {best:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_varies_the_delay_within_its_bounds_and_never_reorders_bytes() {
    let p = DelayProxy::start(echo().await).await.unwrap();
    let (base, jitter) = (Duration::from_millis(20), Duration::from_millis(15));
    p.set(Delay::jittered(base, jitter));
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let mut rtts = Vec::new();
    for i in 0..20u8 {
        rtts.push(round_trip(&mut s, &[i; 8]).await);
    }
    let (min, max) = (*rtts.iter().min().unwrap(), *rtts.iter().max().unwrap());
    assert!(min >= 2 * (base - jitter), "{rtts:?}");
    assert!(max - min >= Duration::from_millis(5), "no jitter: {rtts:?}");

    // 2 MiB in many chunks, each with its own random delay, arrive intact and in order.
    let blob: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.into_split();
    let sent = blob.clone();
    let writer = tokio::spawn(async move {
        for c in sent.chunks(4096) {
            w.write_all(c).await.unwrap();
        }
        w
    });
    let mut back = vec![0u8; blob.len()];
    tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut back))
        .await
        .expect("blob came back within 30 s")
        .unwrap();
    let _w = writer.await.unwrap();
    assert!(back == blob, "bytes were reordered or changed");
}

#[tokio::test]
async fn a_refusing_target_closes_the_accepted_connection() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = DelayProxy::start(dead).await.unwrap();
    assert_eq!(p.target(), dead);
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed within 5 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_proxy_closes_its_connections_and_its_port() {
    let p = DelayProxy::start(echo().await).await.unwrap();
    let addr = p.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"hello").await;
    drop(p);
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("connection closed within 5 s of the drop");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after the drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
