//! A TCP fault proxy for tests: it sits between a client and a server (etcd, NATS, RabbitMQ,
//! the Kafka mock, a peer service) on loopback and does to their connections what a bad
//! network or a dying peer does, switchable while traffic flows.
//!
//! ```no_run
//! use micro_conformance::fault::{Fault, FaultProxy};
//!
//! # async fn run() -> std::io::Result<()> {
//! let proxy = FaultProxy::start("127.0.0.1:2379").await?;
//! let address = proxy.address(); // give this to the client instead of the server's
//! proxy.set(Fault::Blackhole); // connections stay open, nothing gets through
//! proxy.set(Fault::Pass); // what was held is delivered
//! # Ok(())
//! # }
//! ```
//!
//! A fault applies to the connections already open and to those accepted later. Every task the
//! proxy runs ends when it is dropped, closing every connection it holds.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The largest chunk the proxy reads at once, and so the unit of [`Fault::Delay`].
const CHUNK: usize = 16 * 1024;

/// What the proxy does to the bytes and connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything as it comes.
    #[default]
    Pass,
    /// A network partition: connections are accepted and held open, but nothing is forwarded
    /// either way and no new connection reaches the server. What was sent meanwhile waits in
    /// the sockets' buffers and is delivered once the fault is lifted, as TCP retransmission
    /// would deliver it.
    Blackhole,
    /// Each chunk (up to 16 KiB, as it was read) is forwarded this long after it arrived.
    Delay(Duration),
    /// Every connection, open or new, is reset (an RST: `SO_LINGER` 0, then close).
    Reset,
    /// Every connection, open or new, is half-closed: both peers read end of stream (a FIN)
    /// while the proxy keeps their sockets open, reading and dropping whatever they send.
    HalfClose,
    /// At most this many bytes per second each way, per connection.
    Bandwidth(u64),
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
    forwarded: AtomicU64,
    reset: AtomicUsize,
    refused_upstream: AtomicUsize,
}

/// A running fault proxy: a listener on a free loopback port that forwards each connection to
/// the upstream address, subject to the current [`Fault`].
pub struct FaultProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<Counters>,
    closed: CancellationToken,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("address", &self.address)
            .field("upstream", &self.upstream)
            .field("fault", &*self.fault.borrow())
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (an `ip:port`) on a free port of 127.0.0.1, passing
    /// everything through until told otherwise.
    pub async fn start(upstream: &str) -> io::Result<FaultProxy> {
        let upstream: SocketAddr = upstream.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fault proxy upstream {upstream:?} is not an ip:port: {e}"),
            )
        })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (fault, faults) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let closed = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            faults,
            counters.clone(),
            closed.clone(),
        ));
        Ok(FaultProxy {
            address,
            upstream,
            fault,
            counters,
            closed,
        })
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The server's address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches to `fault`, for open connections and new ones alike.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::Acquire)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::Acquire)
    }

    /// Bytes forwarded, both ways together.
    pub fn forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::Acquire)
    }

    /// Connections reset, by [`Fault::Reset`] or because the upstream refused them.
    pub fn resets(&self) -> usize {
        self.counters.reset.load(Ordering::Acquire)
    }

    /// Connections whose upstream could not be reached (each was reset).
    pub fn refused_upstream(&self) -> usize {
        self.counters.refused_upstream.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    counters: Arc<Counters>,
    closed: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = closed.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Out of descriptors, or a connection that died in the backlog: keep accepting.
            tokio::task::yield_now().await;
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::AcqRel);
        let open = Open::new(&counters);
        let faults = faults.clone();
        let counters = counters.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = closed.cancelled() => {}
                _ = connection(client, upstream, faults, &counters) => {}
            }
            drop(open);
        });
    }
}

/// Counts a connection as open for as long as it lives.
struct Open(Arc<Counters>);

