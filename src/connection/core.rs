//! The sans-IO connection state machine: framing, correlation ids and the
//! in-flight table. No sockets, no runtime: bytes in, events out, so every
//! path (split frames, hostile lengths, out-of-order answers) is unit-tested
//! with synthetic input.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ConnectionError;
use crate::protocol::{ApiKey, EncodeError, Reader, Request};

/// Offset of the correlation id in an encoded frame: size (4), api key (2),
/// api version (2).
const CORRELATION_ID_OFFSET: usize = 8;

/// Frames up to this size are copied into one buffer so several small
/// requests go out in one write; larger ones are handed out as they are.
const COALESCE_MAX: usize = 16 * 1024;

/// Smallest read-buffer reservation, so small responses need one read.
const MIN_READ_RESERVE: usize = 64 * 1024;

/// After a frame at least this large (a fetch response), the next frame is
/// likely large too: its first read is limited to [`FRAME_START_READ`]
/// bytes, because whatever the first read brings moves to a larger
/// allocation if the frame does not fit where it was read (64 KiB moved per
/// 1 MiB fetch response was 3% of consuming 10 KiB records).
const LARGE_FRAME: usize = 256 * 1024;
const FRAME_START_READ: usize = 4 * 1024;

/// Frames up to this size get a buffer of their size (rounded up to a
/// power of two) as soon as their length prefix arrives: received without
/// regrowth copies. It is the only allocation a
/// length prefix alone can cause (pages are touched only as bytes arrive);
/// past it the buffer at most doubles what has arrived. Covers a fetch
/// response of one partition at the consumer's default 4 MiB, or several
/// at 1 MiB.
const EXACT_FRAME_ALLOC: usize = 8 << 20;

/// A request encoded into its final frame (size prefix, header, body), ready
/// to be queued. Encoding happens on the caller's task, so the connection's
/// own task only patches in the correlation id.
#[derive(Debug)]
pub struct EncodedRequest {
    frame: BytesMut,
    /// The rest of the frame after `frame`, in order: large byte strings
    /// (record batches) attached by reference instead of copied, and the
    /// bytes encoded between them. Empty for most requests.
    tail: Vec<Bytes>,
    api_key: ApiKey,
    version: i16,
    response_header_version: i16,
}

impl EncodedRequest {
    /// Encodes `req` at `version` with its request header. The correlation id
    /// is assigned when the request is queued.
    pub fn new<R: Request>(
        req: &R,
        version: i16,
        client_id: Option<&str>,
    ) -> Result<Self, ConnectionError> {
        Self::with_body::<R>(version, client_id, |w| req.encode(w.buf(), version))
    }

    /// Encodes a request of type `R` at `version` whose body `body` writes
    /// into a [`FrameWriter`], which can attach large byte strings without
    /// copying them (a ProduceRequest's record batches go to the socket
    /// straight from the producer's buffers). The body must be exactly what
    /// `R`'s own encoder would write.
    pub fn with_body<R: Request>(
        version: i16,
        client_id: Option<&str>,
        body: impl FnOnce(&mut FrameWriter) -> Result<(), EncodeError>,
    ) -> Result<Self, ConnectionError> {
        let api = R::API_KEY;
        let enc_err = |source| ConnectionError::Encode {
            api,
            version,
            source,
        };
        let header_version = R::request_header_version(version);
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0); // size, patched below
        frame.put_i16(api.0);
        frame.put_i16(version);
        frame.put_i32(0); // correlation id, patched when queued
        if header_version >= 1 {
            // The client id stays a classic nullable string even in the
            // flexible header v2.
            match client_id {
                Some(id) => {
                    let max = i16::MAX as usize;
                    if id.len() > max {
                        return Err(enc_err(EncodeError::TooLong {
                            what: "client id",
                            len: id.len(),
                            max,
                        }));
                    }
                    frame.put_i16(id.len() as i16);
                    frame.put_slice(id.as_bytes());
                }
                None => frame.put_i16(-1),
            }
        }
        if header_version >= 2 {
            frame.put_u8(0); // no tagged fields
        }
        let mut w = FrameWriter {
            frame,
            tail: Vec::new(),
            pending: BytesMut::new(),
        };
        body(&mut w).map_err(enc_err)?;
        let FrameWriter {
            mut frame,
            mut tail,
            pending,
        } = w;
        if !pending.is_empty() {
            tail.push(pending.freeze());
        }
        let size = frame.len() + tail.iter().map(Bytes::len).sum::<usize>() - 4;
        let max = i32::MAX as usize;
        if size > max {
            return Err(enc_err(EncodeError::TooLong {
                what: "request frame",
                len: size,
                max,
            }));
        }
        frame[..4].copy_from_slice(&(size as i32).to_be_bytes());
        Ok(Self {
            frame,
            tail,
            api_key: api,
            version,
            response_header_version: R::response_header_version(version),
        })
    }

    /// The request's API.
    pub fn api_key(&self) -> ApiKey {
        self.api_key
    }

    /// The request's version.
    pub fn version(&self) -> i16 {
        self.version
    }

    /// The frame's length in bytes, size prefix included.
    pub fn len(&self) -> usize {
        self.frame.len() + self.tail.iter().map(Bytes::len).sum::<usize>()
    }

    /// Whether the frame is empty (never, for a frame built by [`Self::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Byte strings shorter than this are copied into the frame rather than
/// attached: a separate buffer costs more than copying a few KiB.
const ATTACH_MIN: usize = 4 * 1024;

