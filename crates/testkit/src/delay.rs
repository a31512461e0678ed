//! A delaying TCP proxy for latency faults in user space (the test machines' kernel has no
//! netem): it accepts on `127.0.0.1:0`, opens one connection to a target per accepted one, and
//! forwards bytes both ways, holding every chunk it reads for a one-way delay plus an optional
//! uniformly random ±jitter before writing it on. Delay and jitter are set per direction and can
//! be changed at runtime through a [`DelayHandle`]; a change applies to chunks read from then
//! on. Dropping the [`DelayProxy`] stops it and closes every connection.
//!
//! Like a byte stream over a real path, chunks are never reordered: a chunk whose random delay
//! would let it overtake the previous one is written right after that one. The proxy answers
//! the TCP handshake itself, so connection set-up is not delayed, only data (a TLS handshake
//! therefore pays the delay once per flight). When the target refuses, the accepted connection
//! is closed at once, as a load balancer in front of a dead server would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::gateway::KitError;

#[cfg(test)]
mod tests;

/// Largest chunk read (and delayed) at once.
const CHUNK: usize = 16 * 1024;
/// Chunks held per direction before the proxy stops reading (back-pressure).
const QUEUE: usize = 1024;

/// The delay of one direction: each chunk waits `base` plus a uniformly random amount in
/// `[-jitter, +jitter]` (never less than zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    pub base: Duration,
    pub jitter: Duration,
}

impl Delay {
    /// No delay at all.
    pub const NONE: Delay = Delay {
        base: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    /// A fixed delay without jitter.
    pub const fn fixed(base: Duration) -> Self {
        Self {
            base,
            jitter: Duration::ZERO,
        }
    }

    /// `base ± jitter`.
    pub const fn jittered(base: Duration, jitter: Duration) -> Self {
        Self { base, jitter }
    }

    /// The delay of one chunk, given a uniform random number in `[0, 1)`.
    fn sample(self, unit: f64) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let offset = (unit * 2.0 - 1.0) * self.jitter.as_secs_f64();
        Duration::from_secs_f64((self.base.as_secs_f64() + offset).max(0.0))
    }
}

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the accepted client to the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

/// Delay settings in microseconds, readable without a lock by every connection.
#[derive(Default)]
struct Knobs {
    to_target: [AtomicU64; 2],
    to_client: [AtomicU64; 2],
    accepted: AtomicU64,
}

impl Knobs {
    fn slot(&self, d: Direction) -> &[AtomicU64; 2] {
        match d {
            Direction::ToTarget => &self.to_target,
            Direction::ToClient => &self.to_client,
        }
    }

    fn get(&self, d: Direction) -> Delay {
        let [base, jitter] = self.slot(d);
        Delay {
            base: Duration::from_micros(base.load(Ordering::Relaxed)),
            jitter: Duration::from_micros(jitter.load(Ordering::Relaxed)),
        }
    }

    fn set(&self, d: Direction, delay: Delay) {
        let [base, jitter] = self.slot(d);
        let micros = |x: Duration| u64::try_from(x.as_micros()).unwrap_or(u64::MAX);
        base.store(micros(delay.base), Ordering::Relaxed);
        jitter.store(micros(delay.jitter), Ordering::Relaxed);
    }
}

/// Changes a running proxy's delays; cheap to clone and to send to other tasks.
#[derive(Clone)]
pub struct DelayHandle {
    knobs: Arc<Knobs>,
}

impl DelayHandle {
    /// Sets the same delay for both directions (a round trip then takes twice `delay.base`
    /// more).
    pub fn set(&self, delay: Delay) {
        self.knobs.set(Direction::ToTarget, delay);
        self.knobs.set(Direction::ToClient, delay);
    }

    /// Sets the delay of one direction.
    pub fn set_direction(&self, direction: Direction, delay: Delay) {
        self.knobs.set(direction, delay);
    }

    /// The delay of one direction now.
    pub fn get(&self, direction: Direction) -> Delay {
        self.knobs.get(direction)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.knobs.accepted.load(Ordering::Relaxed)
    }
}

/// A running delaying proxy. Stops, closing every connection, when dropped.
pub struct DelayProxy {
    addr: SocketAddr,
    target: SocketAddr,
    handle: DelayHandle,
    task: JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards to `target`, with no delay until one is
    /// set.
    pub async fn start(target: SocketAddr) -> Result<Self, KitError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let knobs = Arc::new(Knobs::default());
        let task = tokio::spawn(accept_loop(listener, target, knobs.clone()));
        Ok(Self {
            addr,
            target,
            handle: DelayHandle { knobs },
            task,
        })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// A handle to change the delays while the proxy runs.
    pub fn handle(&self) -> DelayHandle {
        self.handle.clone()
    }

    /// Sets the same delay for both directions. See [`DelayHandle::set`].
    pub fn set(&self, delay: Delay) {
        self.handle.set(delay);
    }

    /// Sets the delay of one direction.
    pub fn set_direction(&self, direction: Direction, delay: Delay) {
        self.handle.set_direction(direction, delay);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, knobs: Arc<Knobs>) {
    let mut conns = JoinSet::new();
    let mut seed = seed_from_clock();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    knobs.accepted.fetch_add(1, Ordering::Relaxed);
                    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    conns.spawn(serve(client, target, knobs.clone(), seed));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x2545_F491_4F6C_DD1D, |d| {
            u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(1)
        })
        | 1
}

/// xorshift64*: enough randomness for jitter, without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A uniform number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // The top 53 bits make an exactly representable fraction.
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn serve(client: TcpStream, target: SocketAddr, knobs: Arc<Knobs>, seed: u64) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        // Dropping `client` closes it: the target is not there.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = pipe(cr, uw, Direction::ToTarget, knobs.clone(), Rng::new(seed));
    let down = pipe(
        ur,
        cw,
        Direction::ToClient,
        knobs,
        Rng::new(seed.rotate_left(17)),
    );
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    // A clean end of one direction is a half-close and the other may go on; an error in either
    // ends the connection (both sockets are dropped).
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if r.is_err() {
                    break;
                }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if r.is_err() {
                    break;
                }
            }
        }
    }
}

/// Copies one direction: a reader stamps each chunk with the time it is due, a writer writes it
/// then (in order), and shuts the write side down after the reader's end of stream.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    knobs: Arc<Knobs>,
    mut rng: Rng,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let due = Instant::now() + knobs.get(direction).sample(rng.unit());
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            if tx.send((due, chunk)).await.is_err() {
                // The writer failed; it reports why.
                return Ok(());
            }
        }
    };
    let writer = async move {
        let mut last = Instant::now();
        while let Some((due, chunk)) = rx.recv().await {
            // Never overtake the previous chunk.
            let at = due.max(last);
            tokio::time::sleep_until(at).await;
            last = at;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::pin!(reader, writer);
    tokio::select! {
        // The reader reached the end of the stream: deliver what is queued, then shut down.
        r = &mut reader => match r {
            Ok(()) => writer.await,
            Err(e) => Err(e),
        },
        // The writer can only end first by failing (its queue closes after the reader ends).
        w = &mut writer => w,
    }
}
