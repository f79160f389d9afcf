//! An in-process TCP fault proxy between the pool and PostgreSQL.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:<free port>` and forwards every accepted
//! connection to the upstream server (loopback only). Each forwarded connection is a
//! *link* with its own [`Fault`], changed at any time with [`FaultProxy::set_link`],
//! [`FaultProxy::set_existing`] or [`FaultProxy::set_all`]; what happens to *new*
//! connections is the [`Accept`] mode.
//!
//! A link is found from the server side through `pg_stat_activity.client_port`, which is
//! the local port of the proxy's upstream socket ([`Link::upstream_port`], see
//! [`FaultProxy::link_of_backend`]).
//!
//! Faults on a link:
//!
//! | fault | effect |
//! |---|---|
//! | [`Fault::Pass`] | bytes flow |
//! | [`Fault::Latency`] | every chunk is delayed by `one_way ± jitter`, in each direction, order kept |
//! | [`Fault::Bandwidth`] | each direction is capped at `bytes_per_sec` |
//! | [`Fault::Fin`] | both sockets are closed normally |
//! | [`Fault::Rst`] | both sockets are reset (`SO_LINGER` 0) |
//! | [`Fault::RstAfter`] | after `bytes` more bytes from the server, both sockets are reset |
//! | [`Fault::Blackhole`] | nothing is forwarded any more, sockets stay open (a partition); setting `Pass` again heals it |
//!
//! Accept modes: [`Accept::Forward`], [`Accept::Slow`] (wait, then forward: a slow
//! handshake), [`Accept::Deaf`] (accept, never answer; such sockets are closed when the
//! mode changes) and [`Accept::Refuse`] (the listener is closed, so connecting fails with
//! `ECONNREFUSED`; it is re-opened on the same port when the mode changes).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::rng::Rng;

/// What happens to the bytes of one proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything as it comes.
    Pass,
    /// Delay every chunk by `one_way ± jitter` in each direction (order is kept).
    Latency {
        /// The delay added in each direction.
        one_way: Duration,
        /// The largest random deviation from `one_way`, either way.
        jitter: Duration,
    },
    /// Cap each direction at this many bytes per second.
    Bandwidth {
        /// The cap, in bytes per second (at least 1).
        bytes_per_sec: u64,
    },
    /// Close both sockets normally (FIN).
    Fin,
    /// Reset both sockets (RST).
    Rst,
    /// Reset both sockets after this many more bytes from the server.
    RstAfter {
        /// Bytes still forwarded from the server before the reset.
        bytes: u64,
    },
    /// Stop forwarding in both directions and keep the sockets open.
    Blackhole,
}

/// What happens to new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// Connect upstream and forward.
    Forward,
    /// Wait this long, then connect upstream and forward: a slow handshake.
    Slow(Duration),
    /// Accept and never answer. Such sockets are closed when the mode changes.
    Deaf,
    /// Close the listener: connecting fails with "connection refused".
    Refuse,
}

/// A snapshot of one forwarded connection.
#[derive(Clone, Debug)]
pub struct Link {
    /// The link's id, for [`FaultProxy::set_link`].
    pub id: u64,
    /// The pool side's port (the peer of the accepted socket).
    pub client_port: u16,
    /// The local port of the upstream socket: the server's `pg_stat_activity.client_port`.
    pub upstream_port: u16,
    /// The fault applied now.
    pub fault: Fault,
    /// Bytes forwarded from the client to the server.
    pub bytes_up: u64,
    /// Bytes forwarded from the server to the client.
    pub bytes_down: u64,
}

/// Cumulative counters of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Connections accepted (in every mode but `Refuse`).
    pub accepted: u64,
    /// Links established to the upstream server.
    pub linked: u64,
    /// Upstream connects that failed (the client was then reset).
    pub upstream_failures: u64,
    /// Connections accepted in `Deaf` mode.
    pub deaf: u64,
    /// Links reset by a `Rst` or `RstAfter` fault.
    pub resets: u64,
    /// Links closed by a `Fin` fault.
    pub fins: u64,
}

#[derive(Clone, Copy, Debug)]
struct Shaping {
    generation: u64,
    fault: Fault,
}

struct LinkEntry {
    fault: watch::Sender<Shaping>,
    client_port: u16,
    upstream_port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    links: HashMap<u64, LinkEntry>,
    tasks: Vec<JoinHandle<()>>,
    default_fault: Option<Fault>,
    counters: ProxyCounters,
    shut: bool,
}

struct Inner {
    upstream: SocketAddr,
    port: u16,
    registry: Mutex<Registry>,
    /// The accept mode, with a generation number.
    accept: watch::Sender<(u64, Accept)>,
    /// The generation the accept loop has put in force.
    applied: watch::Sender<u64>,
    seed: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn track(&self, task: JoinHandle<()>) {
        let mut reg = self.lock();
        if reg.shut {
            task.abort();
            return;
        }
        reg.tasks.retain(|t| !t.is_finished());
        reg.tasks.push(task);
    }