/// Where [`EncodedRequest::with_body`] has a request body written: encoded
/// fields go to [`buf`](Self::buf), large byte strings are
/// [attached](Self::attach) as they are.
#[derive(Debug)]
pub struct FrameWriter {
    /// The frame's first piece (size prefix and header), never split so
    /// the correlation id can be patched in when queued.
    frame: BytesMut,
    /// Pieces after `frame`; non-empty once something was attached.
    tail: Vec<Bytes>,
    /// Bytes encoded since the last attached string.
    pending: BytesMut,
}

impl FrameWriter {
    /// The buffer the next encoded bytes go to.
    pub fn buf(&mut self) -> &mut BytesMut {
        if self.tail.is_empty() {
            &mut self.frame
        } else {
            &mut self.pending
        }
    }

    /// Appends `bytes` to the frame: by reference if large, else copied.
    pub fn attach(&mut self, bytes: Bytes) {
        if bytes.len() < ATTACH_MIN {
            self.buf().extend_from_slice(&bytes);
            return;
        }
        if !self.pending.is_empty() {
            self.tail.push(self.pending.split().freeze());
        }
        self.tail.push(bytes);
    }
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct InFlight<T> {
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response_header_version: i16,
    /// Position of the frame's last byte in the outgoing byte stream, so a
    /// broken connection can tell which requests were fully written.
    end_offset: u64,
    /// `None` once the waiter has gone: the response is still read, then dropped.
    token: Option<T>,
}

/// A request the broker does not answer, queued and not yet fully written.
#[derive(Debug)]
struct Unanswered<T> {
    api_key: ApiKey,
    version: i16,
    /// Position of the frame's last byte in the outgoing byte stream.
    end_offset: u64,
    token: T,
}

/// A response matched to its request.
#[derive(Debug)]
pub struct Response<T> {
    /// The correlation id shared by request and response.
    pub correlation_id: i32,
    /// The request's API.
    pub api_key: ApiKey,
    /// The request's version, which the body is encoded in.
    pub version: i16,
    /// The token given when the request was queued.
    pub token: T,
    /// The response body after the header: a zero-copy slice of the frame.
    pub body: Bytes,
}

/// A request that will never be answered because the connection closed.
#[derive(Debug)]
pub struct Failed<T> {
    /// The token given when the request was queued.
    pub token: T,
    /// The request's API.
    pub api_key: ApiKey,
    /// The request's version.
    pub version: i16,
    /// Whether the whole frame was written, so the broker may have processed it.
    pub ambiguous: bool,
}

/// The state of one Kafka connection, independent of any I/O.
///
/// `T` is an opaque token identifying the waiter of a request (a oneshot
/// sender in the tokio driver). Usage: [`queue`](Self::queue) requests, write
/// what [`poll_transmit`](Self::poll_transmit) hands out and report it with
/// [`on_written`](Self::on_written); read into [`recv_buf`](Self::recv_buf)
/// (or pass bytes to [`handle_received`](Self::handle_received)) and drain
/// [`poll_response`](Self::poll_response). After an error the connection is
/// closed: [`fail_all`](Self::fail_all) hands back every waiter.
#[derive(Debug)]
pub struct ConnectionCore<T> {
    max_frame_size: usize,
    next_correlation_id: i32,
    /// Oldest first; Kafka answers in order, so the front usually matches.
    in_flight: VecDeque<InFlight<T>>,
    /// Requests the broker will not answer (produce with acks=0), oldest
    /// first, with the stream position of their frame's last byte: their
    /// waiters are told once that byte is written.
    unanswered: VecDeque<Unanswered<T>>,
    recv: BytesMut,
    frames_received: u64,
    /// Size of the last frame received, length prefix included.
    last_frame_len: usize,
    /// The room after `recv`'s, split off while only a frame's start is
    /// read; joined back (without a copy) if the frame fits.
    recv_rest: BytesMut,
    transmit: VecDeque<Bytes>,
    coalesce: BytesMut,
    queued_bytes: u64,
    written_bytes: u64,
    error: Option<ConnectionError>,
}

impl<T> ConnectionCore<T> {
    /// A fresh connection state accepting frames up to `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size,
            next_correlation_id: 0,
            in_flight: VecDeque::new(),
            unanswered: VecDeque::new(),
            recv: BytesMut::new(),
            frames_received: 0,
            last_frame_len: 0,
            recv_rest: BytesMut::new(),
            transmit: VecDeque::new(),
            coalesce: BytesMut::new(),
            queued_bytes: 0,
            written_bytes: 0,
            error: None,
        }
    }

    /// Assigns a correlation id to `req`, records it as in flight and queues
    /// its bytes for transmission. Returns the correlation id.
    pub fn queue(&mut self, req: EncodedRequest, token: T) -> Result<i32, ConnectionError> {
        let (api_key, version, response_header_version) =
            (req.api_key, req.version, req.response_header_version);
        let (correlation_id, end_offset) = self.enqueue(req.frame, req.tail)?;
        self.in_flight.push_back(InFlight {
            correlation_id,
            api_key,
            version,
            response_header_version,
            end_offset,
            token: Some(token),
        });
        Ok(correlation_id)
    }

    /// Queues a request the broker sends no response to (a produce with
    /// acks=0). It takes a correlation id, as the broker expects, but is not
    /// entered in the in-flight table: a response never comes, and the
    /// responses to other requests are still matched by their ids. `token`
    /// comes back from [`poll_written`](Self::poll_written) once the whole
    /// frame has been written. Returns the correlation id.
    pub fn queue_no_response(
        &mut self,
        req: EncodedRequest,
        token: T,
    ) -> Result<i32, ConnectionError> {
        let (api_key, version) = (req.api_key, req.version);
        let (correlation_id, end_offset) = self.enqueue(req.frame, req.tail)?;
        self.unanswered.push_back(Unanswered {
            api_key,
            version,
            end_offset,
            token,
        });
        Ok(correlation_id)
    }

    /// Patches in the next correlation id and queues the frame (`frame`
    /// then the `tail` pieces); returns the id and the stream position of
    /// the frame's last byte.
    fn enqueue(
        &mut self,
        mut frame: BytesMut,
        tail: Vec<Bytes>,
    ) -> Result<(i32, u64), ConnectionError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let correlation_id = self.next_correlation_id;
        // Negative ids are avoided only for readability in broker logs.
        self.next_correlation_id = correlation_id.checked_add(1).unwrap_or(0);
        if let Some(slot) = frame.get_mut(CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4) {
            slot.copy_from_slice(&correlation_id.to_be_bytes());
        }
        self.queued_bytes += frame.len() as u64;
        self.push_piece(frame.freeze());
        for piece in tail {
            self.queued_bytes += piece.len() as u64;
            self.push_piece(piece);
        }
        Ok((correlation_id, self.queued_bytes))
    }

    /// Queues one piece of a frame: small ones are copied together so they
    /// go out in few writes, large ones are handed out as they are.
    fn push_piece(&mut self, piece: Bytes) {
        if piece.len() <= COALESCE_MAX {
            self.coalesce.extend_from_slice(&piece);
        } else {
            if !self.coalesce.is_empty() {
                self.transmit.push_back(self.coalesce.split().freeze());
            }
            self.transmit.push_back(piece);
        }
    }

    /// Encodes and queues `req` at `version`; see [`Self::queue`].
    pub fn queue_request<R: Request>(
        &mut self,
        req: &R,
        version: i16,
        client_id: Option<&str>,
        token: T,
    ) -> Result<i32, ConnectionError> {
        let encoded = EncodedRequest::new(req, version, client_id)?;
        self.queue(encoded, token)
    }

    /// The next chunk of bytes to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if let Some(b) = self.transmit.pop_front() {
            return Some(b);
        }
        if self.coalesce.is_empty() {
            None
        } else {
            Some(self.coalesce.split().freeze())
        }
    }

    /// Whether bytes are waiting for [`Self::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty() || !self.coalesce.is_empty()
    }

    /// Reports that `n` more bytes of the transmitted stream were written.
    pub fn on_written(&mut self, n: usize) {
        self.written_bytes += n as u64;
    }

    /// The token of the next [no-response](Self::queue_no_response) request
    /// whose frame has been fully written; it is then done.
    pub fn poll_written(&mut self) -> Option<T> {
        match self.unanswered.front() {
            Some(u) if u.end_offset <= self.written_bytes => {
                self.unanswered.pop_front().map(|u| u.token)
            }
            _ => None,
        }
    }

    /// The receive buffer, with spare capacity reserved for the next read.
    ///
    /// Once a frame's length is known and the buffer cannot hold the rest of
    /// it, the bytes so far move to a new buffer with room for the whole
    /// frame (so it is never copied again), but at most
    /// `EXACT_FRAME_ALLOC` (rounded up to a power of two) or twice what
    /// has arrived,
    /// so a hostile length prefix cannot make the client allocate far
    /// beyond the bytes received. Between frames it keeps room for several
    /// small responses per read; after a large frame, room for another like
    /// it where one fits without moving, else only the next frame's start is
    /// read before its length decides where the rest goes.
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        let have = self.recv.len();
        match self.announced_len().map(|len| len + 4) {
            Some(total) if have < total => {
                if self.recv_rest.capacity() > 0 {
                    let fits = self.recv.capacity() + self.recv_rest.capacity() >= total;
                    if fits && have < self.recv.capacity() {
                        // The start is read first; then the rest joins it.
                        return &mut self.recv;
                    }
                    let rest = std::mem::take(&mut self.recv_rest);
                    if fits {
                        // Contiguous with the full start: no copy.
                        self.recv.unsplit(rest);
                    }
                }
                // A buffer that no received frame still shares is reused
                // if large enough: its pages are already mapped.
                if self.recv.capacity() < total && !self.recv.try_reclaim(total - have) {
                    if have >= EXACT_FRAME_ALLOC {
                        // Past the exact allocation: grow in place (a
                        // realloc, which remaps large buffers rather than
                        // copying and faulting in new pages), at most
                        // doubling what has arrived.
                        self.recv.reserve(total.min(have.saturating_mul(2)) - have);
                    } else {
                        // Rounded up to a power of two: buffers of a few
                        // sizes only, so the allocator reuses freed ones
                        // instead of mapping (and faulting in) fresh pages
                        // for every frame of a slightly different size.
                        let cap = total
                            .min(have.saturating_mul(2).max(EXACT_FRAME_ALLOC))
                            .checked_next_power_of_two()
                            .unwrap_or(total);
                        let mut buf = BytesMut::with_capacity(cap);
                        buf.extend_from_slice(&self.recv);
                        self.recv = buf;
                    }
                }
            }
            _ => {
                if self.recv_rest.capacity() > 0 {
                    if have < self.recv.capacity()
                        && (have > 0 || self.last_frame_len >= LARGE_FRAME)
                    {
                        // Still waiting for (the length of) the frame after
                        // the large one: the room stays split. (Called on
                        // every pass of the connection's loop, reads or not.)
                        return &mut self.recv;
                    }
                    // The start is full, or a small frame ended inside it:
                    // the room is whole again (no copy: the start is full,
                    // or empty and replaced by the rest).
                    let rest = std::mem::take(&mut self.recv_rest);
                    self.recv.unsplit(rest);
                }
                if have == 0 && self.last_frame_len >= LARGE_FRAME {
                    // A buffer no frame shares any more is taken back from
                    // its start (nothing moves: it is empty), so a frame
                    // like the last lands in mapped pages and never moves.
                    if !self.recv.try_reclaim(self.last_frame_len) {
                        if self.recv.capacity() > FRAME_START_READ {
                            self.recv_rest = self.recv.split_off(FRAME_START_READ);
                        } else {
                            self.recv = BytesMut::with_capacity(FRAME_START_READ);
                        }
                    }
                } else if self.recv.capacity() - have < MIN_READ_RESERVE {
                    self.recv.reserve(MIN_READ_RESERVE);
                }
            }
        }
        &mut self.recv
    }

    /// Feeds received bytes (for callers that read into their own buffer).
    pub fn handle_received(&mut self, data: &[u8]) {
        self.recv.extend_from_slice(data);
    }

    /// The valid length announced by the frame being received, if known.
    fn announced_len(&self) -> Option<usize> {
        let prefix: [u8; 4] = self.recv.get(..4)?.try_into().ok()?;
        let len = i32::from_be_bytes(prefix);
        usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.max_frame_size)
    }

    fn fail(&mut self, e: ConnectionError) -> ConnectionError {
        self.error = Some(e.clone());
        e
    }

    /// Recognises a peer speaking another protocol from its first bytes.
    fn sniff(&self) -> Option<ConnectionError> {
        let b = &self.recv[..];
        match b {
            [0x15 | 0x16, 0x03, ..] => Some(ConnectionError::PeerIsTls),
            [b'H', b'T', b'T', b'P', ..] => Some(ConnectionError::PeerIsHttp),
            _ => None,
        }
    }

    /// The next complete frame (without its size prefix), if one has arrived.
    pub fn poll_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.frames_received == 0 {
            if let Some(e) = self.sniff() {
                return Err(self.fail(e));
            }
        }
        let Some(prefix) = self.recv.get(..4) else {
            return Ok(None);
        };
        let mut prefix = prefix;
        let len = prefix.get_i32();
        let Ok(len) = usize::try_from(len) else {
            return Err(self.fail(ConnectionError::NegativeFrameLength(len)));
        };
        if len > self.max_frame_size {
            return Err(self.fail(ConnectionError::FrameTooLarge {
                size: len,
                max: self.max_frame_size,
            }));
        }
        if self.recv.len() - 4 < len {
            return Ok(None);
        }
        self.recv.advance(4);
        self.frames_received += 1;
        self.last_frame_len = len + 4;
        Ok(Some(self.recv.split_to(len).freeze()))
    }

    /// The next response matched to its request. Responses whose waiter was
    /// [abandoned](Self::abandon) are consumed silently. An error closes the
    /// connection; afterwards this returns `None`.
    pub fn poll_response(&mut self) -> Option<Result<Response<T>, ConnectionError>> {
        loop {
            if self.error.is_some() {
                return None;
            }
            let frame = match self.poll_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let mut r = Reader::new(frame);
            let correlation_id = match r.i32() {
                Ok(id) => id,
                Err(e) => return Some(Err(self.fail(ConnectionError::BadResponseHeader(e)))),
            };
            let pos = match self.in_flight.front() {
                Some(f) if f.correlation_id == correlation_id => Some(0),
                _ => self
                    .in_flight
                    .iter()
                    .position(|f| f.correlation_id == correlation_id),
            };
            let Some(entry) = pos.and_then(|p| self.in_flight.remove(p)) else {
                return Some(Err(
                    self.fail(ConnectionError::UnknownCorrelationId(correlation_id))
                ));
            };
            if entry.response_header_version >= 1 {
                // Header tagged fields carry nothing this client uses.
                if let Err(e) = r.tagged_fields(|_, _| Ok(false)) {
                    // Back in the table, so `fail_all` hands the waiter back.
                    self.in_flight.push_front(entry);
                    return Some(Err(self.fail(ConnectionError::BadResponseHeader(e))));
                }
            }
            let Some(token) = entry.token else {
                continue;
            };
            return Some(Ok(Response {
                correlation_id,
                api_key: entry.api_key,
                version: entry.version,
                token,
                body: r.take_rest(),
            }));
        }
    }

    /// Forgets the waiter of an in-flight request; its response will be read
    /// and discarded so the stream stays in sync. Returns whether the id was
    /// in flight.
    pub fn abandon(&mut self, correlation_id: i32) -> bool {
        match self
            .in_flight
            .iter_mut()
            .find(|f| f.correlation_id == correlation_id)
        {
            Some(f) => {
                f.token = None;
                true
            }
            None => false,
        }
    }

    /// Requests sent (or queued) and not yet answered, abandoned ones included.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The error that closed the connection, if any.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// Whether an error closed the connection.
    pub fn is_closed(&self) -> bool {
        self.error.is_some()
    }

    /// Closes the connection with `cause` (if none was recorded yet) and
    /// hands back every waiting request, telling for each whether its frame
    /// was fully written. No-response requests are included unless
    /// [`poll_written`](Self::poll_written) already handed them out; call it
    /// first to tell their waiters of success.
    pub fn fail_all(&mut self, cause: ConnectionError) -> Vec<Failed<T>> {
        if self.error.is_none() {
            self.error = Some(cause);
        }
        self.transmit.clear();
        self.coalesce.clear();
        let written = self.written_bytes;
        let unanswered = self.unanswered.drain(..).map(|u| Failed {
            token: u.token,
            api_key: u.api_key,
            version: u.version,
            ambiguous: u.end_offset <= written,
        });
        self.in_flight
            .drain(..)
            .filter_map(|f| {
                f.token.map(|token| Failed {
                    token,
                    api_key: f.api_key,
                    version: f.version,
                    ambiguous: f.end_offset <= written,
                })
            })
            .chain(unanswered)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DecodeError, Message};

    /// A minimal request type so the core is tested without generated codecs.
    #[derive(Debug, Clone, PartialEq, Default)]
    struct Echo(i32);

    impl Message for Echo {
        const MIN_VERSION: i16 = 0;
        const MAX_VERSION: i16 = 3;
        const FLEXIBLE_FROM: Option<i16> = Some(2);

        fn encode(&self, buf: &mut BytesMut, _version: i16) -> Result<(), EncodeError> {
            buf.put_i32(self.0);
            Ok(())
        }

        fn decode(r: &mut Reader, _version: i16) -> Result<Self, DecodeError> {
            Ok(Echo(r.i32()?))
        }
    }

    impl Request for Echo {
        const API_KEY: ApiKey = ApiKey(1000);
        type Response = Echo;
    }

    /// A response frame: size, correlation id, optional empty tagged
    /// fields (header v1), body.
    fn response(correlation_id: i32, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let len = 4 + usize::from(flexible) + body.len();
        v.extend_from_slice(&(len as i32).to_be_bytes());
        v.extend_from_slice(&correlation_id.to_be_bytes());
        if flexible {
            v.push(0);
        }
        v.extend_from_slice(body);
        v
    }

    fn drain_transmit<T>(core: &mut ConnectionCore<T>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = core.poll_transmit() {
            out.extend_from_slice(&b);
        }
        core.on_written(out.len());
        out
    }

    #[test]
    fn encodes_headers_by_version() {
        let mut core = ConnectionCore::new(1 << 20);
        // v1: header v1 (client id), v2: header v2 (client id + tagged fields).
        core.queue_request(&Echo(7), 1, Some("me"), "a").unwrap();
        core.queue_request(&Echo(8), 2, None, "b").unwrap();
        let bytes = drain_transmit(&mut core);
        let first: Vec<u8> = [
            &16i32.to_be_bytes()[..],
            &1000i16.to_be_bytes(),
            &1i16.to_be_bytes(),
            &0i32.to_be_bytes(),
            &2i16.to_be_bytes(),
            b"me",
            &7i32.to_be_bytes(),
        ]
        .concat();
        let second: Vec<u8> = [
            &15i32.to_be_bytes()[..],
            &1000i16.to_be_bytes(),
            &2i16.to_be_bytes(),
            &1i32.to_be_bytes(),
            &(-1i16).to_be_bytes(),
            &[0],
            &8i32.to_be_bytes(),
        ]
        .concat();
        assert_eq!(bytes, [first, second].concat());
    }

    #[test]
    fn matches_pipelined_responses_out_of_order() {
        let mut core = ConnectionCore::new(1 << 20);
        let ids: Vec<i32> = (0..3)
            .map(|i| core.queue_request(&Echo(i), 1, None, i).unwrap())
            .collect();
        drain_transmit(&mut core);
        for &id in [ids[2], ids[0], ids[1]].iter() {
            core.handle_received(&response(id, false, &(id * 10).to_be_bytes()));
        }
        let mut got = Vec::new();
        while let Some(r) = core.poll_response() {
            let r = r.unwrap();
            let body = Echo::decode(&mut Reader::new(r.body), r.version).unwrap();
            got.push((r.token, body.0));
        }
        assert_eq!(got, vec![(2, 20), (0, 0), (1, 10)]);
        assert_eq!(core.in_flight(), 0);
    }

    #[test]
    fn frames_split_at_every_byte() {
        let mut stream = Vec::new();
        stream.extend(response(0, true, b"abc"));
        stream.extend(response(1, false, b""));
        stream.extend(response(2, true, &[9; 300]));
        for split in 0..=stream.len() {
            let mut core = ConnectionCore::new(1 << 20);
            for v in [3, 1, 3] {
                core.queue_request(&Echo(0), v, None, ()).unwrap();
            }
            let mut bodies = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                // Byte by byte for the first part, all at once for the rest.
                if chunk.len() == split {
                    for b in chunk {
                        core.handle_received(std::slice::from_ref(b));
                        while let Some(r) = core.poll_response() {
                            bodies.push(r.unwrap().body);
                        }
                    }
                } else {
                    core.handle_received(chunk);
                    while let Some(r) = core.poll_response() {
                        bodies.push(r.unwrap().body);
                    }
                }
            }
            assert_eq!(bodies.len(), 3, "split at {split}");
            assert_eq!(&bodies[0][..], b"abc");
            assert!(bodies[1].is_empty());
            assert_eq!(&bodies[2][..], &[9; 300][..]);
        }
    }

    #[test]
    fn oversize_and_negative_frames_close_the_connection() {
        let mut core = ConnectionCore::<()>::new(1000);
        core.handle_received(&1001i32.to_be_bytes());
        assert!(matches!(
            core.poll_response(),
            Some(Err(ConnectionError::FrameTooLarge {
                size: 1001,
                max: 1000
            }))
        ));
        assert!(core.is_closed());
        assert!(core.poll_response().is_none());
        assert!(core.queue_request(&Echo(1), 1, None, ()).is_err());

        let mut core = ConnectionCore::<()>::new(1000);
        core.handle_received(&(-5i32).to_be_bytes());
        assert!(matches!(
            core.poll_frame(),
            Err(ConnectionError::NegativeFrameLength(-5))
        ));
    }

    #[test]
    fn hostile_length_does_not_drive_allocation() {
        let mut core = ConnectionCore::<()>::new(100 << 20);
        core.handle_received(&(100i32 << 20).to_be_bytes());
        assert!(core.poll_frame().unwrap().is_none());
        assert!(core.recv_buf().capacity() <= EXACT_FRAME_ALLOC);
        // Past the exact allocation the buffer grows with what arrives.
        core.recv_buf().resize(EXACT_FRAME_ALLOC, 0);
        assert!(core.poll_frame().unwrap().is_none());
        assert!(core.recv_buf().capacity() <= 2 * EXACT_FRAME_ALLOC);
    }

    /// Reads into the spare capacity only, as `read_buf` does.
    fn read_into<T>(core: &mut ConnectionCore<T>, data: &[u8]) -> usize {
        let buf = core.recv_buf();
        let n = data.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&data[..n]);
        n
    }

    #[test]
    fn a_large_frame_is_received_into_one_buffer_of_its_size() {
        let mut core = ConnectionCore::<()>::new(100 << 20);
        let body = vec![7u8; 3 << 20];
        let mut stream = (body.len() as i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&5i32.to_be_bytes()); // the next frame's start
        let mut at = read_into(&mut core, &stream[..10]);
        assert!(core.poll_frame().unwrap().is_none());
        // Room for the whole frame at once (rounded up to a power of two);
        // no regrowth afterwards.
        let cap = core.recv_buf().capacity();
        assert!(
            cap >= stream.len() - 4 && cap <= 2 * (stream.len() - 4),
            "{cap}"
        );
        let start = core.recv_buf().as_ptr();
        while at < stream.len() - 4 {
            assert_eq!(core.recv_buf().as_ptr(), start, "no regrowth");
            let n = read_into(&mut core, &stream[at..(at + 100_000).min(stream.len())]);
            assert!(n > 0);
            at += n;
        }
        assert!(at >= stream.len() - 4);
        let frame = core.poll_frame().unwrap().unwrap();
        assert_eq!(frame.len(), body.len());
        assert_eq!(frame.as_ptr(), start.wrapping_add(4));
        assert!(core.poll_frame().unwrap().is_none());
        // The next read has room for small frames again.
        assert!(core.recv_buf().capacity() >= MIN_READ_RESERVE);
    }

    /// Receives all of `stream`, one frame, reading as `read_buf` does.
    fn receive_frame(core: &mut ConnectionCore<()>, stream: &[u8]) -> Bytes {
        let mut at = 0;
        while at < stream.len() {
            let n = read_into(core, &stream[at..]);
            assert!(n > 0);
            at += n;
        }
        core.poll_frame().unwrap().expect("a whole frame")
    }

    fn frame_of(len: usize, fill: u8) -> Vec<u8> {
        let mut stream = (len as i32).to_be_bytes().to_vec();
        stream.resize(4 + len, fill);
        stream
    }

    #[test]
    fn after_a_large_frame_the_next_moves_little_or_nothing() {
        let mut core = ConnectionCore::<()>::new(100 << 20);
        let first = receive_frame(&mut core, &frame_of(1 << 20, 1));
        // The first frame is still held and the room after it is too small
        // for the next: only the next one's start is read there, and that is
        // all that moves once its length is known.
        let second_stream = frame_of(1 << 20, 2);
        let n = read_into(&mut core, &second_stream);
        assert_eq!(n, FRAME_START_READ);
        let at = core.recv_buf().as_ptr();
        assert!(core.recv_buf().capacity() > 1 << 20);
        let second = receive_frame(&mut core, &second_stream[n..]);
        assert_eq!(second.as_ptr(), at.wrapping_add(4), "moved once only");
        assert!(second.iter().all(|&b| b == 2) && second.len() == 1 << 20);
        // Once no frame shares its buffer, the next frame is read into it
        // from its start and never moves.
        let second_at = second.as_ptr().wrapping_sub(4);
        drop((first, second));
        assert_eq!(core.recv_buf().as_ptr(), second_at);
        let third = receive_frame(&mut core, &frame_of(1 << 20, 3));
        assert_eq!(third.as_ptr(), second_at.wrapping_add(4));
        assert!(third.iter().all(|&b| b == 3) && third.len() == 1 << 20);
        // After a small frame there is room for several small ones again.
        let small = receive_frame(&mut core, &frame_of(100, 4));
        assert_eq!(&small[..], &[4u8; 100][..]);
        assert!(core.recv_buf().capacity() >= MIN_READ_RESERVE);
    }

    #[test]
    fn a_frame_that_fits_after_a_large_one_is_read_in_place() {
        let mut core = ConnectionCore::<()>::new(100 << 20);
        let first = receive_frame(&mut core, &frame_of(1 << 20, 1));
        let end_of_first = first.as_ptr().wrapping_add(first.len());
        // Held, so its buffer cannot be taken back; the next frames fit in
        // the room after it. The connection's loop asks for the buffer on
        // every pass, read or not: that must not use up the room.
        for _ in 0..1000 {
            core.recv_buf();
        }
        // A small frame, then the start of a large one, up to two bytes of
        // its length prefix; then the rest, in pieces (the broker writes a
        // response's header apart from its records).
        let mut stream = frame_of(100, 2);
        stream.extend_from_slice(&frame_of(512 << 10, 3));
        assert_eq!(read_into(&mut core, &stream[..106]), 106);
        let small = core.poll_frame().unwrap().expect("the small frame");
        assert_eq!(&small[..], &[2u8; 100][..]);
        assert!(core.poll_frame().unwrap().is_none());
        for _ in 0..1000 {
            core.recv_buf();
        }
        assert_eq!(read_into(&mut core, &stream[106..200]), 94);
        let large = receive_frame(&mut core, &stream[200..]);
        assert_eq!(large.as_ptr(), end_of_first.wrapping_add(104 + 4), "moved");
        assert!(large.iter().all(|&b| b == 3) && large.len() == 512 << 10);
        assert!(first.iter().all(|&b| b == 1));
    }

    #[test]
    fn detects_tls_and_http_peers() {
        for (bytes, tls) in [
            (&[0x15u8, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46][..], true),
            (&[0x16, 0x03][..], true),
            (b"HTTP/1.1 400 Bad Request\r\n", false),
        ] {
            let mut core = ConnectionCore::<()>::new(100 << 20);
            core.queue_request(&Echo(1), 1, None, ()).unwrap();
            core.handle_received(bytes);
            let err = core.poll_response().unwrap().unwrap_err();
            if tls {
                assert!(matches!(err, ConnectionError::PeerIsTls), "{err}");
                assert!(err.to_string().contains("TLS"));
            } else {
                assert!(matches!(err, ConnectionError::PeerIsHttp), "{err}");
            }
            assert!(!err.is_retriable());
        }
    }

    #[test]
    fn unknown_correlation_id_closes_and_fails_everything() {
        let mut core = ConnectionCore::new(1 << 20);
        core.queue_request(&Echo(1), 1, None, "a").unwrap();
        core.queue_request(&Echo(2), 1, None, "b").unwrap();
        drain_transmit(&mut core);
        core.handle_received(&response(42, false, b""));
        assert!(matches!(
            core.poll_response(),
            Some(Err(ConnectionError::UnknownCorrelationId(42)))
        ));
        let failed = core.fail_all(ConnectionError::UnknownCorrelationId(42));
        let tokens: Vec<_> = failed.iter().map(|f| (f.token, f.ambiguous)).collect();
        assert_eq!(tokens, vec![("a", true), ("b", true)]);
    }

    #[test]
    fn bad_response_header_keeps_the_waiter_for_fail_all() {
        // Found by the `connection_core` fuzz target: the entry was removed
        // before its header failed to parse, so `fail_all` lost its waiter.
        let mut core = ConnectionCore::new(1 << 20);
        let a = core.queue_request(&Echo(1), 3, None, "a").unwrap();
        // Header v1 announcing 2 tagged fields, then nothing.
        let mut frame = Vec::new();
        frame.extend_from_slice(&6i32.to_be_bytes());
        frame.extend_from_slice(&a.to_be_bytes());
        frame.extend_from_slice(&[2, 0]);
        core.handle_received(&frame);
        assert!(matches!(
            core.poll_response(),
            Some(Err(ConnectionError::BadResponseHeader(_)))
        ));
        let failed: Vec<_> = core
            .fail_all(ConnectionError::Closed)
            .into_iter()
            .map(|f| f.token)
            .collect();
        assert_eq!(failed, vec!["a"]);
    }

    #[test]
    fn abandoned_request_response_is_discarded_and_stream_stays_in_sync() {
        let mut core = ConnectionCore::new(1 << 20);
        let a = core.queue_request(&Echo(1), 3, None, "a").unwrap();
        let b = core.queue_request(&Echo(2), 3, None, "b").unwrap();
        assert!(core.abandon(a));
        core.handle_received(&response(a, true, b"late"));
        core.handle_received(&response(b, true, b"ok"));
        let r = core.poll_response().unwrap().unwrap();
        assert_eq!((r.token, &r.body[..]), ("b", &b"ok"[..]));
        assert!(core.poll_response().is_none());
        assert_eq!(core.in_flight(), 0);
        assert!(!core.is_closed());
    }

    #[test]
    fn no_response_request_takes_an_id_but_no_in_flight_entry() {
        let mut core = ConnectionCore::new(1 << 20);
        let a = core.queue_request(&Echo(1), 3, None, "a").unwrap();
        let b = core
            .queue_no_response(EncodedRequest::new(&Echo(2), 3, None).unwrap(), "b")
            .unwrap();
        let c = core.queue_request(&Echo(3), 3, None, "c").unwrap();
        // The broker sees distinct, consecutive ids; only a and c await answers.
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(core.in_flight(), 2);
        assert!(core.poll_written().is_none(), "nothing written yet");
        let bytes = drain_transmit(&mut core);
        // The frame went out with its own correlation id patched in.
        // Header v2 frames of 19 bytes: size, key, version, id, client id, tags, body.
        let second = &bytes[19..38];
        assert_eq!(&second[8..12], &1i32.to_be_bytes());
        assert_eq!(core.poll_written(), Some("b"));
        assert!(core.poll_written().is_none());
        // The broker answers a and c only; both still match their waiters.
        core.handle_received(&response(a, true, b"A"));
        core.handle_received(&response(c, true, b"C"));
        let got: Vec<_> = std::iter::from_fn(|| core.poll_response())
            .map(|r| r.map(|r| (r.token, r.body)).unwrap())
            .collect();
        assert_eq!(got, vec![("a", Bytes::from("A")), ("c", Bytes::from("C"))]);
        assert_eq!(core.in_flight(), 0);
        assert!(!core.is_closed());
    }

    #[test]
    fn no_response_request_is_done_only_when_fully_written() {
        let mut core = ConnectionCore::new(1 << 20);
        core.queue_no_response(EncodedRequest::new(&Echo(1), 1, None).unwrap(), 1)
            .unwrap();
        core.queue_no_response(EncodedRequest::new(&Echo(2), 1, None).unwrap(), 2)
            .unwrap();
        let chunk = core.poll_transmit().unwrap();
        core.on_written(17); // one byte short of the first frame
        assert!(core.poll_written().is_none());
        core.on_written(1);
        assert_eq!(core.poll_written(), Some(1));
        core.on_written(chunk.len() - 18 - 1);
        assert!(core.poll_written().is_none());
        // Not fully written when the connection broke: safe to send again.
        let failed = core.fail_all(ConnectionError::PeerIsHttp);
        let got: Vec<_> = failed
            .iter()
            .map(|f| (f.token, f.api_key, f.ambiguous))
            .collect();
        assert_eq!(got, vec![(2, ApiKey(1000), false)]);
    }

    #[test]
    fn fail_all_tells_which_requests_were_fully_written() {
        let mut core = ConnectionCore::new(1 << 20);
        core.queue_request(&Echo(1), 1, None, 1).unwrap();
        core.queue_request(&Echo(2), 1, None, 2).unwrap();
        let chunk = core.poll_transmit().unwrap();
        // The first frame and half of the second reached the socket.
        core.on_written(chunk.len() - 5);
        let failed = core.fail_all(ConnectionError::PeerIsHttp);
        let got: Vec<_> = failed.iter().map(|f| (f.token, f.ambiguous)).collect();
        assert_eq!(got, vec![(1, true), (2, false)]);
    }

    #[test]
    fn small_frames_coalesce_and_large_ones_keep_order() {
        let mut core = ConnectionCore::new(1 << 20);
        #[derive(Debug, Clone, PartialEq, Default)]
        struct Big;
        impl Message for Big {
            const MIN_VERSION: i16 = 0;
            const MAX_VERSION: i16 = 0;
            const FLEXIBLE_FROM: Option<i16> = None;
            fn encode(&self, buf: &mut BytesMut, _: i16) -> Result<(), EncodeError> {
                buf.put_slice(&[7; COALESCE_MAX]);
                Ok(())
            }
            fn decode(_: &mut Reader, _: i16) -> Result<Self, DecodeError> {
                Ok(Big)
            }
        }
        impl Request for Big {
            const API_KEY: ApiKey = ApiKey(1001);
            type Response = Big;
        }
        core.queue_request(&Echo(1), 1, None, ()).unwrap();
        core.queue_request(&Echo(2), 1, None, ()).unwrap();
        core.queue_request(&Big, 0, None, ()).unwrap();
        core.queue_request(&Echo(3), 1, None, ()).unwrap();
        let chunks: Vec<Bytes> = std::iter::from_fn(|| core.poll_transmit()).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2 * 18, COALESCE_MAX + 14, 18]);
        assert!(!core.has_transmit());
    }

    #[test]
    fn attached_strings_go_out_uncopied_and_in_order() {
        let mut core = ConnectionCore::new(1 << 20);
        let big = Bytes::from(vec![9u8; COALESCE_MAX + 1]);
        let small = Bytes::from(vec![5u8; ATTACH_MIN - 1]);
        let req = EncodedRequest::with_body::<Echo>(1, None, |w| {
            w.buf().put_i32(1);
            w.attach(big.clone());
            w.buf().put_i32(2);
            w.attach(small.clone());
            w.attach(big.clone());
            Ok(())
        })
        .unwrap();
        let body_len = 4 + big.len() + 4 + small.len() + big.len();
        // Size, api key, version, correlation id, null client id.
        assert_eq!(req.len(), 4 + 10 + body_len);
        core.queue(req, ()).unwrap();
        core.queue_request(&Echo(3), 1, None, ()).unwrap();
        let chunks: Vec<Bytes> = std::iter::from_fn(|| core.poll_transmit()).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        // Header + 1; big; 2 + small (copied); big; the next request.
        assert_eq!(sizes, vec![18, big.len(), 4 + small.len(), big.len(), 18]);
        // Handed out as they were given: no copy.
        assert_eq!(chunks[1].as_ptr(), big.as_ptr());
        assert_eq!(chunks[3].as_ptr(), big.as_ptr());
        let stream = chunks.concat();
        assert_eq!(stream[..4], ((10 + body_len) as i32).to_be_bytes());
        assert_eq!(stream[14..18], 1i32.to_be_bytes());
        assert_eq!(stream[18 + big.len()..22 + big.len()], 2i32.to_be_bytes());
    }

    proptest::proptest! {
        /// Any answer order and any chunking of the byte stream yields each
        /// response exactly once, to its own waiter, with its own body.
        #[test]
        fn any_order_any_chunking(
            n in 1usize..20,
            order_seed in proptest::collection::vec(0usize..1000, 20),
            cuts in proptest::collection::vec(1usize..40, 1..50),
        ) {
            let mut core = ConnectionCore::new(1 << 20);
            let ids: Vec<i32> = (0..n)
                .map(|i| core.queue_request(&Echo(i as i32), 3, None, i).unwrap())
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            for (i, &r) in order_seed.iter().take(n).enumerate() {
                order.swap(i, r % n);
            }
            let mut stream = Vec::new();
            for &i in &order {
                stream.extend(response(ids[i], true, &(i as i32 * 7).to_be_bytes()));
            }
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let take = (*cut.next().unwrap()).min(rest.len());
                core.handle_received(&rest[..take]);
                rest = &rest[take..];
                while let Some(r) = core.poll_response() {
                    let r = r.unwrap();
                    let body = Echo::decode(&mut Reader::new(r.body), r.version).unwrap();
                    got.push((r.token, body.0));
                }
            }
            let want: Vec<(usize, i32)> = order.iter().map(|&i| (i, i as i32 * 7)).collect();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(core.in_flight(), 0);
        }
    }
}
