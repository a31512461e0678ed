#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The upstream connection kept per client connection, against a real HTTP/1.1 upstream on
//! loopback that counts the connections it accepts.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;

use super::*;

/// An upstream answering `ok` (with `Connection: close` when `close` is set); returns its
/// address and the count of connections it accepted.
async fn upstream(close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(bytes::Bytes::from_static(b"ok")));
                    if close {
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

fn pool() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn get(upstream: &str) -> Request<Body> {
    Request::get(format!("{upstream}/x"))
        .body(
            http_body_util::Empty::new()
                .map_err(|e| -> BoxError { match e {} })
                .boxed(),
        )
        .unwrap()
}

/// Sends `n` requests one after the other, reading each answer to the end.
async fn ok_n(pool: &Client<HttpConnector, Body>, affinity: &Arc<Affinity>, url: &str, n: usize) {
    for _ in 0..n {
        let resp = send_kept(pool, affinity, url, get(url)).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connections_requests_share_one_upstream_connection() {
    let (url, accepted) = upstream(false).await;
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    ok_n(&pool, &affinity, &url, 5).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // Another client connection gets a connection of its own.
    let other = Arc::new(Affinity::default());
    ok_n(&pool, &other, &url, 1).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closes_is_not_reused() {
    let (url, accepted) = upstream(true).await;
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    ok_n(&pool, &affinity, &url, 3).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// While the kept connection is in use (a body not yet read, another HTTP/2 stream), requests
/// go through the pool instead of opening private connections; a body dropped unread takes
/// its connection with it, and the next request opens one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_kept_connection_sends_others_to_the_pool() {
    let (url, accepted) = upstream(false).await;
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    let unread = send_kept(&pool, &affinity, &url, get(&url)).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    ok_n(&pool, &affinity, &url, 3).await;
    // The pool opened one connection and reused it.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    drop(unread);
    ok_n(&pool, &affinity, &url, 3).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// An upstream that records each request line as it arrived on the wire (hyper's server
/// would hide an absolute-form target) and answers `ok`, keeping the connection.
async fn recording_upstream() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut tcp = tokio::io::BufReader::new(tcp);
                loop {
                    let mut line = String::new();
                    if tcp.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    seen.lock().unwrap().push(line.trim_end().to_owned());
                    // The rest of the head; the test's requests have no body.
                    loop {
                        let mut h = String::new();
                        if tcp.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), lines)
}

/// The upstream gets the request target in origin form (`GET /x HTTP/1.1`), on a new kept
/// connection and on a reused one: an absolute URI would name the upstream's own address to
/// an app that routes by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_sends_the_path_in_origin_form() {
    let (url, lines) = recording_upstream().await;
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    ok_n(&pool, &affinity, &url, 2).await;
    assert_eq!(
        *lines.lock().unwrap(),
        ["GET /x HTTP/1.1", "GET /x HTTP/1.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_answer_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    assert!(send_kept(&pool, &affinity, &url, get(&url)).await.is_err());
}

/// An upstream URL that is not plain `http://` is not connected to as if it were: the pool
/// refuses it, as before kept connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_refused_not_spoken_to_in_plain_http() {
    let (url, accepted) = upstream(false).await;
    let https = url.replace("http://", "https://");
    let (pool, affinity) = (pool(), Arc::new(Affinity::default()));
    assert!(
        send_kept(&pool, &affinity, &https, get(&https))
            .await
            .is_err()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

/// A client connection's kept identity headers serve only the same session at the same app,
/// and only while the assertion is young: its age counts from signing, not from when the
/// connection kept it.
#[test]
fn kept_identity_headers_serve_only_their_session_and_app_while_young() {
    let signed = std::time::Instant::now();
    let ttl = std::time::Duration::from_secs(30);
    let identity = Arc::new(Identity {
        assertion: HeaderValue::from_static("jwt"),
        user: None,
        groups: None,
        signed,
    });
    let slot = IdentitySlot::default();
    assert!(slot.get("s1", "crm", signed, ttl).is_none());
    slot.put("s1", "crm", &identity);
    assert!(slot.get("s1", "crm", signed, ttl).is_some());
    assert!(
        slot.get("s2", "crm", signed, ttl).is_none(),
        "another session"
    );
    assert!(slot.get("s1", "wiki", signed, ttl).is_none(), "another app");
    let later = signed + std::time::Duration::from_secs(29);
    assert!(slot.get("s1", "crm", later, ttl).is_some());
    let too_late = signed + ttl;
    assert!(slot.get("s1", "crm", too_late, ttl).is_none(), "too old");
    // Kept again later, it is still as old as its signature.
    slot.put("s1", "crm", &identity);
    assert!(slot.get("s1", "crm", too_late, ttl).is_none());
}