    fn rng(&self) -> Rng {
        Rng::new(
            self.seed
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
        )
    }
}

/// A TCP proxy with fault injection, listening on `127.0.0.1`. Dropping it closes every
/// connection it forwards and stops listening.
pub struct FaultProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.inner.port)
            .field("upstream", &self.inner.upstream)
            .finish()
    }
}

/// A read-only view of a proxy for observers (the invariant sampler): which links are
/// partitioned. Cheap to clone; it does not keep the proxy running.
#[derive(Clone)]
pub struct ProxyView {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProxyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyView")
            .field("port", &self.inner.port)
            .finish()
    }
}

impl ProxyView {
    /// Upstream ports (server-side `client_port`s) of links that are blackholed: their
    /// backends are behind a partition, out of the pool's reach.
    pub fn partitioned_upstream_ports(&self) -> Vec<u16> {
        self.inner
            .lock()
            .links
            .values()
            .filter(|l| l.fault.borrow().fault == Fault::Blackhole)
            .map(|l| l.upstream_port)
            .collect()
    }
}

fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

impl FaultProxy {
    /// Starts a proxy to `upstream`, which must be a loopback address. New connections
    /// are forwarded and pass until told otherwise. Must be called inside a tokio runtime;
    /// the proxy's tasks run on it.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy only forwards to loopback addresses, not {upstream}"),
            ));
        }
        let listener = listen(0)?;
        let port = listener.local_addr()?.port();
        let (accept, _) = watch::channel((0, Accept::Forward));
        let (applied, _) = watch::channel(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let inner = Arc::new(Inner {
            upstream,
            port,
            registry: Mutex::new(Registry::default()),
            accept,
            applied,
            seed: AtomicU64::new(seed),
        });
        let task = tokio::spawn(accept_loop(Arc::clone(&inner), listener));
        inner.track(task);
        Ok(FaultProxy { inner })
    }

    /// Starts a proxy to `127.0.0.1:port`.
    pub async fn to_port(port: u16) -> io::Result<FaultProxy> {
        FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// The port the proxy listens on (kept while refusing).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.inner.port))
    }

    /// `base` (user, password, database, application name, options) pointed at the
    /// proxy instead of its own host.
    pub fn config(&self, base: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.inner.port);
        if let Some(user) = base.get_user() {
            config.user(user);
        }
        if let Some(password) = base.get_password() {
            config.password(password);
        }
        if let Some(dbname) = base.get_dbname() {
            config.dbname(dbname);
        }
        if let Some(name) = base.get_application_name() {
            config.application_name(name);
        }
        if let Some(options) = base.get_options() {
            config.options(options);
        }
        config
    }

    /// A read-only view for observers.
    pub fn view(&self) -> ProxyView {
        ProxyView {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Sets what happens to new connections, and waits until it is in force (for
    /// `Refuse`: the listener is closed, so no handshake completes any more).
    pub async fn set_accept(&self, mode: Accept) {
        let mut generation = 0;
        self.inner.accept.send_modify(|(g, m)| {
            *g += 1;
            generation = *g;
            *m = mode;
        });
        let mut applied = self.inner.applied.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            applied.wait_for(|g| *g >= generation),
        )
        .await;
    }

    /// The accept mode in force.
    pub fn accept_mode(&self) -> Accept {
        self.inner.accept.borrow().1
    }

    /// Sets the fault of links opened from now on (existing links keep theirs).
    pub fn set_new(&self, fault: Fault) {
        self.inner.lock().default_fault = Some(fault);
    }

    /// Sets the fault of every existing link (new links keep the default).
    pub fn set_existing(&self, fault: Fault) -> usize {
        let reg = self.inner.lock();
        for link in reg.links.values() {
            apply(link, fault);
        }
        reg.links.len()
    }

    /// Sets the fault of every existing link and of links opened from now on.
    pub fn set_all(&self, fault: Fault) {
        let mut reg = self.inner.lock();
        reg.default_fault = Some(fault);
        for link in reg.links.values() {
            apply(link, fault);
        }
    }

    /// Sets the fault of one link. Returns whether it still exists.
    pub fn set_link(&self, id: u64, fault: Fault) -> bool {
        match self.inner.lock().links.get(&id) {
            Some(link) => {
                apply(link, fault);
                true
            }
            None => false,
        }
    }

    /// Back to normal: new connections are forwarded, and every link passes.
    pub async fn heal(&self) {
        self.set_accept(Accept::Forward).await;
        self.set_all(Fault::Pass);
    }

    /// The links open now, by id.
    pub fn links(&self) -> Vec<Link> {
        let reg = self.inner.lock();
        let mut out: Vec<Link> = reg
            .links
            .iter()
            .map(|(id, l)| Link {
                id: *id,
                client_port: l.client_port,
                upstream_port: l.upstream_port,
                fault: l.fault.borrow().fault,
                bytes_up: l.up.load(Ordering::Relaxed),
                bytes_down: l.down.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }

    /// The link whose upstream socket has this local port (`pg_stat_activity.client_port`).
    pub fn link_by_upstream_port(&self, port: u16) -> Option<u64> {
        self.inner
            .lock()
            .links
            .iter()
            .find(|(_, l)| l.upstream_port == port)
            .map(|(id, _)| *id)
    }

    /// The link serving backend `pid`, found through `pg_stat_activity.client_port` on
    /// `admin` (a direct connection to the server).
    pub async fn link_of_backend(
        &self,
        admin: &tokio_postgres::Client,
        pid: i32,
    ) -> Result<Option<u64>, tokio_postgres::Error> {
        let row = admin
            .query_opt(
                "SELECT client_port FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await?;
        let port: Option<i32> = row.and_then(|r| r.get(0));
        Ok(port
            .and_then(|p| u16::try_from(p).ok())
            .and_then(|p| self.link_by_upstream_port(p)))
    }

    /// Cumulative counters.
    pub fn counters(&self) -> ProxyCounters {
        self.inner.lock().counters.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let mut reg = self.inner.lock();
        reg.shut = true;
        for task in reg.tasks.drain(..) {
            task.abort();
        }
        reg.links.clear();
    }
}

fn apply(link: &LinkEntry, fault: Fault) {
    link.fault.send_modify(|s| {
        s.generation += 1;
        s.fault = fault;
    });
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut mode_rx = inner.accept.subscribe();
    loop {
        let (generation, mode) = *mode_rx.borrow_and_update();
        if mode == Accept::Refuse {
            listener = None;
            inner.applied.send_replace(generation);
            if mode_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match rebind(inner.port).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!(
                        "fault proxy: could not listen on 127.0.0.1:{} again: {e}",
                        inner.port
                    );
                    return;
                }
            },
        };
        inner.applied.send_replace(generation);
        let accepted = tokio::select! {
            changed = mode_rx.changed() => {
                listener = Some(current);
                if changed.is_err() {
                    return;
                }
                continue;
            }
            accepted = current.accept() => accepted,
        };
        listener = Some(current);
        let Ok((socket, peer)) = accepted else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        inner.lock().counters.accepted += 1;
        let task = match mode {
            Accept::Deaf => {
                inner.lock().counters.deaf += 1;
                tokio::spawn(deaf(inner.accept.subscribe(), socket))
            }
            Accept::Refuse => continue,
            Accept::Slow(delay) => {
                tokio::spawn(link(Arc::clone(&inner), socket, peer.port(), delay))
            }
            _ => tokio::spawn(link(
                Arc::clone(&inner),
                socket,
                peer.port(),
                Duration::ZERO,
            )),
        };
        inner.track(task);
    }
}

async fn rebind(port: u16) -> io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..100 {
        match listen(port) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| io::Error::other("rebind failed")))
}

