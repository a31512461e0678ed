#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Real local servers for the tests: fake gateways (plain or TLS), a server that accepts and
//! never answers, a closed port, and a test CA.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A CA and a server certificate for some names.
pub(crate) struct TestCa {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
}

pub(crate) fn test_ca(names: &[&str]) -> TestCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    TestCa {
        ca_pem: ca_cert.pem(),
        chain: vec![cert.der().clone(), ca_cert.der().clone()],
        key_der: key.serialize_der(),
    }
}

impl TestCa {
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// An address where nothing listens.
pub(crate) async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A server that accepts connections and never answers (nor closes them).
pub(crate) struct Silent {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn silent_server() -> Silent {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    Silent { addr, task }
}

/// A server that answers every connection with fixed bytes, after an optional delay between
/// bytes (slow drip), then closes.
pub(crate) async fn fixed_server(answer: &'static [u8], drip: Option<Duration>) -> Silent {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                match drip {
                    None => {
                        let _ = s.write_all(answer).await;
                    }
                    Some(d) => {
                        for b in answer {
                            if s.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(d).await;
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Silent { addr, task }
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(data)
}

/// How a fake gateway treats requests other than `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers with a description of the request.
    Serve,
    /// Reads the request and closes without answering.
    HangUp,
}

/// A fake gateway site: `GET /readyz` gets 200; other HTTP requests get a body
/// `site=NAME method=M path=P host=H proxy-connection=yes|no`; anything else (tunnelled bytes)
/// is echoed back prefixed with `NAME:`. [`FakeGateway::kill`] turns it into a black hole: new
/// connections are refused and established ones go silent without closing.
pub(crate) struct FakeGateway {
    pub addr: SocketAddr,
    dead: watch::Sender<bool>,
    mode: Arc<Mutex<Mode>>,
    pub seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
        self.dead.send_replace(true);
    }
}

impl FakeGateway {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    pub async fn start_tls(name: &str, ca: &TestCa) -> Self {
        Self::start_with(name, Some(ca.acceptor())).await
    }

    async fn start_with(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (dead, dead_rx) = watch::channel(false);
        let mode = Arc::new(Mutex::new(Mode::Serve));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let name = name.to_owned();
        let task = {
            let (mode, seen) = (mode.clone(), seen.clone());
            let mut stop = dead_rx.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = l.accept() => a,
                        () = async { let _ = stop.wait_for(|d| *d).await; } => break,
                    };
                    let Ok((s, _)) = accepted else { break };
                    let (name, mode, seen, dead) =
                        (name.clone(), mode.clone(), seen.clone(), dead_rx.clone());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => connection(s, name, mode, seen, dead).await,
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(s).await {
                                    connection(s, name, mode, seen, dead).await;
                                }
                            }
                        }
                    });
                }
                // The listener is dropped here: new connections are refused.
            })
        };
        Self {
            addr,
            dead,
            mode,
            seen,
            task,
        }
    }

    pub fn kill(&self) {
        self.dead.send_replace(true);
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn looks_like_http(data: &[u8]) -> bool {
    ["GET ", "HEAD ", "POST ", "PUT ", "OPTIONS ", "DELETE "]
        .iter()
        .any(|m| data.starts_with(m.as_bytes()))
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    name: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<String>>>,
    mut dead: watch::Receiver<bool>,
) {
    let work = async {
        let mut buf = [0u8; 16384];
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut data = buf[..n].to_vec();
        if !looks_like_http(&data) {
            loop {
                let mut out = format!("{name}:").into_bytes();
                out.extend_from_slice(&data);
                s.write_all(&out).await.ok()?;
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                data = buf[..n].to_vec();
            }
        }
        while !data.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&data).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
        let mut host = String::new();
        let mut proxy_connection = "no";
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => host = v.trim().to_owned(),
                "proxy-connection" => proxy_connection = "yes",
                _ => {}
            }
        }
        let answer = if path == "/readyz" {
            "ready\n".to_owned()
        } else {
            let line = format!(
                "site={name} method={method} path={path} host={host} proxy-connection={proxy_connection}"
            );
            seen.lock().unwrap().push(line.clone());
            if *mode.lock().unwrap() == Mode::HangUp {
                return None;
            }
            line
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        s.write_all(resp.as_bytes()).await.ok()?;
        s.shutdown().await.ok()?;
        Some(())
    };
    tokio::select! {
        _ = work => {}
        () = async { let _ = dead.wait_for(|d| *d).await; } => {
            // A black hole: keep the connection open and say nothing.
            std::future::pending::<()>().await;
        }
    }
}

/// Sends raw bytes to `addr` and reads until the peer closes.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("no complete answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}
