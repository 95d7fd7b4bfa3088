//! The receive path: one blocking thread reads datagrams in batches
//! (`recvmmsg`), drops truncated ones, applies the checkpoint, picks the
//! partition, and hands whole batches to the producing side.
//!
//! Everything per peer (its `source` header, its sticky partition) is kept
//! in a map owned by this thread, so the hot path takes no lock; counters
//! are added to the shared [`Stats`] once per batch.

use std::{
    collections::HashMap,
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use socket2::{Domain, Protocol, Socket, Type};
use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    config::{CheckpointStrategy, PartitionStrategy},
    stats::Stats,
};

/// Datagrams read per `recvmmsg` call at most.
const VLEN: usize = 256;

/// The socket receive buffer asked for: bursts of this many bytes can wait
/// in the kernel while the thread is not scheduled (2 cores, shared with the
/// producer and often the broker).
pub const RCVBUF_BYTES: usize = 32 * 1024 * 1024;

/// How often the thread looks at the stop flag when no datagram comes.
const POLL: Duration = Duration::from_millis(100);

/// Pause after a partial batch while datagrams are flowing, so that the
/// next `recvmmsg` finds several waiting: one wake-up and one syscall per
/// batch instead of per datagram (the socket buffer holds the burst; the
/// added latency is this much at most).
const COALESCE: Duration = Duration::from_micros(500);

/// One datagram on its way to Kafka.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// The datagram's bytes, exactly.
    pub value: Bytes,
    /// `ip:port` of the sender (the `source` header), shared by its
    /// datagrams.
    pub source: Bytes,
    /// The chosen partition and its `partition` header, unless the
    /// strategy is NONE.
    pub partition: Option<(i32, Bytes)>,
}

/// Datagrams read together.
#[derive(Debug)]
pub struct Batch {
    /// When `recvmmsg` returned them (latency is measured from here).
    pub received_at: Instant,
    /// The same, as the records' timestamp.
    pub timestamp: OffsetDateTime,
    /// The datagrams that passed the checkpoint.
    pub datagrams: Vec<Datagram>,
}

/// Binds the UDP socket with a large receive buffer; returns it and the
/// receive buffer size the kernel granted.
pub fn bind(addr: SocketAddr) -> io::Result<(Socket, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // SO_RCVBUFFORCE passes net.core.rmem_max when privileged; otherwise
    // the plain option gets what rmem_max allows.
    if !force_rcvbuf(&socket, RCVBUF_BYTES) {
        let _ = socket.set_recv_buffer_size(RCVBUF_BYTES);
    }
    socket.set_read_timeout(Some(POLL))?;
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket, granted))
}