/// Holds an accepted socket without a word until the accept mode changes.
async fn deaf(mut mode_rx: watch::Receiver<(u64, Accept)>, socket: TcpStream) {
    mode_rx.borrow_and_update();
    let _ = mode_rx.changed().await;
    drop(socket);
}

/// How a link ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// A side closed or failed: close the other normally.
    Closed,
    Fin,
    Rst,
}

async fn link(inner: Arc<Inner>, client: TcpStream, client_port: u16, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let server = match TcpStream::connect(inner.upstream).await {
        Ok(s) => s,
        Err(_) => {
            // What a client sees behind a load balancer whose backend is down.
            inner.lock().counters.upstream_failures += 1;
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let upstream_port = server.local_addr().map_or(0, |a| a.port());
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let (fault_tx, fault_rx) = {
        let mut reg = inner.lock();
        if reg.shut {
            return;
        }
        let fault = reg.default_fault.unwrap_or(Fault::Pass);
        let (tx, rx) = watch::channel(Shaping {
            generation: 1,
            fault,
        });
        reg.next_id += 1;
        let id = reg.next_id;
        reg.links.insert(
            id,
            LinkEntry {
                fault: tx.clone(),
                client_port,
                upstream_port,
                up: Arc::clone(&up),
                down: Arc::clone(&down),
            },
        );
        reg.counters.linked += 1;
        ((id, tx), rx)
    };
    let (id, _keep) = fault_tx;
    let client = Arc::new(client);
    let server = Arc::new(server);
    let end = {
        let upward = pump(
            Arc::clone(&client),
            Arc::clone(&server),
            false,
            fault_rx.clone(),
            up,
            inner.rng(),
        );
        let downward = pump(
            Arc::clone(&server),
            Arc::clone(&client),
            true,
            fault_rx.clone(),
            down,
            inner.rng(),
        );
        let killed = killed(fault_rx);
        tokio::select! {
            end = upward => end,
            end = downward => end,
            end = killed => end,
        }
    };
    {
        let mut reg = inner.lock();
        reg.links.remove(&id);
        match end {
            End::Rst => reg.counters.resets += 1,
            End::Fin => reg.counters.fins += 1,
            End::Closed => {}
        }
    }
    if end == End::Rst {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // The pumps are gone: these are the last references, so the sockets close here.
    drop(client);
    drop(server);
}

/// Resolves when the link's fault becomes `Fin` or `Rst`.
async fn killed(mut rx: watch::Receiver<Shaping>) -> End {
    loop {
        match rx.borrow_and_update().fault {
            Fault::Fin => return End::Fin,
            Fault::Rst => return End::Rst,
            _ => {}
        }
        if rx.changed().await.is_err() {
            return End::Closed;
        }
    }
}

enum Chunk {
    Data { due: Instant, bytes: Vec<u8> },
    Eof,
}

/// Forwards one direction: a reader that stamps chunks with their due time, and a writer
/// that sends them when due, shaped by the fault in force.
async fn pump(
    src: Arc<TcpStream>,
    dst: Arc<TcpStream>,
    downward: bool,
    fault: watch::Receiver<Shaping>,
    counter: Arc<AtomicU64>,
    mut rng: Rng,
) -> End {
    let (tx, mut rx) = mpsc::channel::<Chunk>(64);
    let mut read_fault = fault.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let current = read_fault.borrow_and_update().fault;
            if current == Fault::Blackhole {
                tokio::select! {
                    changed = read_fault.changed() => if changed.is_err() { return; },
                    () = tx.closed() => return,
                }
                continue;
            }
            tokio::select! {
                biased;
                changed = read_fault.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                () = tx.closed() => return,
                ready = src.readable() => {
                    if ready.is_err() {
                        return;
                    }
                }
            }
            let n = match src.try_read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Chunk::Eof).await;
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            let delay = match current {
                Fault::Latency { one_way, jitter } => {
                    let spread = rng.below(2 * jitter.as_micros() as u64 + 1);
                    (one_way + Duration::from_micros(spread)).saturating_sub(jitter)
                }
                _ => Duration::ZERO,
            };
            let chunk = Chunk::Data {
                due: Instant::now() + delay,
                bytes: buf[..n].to_vec(),
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    };
    let mut write_fault = fault;
    let writer = async move {
        let mut last_due = Instant::now();
        let mut seen_generation = 0;
        let mut budget: Option<u64> = None;
        while let Some(chunk) = rx.recv().await {
            let (due, bytes) = match chunk {
                Chunk::Eof => return End::Closed,
                Chunk::Data { due, bytes } => (due, bytes),
            };
            let due = due.max(last_due);
            last_due = due;
            tokio::time::sleep_until(due).await;
            let mut off = 0;
            while off < bytes.len() {
                let shaping = *write_fault.borrow_and_update();
                if shaping.generation != seen_generation {
                    seen_generation = shaping.generation;
                    budget = match shaping.fault {
                        Fault::RstAfter { bytes } if downward => Some(bytes),
                        _ => None,
                    };
                }
                let mut end = bytes.len();
                match shaping.fault {
                    Fault::Blackhole => {
                        if write_fault.changed().await.is_err() {
                            return End::Closed;
                        }
                        continue;
                    }
                    Fault::Fin => return End::Fin,
                    Fault::Rst => return End::Rst,
                    Fault::Bandwidth { bytes_per_sec } => {
                        // Slices of about 20 ms worth.
                        let slice = (bytes_per_sec / 50).max(1);
                        end = end.min(off + usize::try_from(slice).unwrap_or(usize::MAX));
                    }
                    _ => {}
                }
                if let Some(left) = budget {
                    if left == 0 {
                        return End::Rst;
                    }
                    end = end.min(off + usize::try_from(left).unwrap_or(usize::MAX));
                }
                if write_all(&dst, &bytes[off..end]).await.is_err() {
                    return End::Closed;
                }
                let sent = (end - off) as u64;
                counter.fetch_add(sent, Ordering::Relaxed);
                off = end;
                if let Some(left) = budget.as_mut() {
                    *left -= sent;
                    if *left == 0 {
                        return End::Rst;
                    }
                }
                if let Fault::Bandwidth { bytes_per_sec } = shaping.fault {
                    let secs = sent as f64 / bytes_per_sec.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
            }
        }
        End::Closed
    };
    let ((), end) = tokio::join!(reader, writer);
    end
}

async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        dst.writable().await?;
        match dst.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