impl Open {
    fn new(counters: &Arc<Counters>) -> Open {
        counters.open.fetch_add(1, Ordering::AcqRel);
        Open(counters.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Carries one client connection to the upstream, applying each fault as it comes.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Fault>,
    counters: &Counters,
) {
    // A partition lets nothing through, the connection to the server included.
    let _ = faults.wait_for(|f| *f != Fault::Blackhole).await;
    let current = *faults.borrow_and_update();
    match current {
        Fault::Reset => return reset(&client, counters),
        Fault::HalfClose => return half_closed(&[&client]).await,
        _ => {}
    }
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(_) => {
            // A dead server behind a live listener: what a client sees is a reset.
            counters.refused_upstream.fetch_add(1, Ordering::AcqRel);
            return reset(&client, counters);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let client = Arc::new(client);
    let server = Arc::new(server);
    let mut pumps = JoinSet::new();
    pumps.spawn(pump(client.clone(), server.clone(), faults.clone()));
    pumps.spawn(pump(server.clone(), client.clone(), faults.clone()));
    let mut forwarded = 0u64;
    loop {
        tokio::select! {
            ended = pumps.join_next() => match ended {
                Some(Ok(n)) => forwarded += n,
                Some(Err(_)) => {}
                // Both directions reached their end: the connection is over.
                None => break,
            },
            changed = faults.changed() => {
                if changed.is_err() {
                    break;
                }
                let fault = *faults.borrow_and_update();
                match fault {
                    Fault::Reset => {
                        pumps.abort_all();
                        while pumps.join_next().await.is_some() {}
                        reset(&server, counters);
                        reset(&client, counters);
                        return;
                    }
                    Fault::HalfClose => {
                        pumps.abort_all();
                        while pumps.join_next().await.is_some() {}
                        return half_closed(&[&client, &server]).await;
                    }
                    _ => {}
                }
            }
        }
    }
    counters.forwarded.fetch_add(forwarded, Ordering::AcqRel);
}

/// Forwards `from` to `to` under the current fault until `from` ends, then passes the end on
/// (a FIN); returns the bytes forwarded.
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, mut faults: watch::Receiver<Fault>) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut forwarded = 0u64;
    loop {
        let _ = faults.wait_for(|f| *f != Fault::Blackhole).await;
        let n = match read_some(&from, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Held while blackholed, even if it arrived before.
        let fault = match faults.wait_for(|f| *f != Fault::Blackhole).await {
            Ok(fault) => *fault,
            Err(_) => break,
        };
        let sent = match fault {
            Fault::Delay(by) => {
                tokio::time::sleep(by).await;
                write_all(&to, &buf[..n]).await
            }
            Fault::Bandwidth(per_second) => throttled(&to, &buf[..n], per_second).await,
            _ => write_all(&to, &buf[..n]).await,
        };
        if sent.is_err() {
            break;
        }
        forwarded += n as u64;
    }
    let _ = socket2::SockRef::from(&*to).shutdown(Shutdown::Write);
    forwarded
}

/// Writes `bytes` at most `per_second` bytes a second: in slices of a tenth of a second's
/// worth, each followed by the pause it costs.
async fn throttled(to: &TcpStream, bytes: &[u8], per_second: u64) -> io::Result<()> {
    let per_second = per_second.max(1);
    let slice = usize::try_from(per_second / 10)
        .unwrap_or(usize::MAX)
        .max(1);
    for part in bytes.chunks(slice) {
        write_all(to, part).await?;
        let nanos = (part.len() as u128 * 1_000_000_000) / u128::from(per_second);
        tokio::time::sleep(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
        .await;
    }
    Ok(())
}

async fn read_some(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the close of `stream` an RST. The caller drops it.
fn reset(stream: &TcpStream, counters: &Counters) {
    let _ = stream.set_zero_linger();
    counters.reset.fetch_add(1, Ordering::AcqRel);
}

/// Sends each stream a FIN and keeps it open, reading and dropping what arrives, until all
/// of them have ended (or the proxy is dropped, which cancels this).
async fn half_closed(streams: &[&TcpStream]) {
    let mut buf = vec![0u8; CHUNK];
    for stream in streams {
        let _ = socket2::SockRef::from(*stream).shutdown(Shutdown::Write);
    }
    for stream in streams {
        while let Ok(n) = read_some(stream, &mut buf).await {
            if n == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The bound on every wait of these tests.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// An echo server; returns its address.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        address
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(PATIENCE, f)
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {PATIENCE:?}"))
    }

    async fn round_trip(s: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        s.write_all(bytes).await.expect("write");
        let mut back = vec![0u8; bytes.len()];
        within("the echo", s.read_exact(&mut back))
            .await
            .expect("read the echo");
        back
    }

    #[tokio::test]
    async fn passes_bytes_both_ways() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.address()).await.expect("connect");
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut s, &payload).await, payload);
        assert_eq!(proxy.accepted(), 1);
        assert_eq!(proxy.open(), 1);
        drop(s);
        within("the connection closed", async {
            while proxy.open() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(proxy.forwarded(), 200_000);
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_until_it_is_lifted() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"before").await, b"before");
        proxy.set(Fault::Blackhole);
        open.write_all(b"during").await.expect("write");
        let mut fresh = TcpStream::connect(proxy.address())
            .await
            .expect("a blackhole still accepts");
        fresh.write_all(b"fresh").await.expect("write");
        // Nothing comes back while it lasts (a bounded look: this can only pass wrongly).
        let mut buf = [0u8; 6];
        let early = tokio::time::timeout(Duration::from_millis(300), open.read(&mut buf)).await;
        assert!(early.is_err(), "bytes got through a blackhole: {early:?}");
        proxy.set(Fault::Pass);
        within("held bytes", open.read_exact(&mut buf))
            .await
            .expect("read");
        assert_eq!(&buf, b"during");
        let mut buf = [0u8; 5];
        within("held bytes", fresh.read_exact(&mut buf))
            .await
            .expect("read");
        assert_eq!(&buf, b"fresh");
    }

    #[tokio::test]
    async fn a_delay_holds_each_chunk() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.address()).await.expect("connect");
        proxy.set(Fault::Delay(Duration::from_millis(100)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"slow").await, b"slow");
        // Both ways delayed: a lower bound, which no scheduling can break.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn bandwidth_is_capped() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.address()).await.expect("connect");
        proxy.set(Fault::Bandwidth(100_000));
        let payload = vec![7u8; 50_000];
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, &payload).await, payload);
        // 50 kB at 100 kB/s, twice (there and back) but overlapped: at least half a second.
        assert!(started.elapsed() >= Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_reset_resets_open_and_new_connections() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"hi").await, b"hi");
        proxy.set(Fault::Reset);
        let mut buf = [0u8; 1];
        let err = within("the reset", open.read(&mut buf))
            .await
            .expect_err("an open connection is reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        let mut fresh = TcpStream::connect(proxy.address()).await.expect("connect");
        let err = within("the reset", fresh.read(&mut buf))
            .await
            .expect_err("a new connection is reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    }

    #[tokio::test]
    async fn a_half_close_ends_reads_but_not_writes() {
        let proxy = FaultProxy::start(&echo().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.address()).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"hi").await, b"hi");
        proxy.set(Fault::HalfClose);
        let mut buf = [0u8; 8];
        let n = within("the end of stream", open.read(&mut buf))
            .await
            .expect("a FIN, not a reset");
        assert_eq!(n, 0);
        open.write_all(b"still accepted")
            .await
            .expect("the proxy still reads");
        let mut fresh = TcpStream::connect(proxy.address()).await.expect("connect");
        let n = within("the end of stream", fresh.read(&mut buf))
            .await
            .expect("a FIN");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_dead_upstream_is_a_reset() {
        let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = gone.local_addr().expect("address").to_string();
        drop(gone);
        let proxy = FaultProxy::start(&address).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.address()).await.expect("connect");
        let mut buf = [0u8; 1];
        let err = within("the reset", s.read(&mut buf))
            .await
            .expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(proxy.refused_upstream(), 1);
    }
}