#[cfg(target_os = "linux")]
fn force_rcvbuf(socket: &Socket, bytes: usize) -> bool {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn force_rcvbuf(_: &Socket, _: usize) -> bool {
    false
}

/// What the receive thread needs besides the socket.
pub struct Receiver {
    /// Bytes read per datagram (`BUFFER_SIZE`).
    pub buffer_size: usize,
    /// `CACHE_SIZE`: datagrams queued towards the producer at most.
    pub cache_size: usize,
    /// Datagrams queued now (the forwarder subtracts what it took).
    pub queued: Arc<AtomicUsize>,
    /// `CHECKPOINT_STRATEGY`.
    pub checkpoint: CheckpointStrategy,
    /// `KAFKA_PARTITION_STRATEGY`.
    pub strategy: PartitionStrategy,
    /// The topic's partition count.
    pub partitions: i32,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Set to stop receiving.
    pub stop: Arc<AtomicBool>,
    /// Where batches go.
    pub tx: UnboundedSender<Batch>,
}

/// What the thread knows about one sender.
struct Peer {
    source: Bytes,
    /// Its partition under STICKY_ROUND_ROBIN.
    partition: i32,
    /// The stats interval in which it was last counted as active.
    seen_in: u64,
}

/// `recvmmsg`'s buffers, allocated once.
struct RecvBufs {
    data: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    size: usize,
}

impl RecvBufs {
    fn new(size: usize) -> Self {
        // SAFETY: all-zero is a valid sockaddr_storage and mmsghdr.
        let zeroed_name = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        let zeroed_hdr = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        Self {
            data: vec![0; size * VLEN],
            names: vec![zeroed_name; VLEN],
            iovecs: Vec::with_capacity(VLEN),
            headers: vec![zeroed_hdr; VLEN],
            size,
        }
    }

    /// Reads up to VLEN datagrams, waiting up to [`POLL`] for the first.
    fn recv(&mut self, fd: libc::c_int) -> io::Result<usize> {
        self.iovecs.clear();
        for i in 0..VLEN {
            self.iovecs.push(libc::iovec {
                iov_base: self.data[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            });
        }
        for (i, h) in self.headers.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the headers point into buffers owned by self, alive and
        // not otherwise borrowed during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                VLEN as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The `i`th datagram read: its sender, bytes and whether it was cut.
    fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8], bool) {
        let h = &self.headers[i];
        let len = h.msg_len as usize;
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let data = &self.data[i * self.size..i * self.size + len.min(self.size)];
        (sockaddr(&self.names[i]), data, truncated)
    }
}

/// The address in a `sockaddr_storage` filled by the kernel.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Receiver {
    /// Receives until the stop flag is set; the channel is closed on return.
    pub fn run(self, socket: Socket) {
        let fd = socket.as_raw_fd();
        let mut bufs = RecvBufs::new(self.buffer_size);
        let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
        let mut next_sticky = 0i32;
        let mut next_rr = 0i32;
        let mut rng = SmallRng::from_os_rng();
        let partition_headers: Vec<Bytes> = (0..self.partitions.max(0))
            .map(|p| Bytes::from(p.to_string()))
            .collect();
        let unknown_source = Bytes::from_static(b"unknown");
        let mut pause = false;
        while !self.stop.load(Relaxed) {
            if std::mem::take(&mut pause) {
                std::thread::sleep(COALESCE);
            }
            let n = match bufs.recv(fd) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::error!(error = %e, "receiving failed");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let received_at = Instant::now();
            // A partial batch of several means traffic is flowing but the
            // thread is faster than it: let the next one accumulate (after
            // handing this one on). A single datagram is likely sporadic
            // traffic, and a full batch a backlog.
            pause = n > 1 && n < VLEN;
            let interval = self.stats.interval_number();
            // One allocation for the batch's payloads; each record's value
            // is a slice of it.
            let mut payload =
                BytesMut::with_capacity((0..n).map(|i| bufs.headers[i].msg_len as usize).sum());
            let mut kept: Vec<(usize, usize, Bytes, Option<i32>)> = Vec::with_capacity(n);
            let (mut rx_bytes, mut tr_n, mut tr_bytes, mut dis_n, mut dis_bytes, mut active) =
                (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            for i in 0..n {
                let (addr, data, truncated) = bufs.get(i);
                rx_bytes += data.len() as u64;
                let peer = addr.map(|addr| {
                    peers.entry(addr).or_insert_with(|| {
                        let p = Peer {
                            source: Bytes::from(addr.to_string()),
                            partition: next_sticky,
                            seen_in: u64::MAX,
                        };
                        next_sticky = (next_sticky + 1) % self.partitions.max(1);
                        p
                    })
                });
                let (source, sticky) = match peer {
                    Some(p) => {
                        if p.seen_in != interval {
                            p.seen_in = interval;
                            active += 1;
                        }
                        (p.source.clone(), p.partition)
                    }
                    None => (unknown_source.clone(), 0),
                };
                if truncated {
                    tr_n += 1;
                    tr_bytes += data.len() as u64;
                    continue;
                }
                let pass = match self.checkpoint {
                    CheckpointStrategy::OpenDoors => true,
                    CheckpointStrategy::ClosedDoors => false,
                    CheckpointStrategy::FlipCoin => rng.random::<bool>(),
                };
                if !pass {
                    dis_n += 1;
                    dis_bytes += data.len() as u64;
                    continue;
                }
                let partition = match self.strategy {
                    PartitionStrategy::None => None,
                    PartitionStrategy::Random => Some(rng.random_range(0..self.partitions)),
                    PartitionStrategy::RoundRobin => {
                        let p = next_rr;
                        next_rr = (next_rr + 1) % self.partitions;
                        Some(p)
                    }
                    PartitionStrategy::StickyRoundRobin => Some(sticky),
                };
                let start = payload.len();
                payload.extend_from_slice(data);
                kept.push((start, data.len(), source, partition));
            }
            self.stats.received.add(n as u64, rx_bytes);
            self.stats.truncated.add(tr_n, tr_bytes);
            self.stats.discarded.add(dis_n, dis_bytes);
            if active > 0 {
                self.stats.active_peers.fetch_add(active, Relaxed);
                self.stats.known_peers.store(peers.len() as u64, Relaxed);
            }
            if kept.is_empty() {
                continue;
            }
            // CACHE_SIZE bounds the queue; what does not fit is dropped and
            // counted, so that a slow producer never blocks receiving.
            let room = self.cache_size.saturating_sub(self.queued.load(Relaxed));
            if kept.len() > room {
                let over = kept.split_off(room);
                self.stats
                    .overflow
                    .add(over.len() as u64, over.iter().map(|k| k.1 as u64).sum());
                if kept.is_empty() {
                    continue;
                }
            }
            let payload = payload.freeze();
            let datagrams: Vec<Datagram> = kept
                .into_iter()
                .map(|(start, len, source, partition)| Datagram {
                    value: payload.slice(start..start + len),
                    source,
                    partition: partition.map(|p| (p, partition_headers[p as usize].clone())),
                })
                .collect();
            self.queued.fetch_add(datagrams.len(), Relaxed);
            let batch = Batch {
                received_at,
                timestamp: OffsetDateTime::now_utc(),
                datagrams,
            };
            if self.tx.send(batch).is_err() {
                break; // the forwarder is gone
            }
        }
    }
}
