//! Messages as the broker keeps them.
//!
//! A [`Message`] is a message being published or routed: its parts are
//! shared `Bytes`, slices of the frames it arrived in. Once routed, each
//! queue holds a [`QueuedMsg`]: 48 bytes, whose exchange, routing key, content
//! header and small body are packed into one [`Slice`] of an [`Arena`] chunk
//! (shared by every queue the message went to). Packing copies a few dozen
//! bytes and lets the connection's input buffer be reused instead of kept
//! alive by the messages sliced out of it. Bodies of 2 KiB and more are not
//! copied: they stay a shared `Bytes` of their own.
//!
//! A message paged out to the store keeps a stub in memory: its store
//! reference, publish time and TTL, exchange and routing key. Stubs are
//! packed apart from content (see [`Arena`]), so that a long queue of stubs
//! does not keep the chunks alive that the content was packed in.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{ContentHeader, FieldTable, FieldValue, Outbox};
use crate::store::{MsgMeta, StoreRef};
use crate::sys::arena::{Account, Cursor, Slice, Writer};

/// A published message, as it is routed.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// The content header payload exactly as the publisher sent it.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
    /// delivery_mode = 2.
    pub persistent: bool,
    /// `priority` property (0 when absent).
    pub priority: u8,
    /// Per-message TTL from the `expiration` property, in milliseconds.
    pub ttl: Option<u64>,
    /// Wall-clock publish time, milliseconds since the epoch (TTL base).
    pub timestamp: u64,
}

impl Message {
    /// A message with its content in memory.
    pub fn new(
        exchange: Bytes,
        routing_key: Bytes,
        header: Bytes,
        body: Bytes,
        persistent: bool,
    ) -> Message {
        Message {
            exchange,
            routing_key,
            header,
            body,
            persistent,
            priority: 0,
            ttl: None,
            timestamp: 0,
        }
    }

    /// The store's view of it.
    pub fn meta(&self) -> MsgMeta<'_> {
        MsgMeta {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            header: &self.header,
            body: &self.body,
            timestamp: self.timestamp,
            ttl: self.ttl,
            priority: self.priority,
        }
    }
}

/// Bodies shorter than this are packed with the message's other parts;
/// longer ones stay a `Bytes` of their own (sent without a copy).
pub const INLINE_BODY: usize = crate::codec::outbox::COPY_THRESHOLD;

/// Size of the chunks messages and stubs are packed into. One size for all:
/// the allocator reuses a freed chunk for any other.
const CHUNK: usize = 32 * 1024;

/// Memory a large body (one not packed, see [`INLINE_BODY`]) takes beyond
/// its own bytes, counted in [`QueuedMsg::resident`]: its box (48 bytes
/// with the allocator's header), and the frames around it in the input
/// buffer or the store record it is a slice of (method and content header,
/// frame headers: about 100 bytes).
pub const BIG_OVERHEAD: u64 = 160;

/// Where queued messages are packed: chunks carved into slices, one per
/// message, each chunk freed when its last slice goes. Three writers keep
/// apart what lives for different lengths of time: messages as published
/// (queued, maybe for long), content read back from the store (for
/// basic.get, dead-lettering, the management API: let go of soon; a
/// consumer's deliveries are written from the store's buffer and stay paged
/// out) and stubs of paged-out messages (queued, maybe for long, while the
/// content published next to them comes and goes). The chunks are counted
/// as they are allocated and freed: [`Arena::content_bytes`] (the first
/// two) and [`Arena::stub_bytes`].
#[derive(Debug)]
pub struct Arena {
    queued: Writer,
    loaded: Writer,
    stubs: Writer,
    content: Arc<Account>,
    stub_account: Arc<Account>,
}

impl Default for Arena {
    fn default() -> Arena {
        let content = Arc::new(Account::default());
        let stub_account = Arc::new(Account::default());
        Arena {
            queued: Writer::new(CHUNK, content.clone()),
            loaded: Writer::new(CHUNK, content.clone()),
            stubs: Writer::new(CHUNK, stub_account.clone()),
            content,
            stub_account,
        }
    }
}

impl Arena {
    /// Bytes of the chunks that hold message content (headers and small
    /// bodies, with the exchange and routing key that go with them).
    pub fn content_bytes(&self) -> u64 {
        self.content.bytes()
    }

    /// Bytes of the chunks that hold stubs of paged-out messages.
    pub fn stub_bytes(&self) -> u64 {
        self.stub_account.bytes()
    }

    /// Bytes of all chunks.
    pub fn bytes(&self) -> u64 {
        self.content_bytes() + self.stub_bytes()
    }

    #[cfg(any(test, feature = "testing"))]
    /// The writers' current chunks (address, size), which no message may
    /// hold (see `Core::check_invariants`).
    pub fn current_chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        [&self.queued, &self.loaded, &self.stubs]
            .into_iter()
            .filter_map(|w| w.current())
    }
}

// First byte of a packed slice: which optional sections follow it.
/// A store reference follows.
const B_REF: u8 = 1;
/// The publish time and TTL follow.
const B_TIMES: u8 = 2;
const REF_LEN: usize = 21;
const TIMES_LEN: usize = 16;

// Per-copy flags.
const F_PERSISTENT: u8 = 1;
/// The store reference applies to this copy (see [`QueuedMsg::stored`]).
const F_STORED: u8 = 2;
/// Content (header and body) only on disk.
const F_PAGED: u8 = 4;
const F_REDELIVERED: u8 = 8;
/// A stream's delivery: holds no message (see [`QueuedMsg::marker`]).
const F_MARKER: u8 = 16;

/// A message in a queue (or delivered and not yet acknowledged).
///
/// `data` holds, in order: a byte of section flags, the store reference
/// (if any), publish time and TTL (if stored or with a TTL), exchange and
/// routing key (short strings), then, unless paged out, the content header
/// (u32 length + bytes) and a small body. A large body is `big`.
#[derive(Debug, Clone)]
pub struct QueuedMsg {
    data: Slice,
    big: Option<Box<Bytes>>,
    /// Position in the queue (monotonic per queue); requeued messages go back
    /// to this position.
    pub seq: u64,
    /// Wall-clock expiry, ms since the epoch; `u64::MAX` when none.
    expires: u64,
    /// Body size (kept while the body is paged out).
    size: u32,
    flags: u8,
    /// The message's `priority` property.
    priority: u8,
    /// Effective priority in this queue (0 unless a priority queue).
    pub prio: u8,
    /// Times it came back to its queue unacknowledged (a quorum queue's
    /// delivery count; saturates at 255).
    returns: u8,
}

/// A raw content header with `x-delivery-count` = `n` in its headers table
/// (RabbitMQ's quorum queues add it to every delivery); unchanged if it
/// does not decode.
fn with_delivery_count(header: &[u8], n: u8) -> Bytes {
    let raw = Bytes::copy_from_slice(header);
    let Ok(mut h) = ContentHeader::decode(&raw) else {
        return raw;
    };
    h.properties
        .headers
        .get_or_insert_with(FieldTable::new)
        .insert("x-delivery-count", FieldValue::I64(i64::from(n)));
    let mut out = bytes::BytesMut::with_capacity(raw.len() + 32);
    h.encode(&mut out);
    out.freeze()
}

/// Borrowed parts of a queued message.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// Exchange.
    pub exchange: &'a [u8],
    /// Routing key.
    pub routing_key: &'a [u8],
    /// Raw content header payload (empty when paged out).
    pub header: &'a [u8],
    /// The body when packed inline (empty when large or paged out).
    pub inline_body: &'a [u8],
}

/// Offsets of the sections of a packed slice.
struct Layout {
    refs: usize,
    times: Option<usize>,
    exchange: (usize, usize),
    routing_key: (usize, usize),
    header: (usize, usize),
    body: usize,
}

fn short_at(d: &[u8], at: usize) -> ((usize, usize), usize) {
    let n = d.get(at).copied().unwrap_or(0) as usize;
    ((at + 1, at + 1 + n), at + 1 + n)
}

fn put_short(out: &mut Cursor<'_>, s: &[u8]) {
    let s = s.get(..255).unwrap_or(s);
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

fn put_ref(out: &mut Cursor<'_>, r: &StoreRef) {
    out.put_u64(r.msg_id);
    out.put_u32(r.seg);
    out.put_u32(r.offset);
    out.put_u32(r.len);
    out.put_u8(r.durable as u8);
}

fn be(d: &[u8], at: usize, n: usize) -> u64 {
    d.get(at..at + n)
        .map_or(0, |b| b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

/// The sections every packed slice starts with: section flags, the store
/// reference and publish time / TTL when present, exchange and routing key.
struct Prefix<'a> {
    stored: Option<&'a StoreRef>,
    /// Publish time and TTL as stored (`u64::MAX`: no TTL).
    times: Option<(u64, u64)>,
    exchange: &'a [u8],
    routing_key: &'a [u8],
}

impl Prefix<'_> {
    fn len(&self) -> usize {
        let short = |s: &[u8]| 1 + s.len().min(255);
        1 + self.stored.map_or(0, |_| REF_LEN)
            + self.times.map_or(0, |_| TIMES_LEN)
            + short(self.exchange)
            + short(self.routing_key)
    }

    /// Write the prefix into `out`.
    fn put(&self, out: &mut Cursor<'_>) {
        let b = |yes: bool, bit: u8| if yes { bit } else { 0 };
        out.put_u8(b(self.stored.is_some(), B_REF) | b(self.times.is_some(), B_TIMES));
        if let Some(r) = self.stored {
            put_ref(out, r);
        }
        if let Some((ts, ttl)) = self.times {
            out.put_u64(ts);
            out.put_u64(ttl);
        }
        put_short(out, self.exchange);
        put_short(out, self.routing_key);
    }

    /// A stub: the prefix alone, in the stub chunks.
    fn stub(&self, arena: &mut Arena) -> Slice {
        arena.stubs.write(self.len(), |out| self.put(out))
    }
}

impl QueuedMsg {
    /// The prefix of a routed message's slice; `stored` is where the store
    /// keeps it as a persistent message.
    fn prefix<'a>(m: &'a Message, stored: Option<&'a StoreRef>) -> Prefix<'a> {
        Prefix {
            stored,
            times: (stored.is_some() || m.ttl.is_some())
                .then(|| (m.timestamp, m.ttl.unwrap_or(u64::MAX))),
            exchange: &m.exchange,
            routing_key: &m.routing_key,
        }
    }

    fn new(data: Slice, big: Option<Box<Bytes>>, m: &Message, flags: u8) -> QueuedMsg {
        QueuedMsg {
            data,
            big,
            seq: 0,
            expires: u64::MAX,
            size: m.body.len().min(u32::MAX as usize) as u32,
            flags: flags | if m.persistent { F_PERSISTENT } else { 0 },
            priority: m.priority,
            prio: 0,
            returns: 0,
        }
    }

    /// A delivery that holds no message: a stream's (its log keeps the
    /// message; an acknowledgement only gives credit back). `seq` is the
    /// delivered offset.
    pub fn marker(offset: u64) -> QueuedMsg {
        QueuedMsg {
            data: Slice::empty(),
            big: None,
            seq: offset,
            expires: u64::MAX,
            size: 0,
            flags: F_MARKER,
            priority: 0,
            prio: 0,
            returns: 0,
        }
    }

    /// A stream's delivery, holding no message.
    pub fn is_marker(&self) -> bool {
        self.flags & F_MARKER != 0
    }

    /// Pack a routed message; `stored` is where the store keeps it (for
    /// copies in durable queues, see [`QueuedMsg::set_stored`]).
    pub fn pack(arena: &mut Arena, m: &Message, stored: Option<StoreRef>) -> QueuedMsg {
        let inline = m.body.len() < INLINE_BODY;
        let prefix = Self::prefix(m, stored.as_ref());
        let body = if inline { &m.body[..] } else { &[] };
        let len = prefix.len() + 4 + m.header.len() + body.len();
        let data = arena.queued.write(len, |out| {
            prefix.put(out);
            out.put_u32(m.header.len() as u32);
            out.put_slice(&m.header);
            out.put_slice(body);
        });
        let big = (!inline).then(|| Box::new(m.body.clone()));
        QueuedMsg::new(data, big, m, 0)
    }

    /// Pack a routed message straight out to the store: what
    /// [`QueuedMsg::pack`] and then [`QueuedMsg::page_out`] to `at` make,
    /// without packing the content first. `stored` as for `pack`.
    pub fn pack_paged(
        arena: &mut Arena,
        m: &Message,
        stored: Option<StoreRef>,
        at: StoreRef,
    ) -> QueuedMsg {
        let prefix = Prefix {
            stored: Some(&at),
            ..Self::prefix(m, stored.as_ref())
        };
        QueuedMsg::new(prefix.stub(arena), None, m, F_PAGED | F_STORED)
    }

    /// A message found by store recovery: paged out, stored.
    pub fn recovered(arena: &mut Arena, r: &crate::store::RecoveredMsg) -> QueuedMsg {
        let prefix = Prefix {
            stored: Some(&r.at),
            times: Some((r.timestamp, r.ttl.unwrap_or(u64::MAX))),
            exchange: &r.exchange,
            routing_key: &r.routing_key,
        };
        QueuedMsg {
            data: prefix.stub(arena),
            big: None,
            seq: 0,
            expires: u64::MAX,
            size: r.size.min(u64::from(u32::MAX)) as u32,
            flags: F_PERSISTENT | F_STORED | F_PAGED | if r.delivered { F_REDELIVERED } else { 0 },
            priority: r.priority,
            prio: 0,
            returns: 0,
        }
    }

    fn layout(&self) -> Layout {
        let d = &self.data[..];
        let b = d.first().copied().unwrap_or(0);
        let mut at = 1;
        let refs = at;
        if b & B_REF != 0 {
            at += REF_LEN;
        }
        let times = (b & B_TIMES != 0).then_some(at);
        if times.is_some() {
            at += TIMES_LEN;
        }
        let (exchange, at) = short_at(d, at);
        let (routing_key, at) = short_at(d, at);
        let (header, body) = if self.is_paged() {
            ((at, at), at)
        } else {
            let n = be(d, at, 4) as usize;
            ((at + 4, at + 4 + n), at + 4 + n)
        };
        Layout {
            refs,
            times,
            exchange,
            routing_key,
            header,
            body,
        }
    }

    /// Exchange, routing key, header and inline body.
    pub fn parts(&self) -> Parts<'_> {
        let l = self.layout();
        let d = &self.data[..];
        let get = |(a, b): (usize, usize)| d.get(a..b).unwrap_or_default();
        Parts {
            exchange: get(l.exchange),
            routing_key: get(l.routing_key),
            header: get(l.header),
            inline_body: if self.big.is_some() {
                &[]
            } else {
                d.get(l.body..).unwrap_or_default()
            },
        }
    }

    /// A copy of part of the slice (its parts are not `Bytes` of their own).
    fn copy(&self, (a, b): (usize, usize)) -> Bytes {
        self.data
            .get(a..b)
            .map_or_else(Bytes::new, Bytes::copy_from_slice)
    }

    /// Exchange it was published to (a copy).
    pub fn exchange(&self) -> Bytes {
        self.copy(self.layout().exchange)
    }

    /// Routing key it was published with (a copy).
    pub fn routing_key(&self) -> Bytes {
        self.copy(self.layout().routing_key)
    }

    /// Raw content header payload (a copy; empty when paged out).
    pub fn header(&self) -> Bytes {
        self.copy(self.layout().header)
    }

    /// The body (empty when paged out; a copy unless large).
    pub fn body(&self) -> Bytes {
        match &self.big {
            Some(b) => (**b).clone(),
            None if self.is_paged() => Bytes::new(),
            None => self.copy((self.layout().body, self.data.len())),
        }
    }

    /// The body when it is not packed inline (large bodies).
    pub fn big_body(&self) -> Option<&Bytes> {
        self.big.as_deref()
    }

    /// Body size.
    pub fn size(&self) -> u64 {
        u64::from(self.size)
    }

    /// delivery_mode = 2.
    pub fn persistent(&self) -> bool {
        self.flags & F_PERSISTENT != 0
    }

    /// The `priority` property.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Delivered before (sets basic.deliver's redelivered flag).
    pub fn redelivered(&self) -> bool {
        self.flags & F_REDELIVERED != 0
    }

    /// Mark as delivered before.
    pub fn set_redelivered(&mut self, yes: bool) {
        if yes {
            self.flags |= F_REDELIVERED;
        } else {
            self.flags &= !F_REDELIVERED;
        }
    }

    /// Times it came back to its queue unacknowledged.
    pub fn returns(&self) -> u8 {
        self.returns
    }

    /// It came back to its queue unacknowledged once more.
    pub fn returned(&mut self) {
        self.returns = self.returns.saturating_add(1);
    }

    /// Wall-clock expiry in ms since the epoch, if a TTL applies.
    pub fn expires_at(&self) -> Option<u64> {
        (self.expires != u64::MAX).then_some(self.expires)
    }

    /// Set the expiry (None: never).
    pub fn set_expires_at(&mut self, at: Option<u64>) {
        self.expires = at.map_or(u64::MAX, |t| t.min(u64::MAX - 1));
    }

    /// Publish time and per-message TTL, when kept (stored messages and
    /// messages with a TTL); `(0, None)` otherwise.
    pub fn times(&self) -> (u64, Option<u64>) {
        match self.raw_times() {
            Some((ts, ttl)) => (ts, (ttl != u64::MAX).then_some(ttl)),
            None => (0, None),
        }
    }

    /// Publish time and TTL as packed (`u64::MAX`: no TTL), if packed.
    fn raw_times(&self) -> Option<(u64, u64)> {
        let at = self.layout().times?;
        Some((be(&self.data, at, 8), be(&self.data, at + 8, 8)))
    }

    /// Where the store holds this copy, if it does.
    pub fn stored(&self) -> Option<StoreRef> {
        if self.flags & F_STORED == 0 || self.data.first().is_none_or(|b| b & B_REF == 0) {
            return None;
        }
        let d = &self.data[..];
        let at = self.layout().refs;
        Some(StoreRef {
            msg_id: be(d, at, 8),
            seg: be(d, at + 8, 4) as u32,
            offset: be(d, at + 12, 4) as u32,
            len: be(d, at + 16, 4) as u32,
            durable: d.get(at + 20).is_some_and(|b| *b != 0),
        })
    }

    /// Whether the packed store reference applies to this copy (it does for
    /// copies in durable queues of a stored persistent message).
    pub fn set_stored(&mut self, yes: bool) {
        if yes {
            self.flags |= F_STORED;
        } else {
            self.flags &= !F_STORED;
        }
    }

    /// True when header and body live only on disk.
    pub fn is_paged(&self) -> bool {
        self.flags & F_PAGED != 0
    }

    /// Bytes this copy holds in memory outside the arena: a large body
    /// (with [`BIG_OVERHEAD`]), unless paged out. (What the arena holds is
    /// counted by chunk, see [`Arena`].)
    pub fn resident(&self) -> u64 {
        match &self.big {
            Some(b) if !self.is_paged() => b.len() as u64 + BIG_OVERHEAD,
            _ => 0,
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// The arena chunk its slice is in (address, size), for checking the
    /// arena's account.
    pub fn chunk(&self) -> Option<(usize, u64)> {
        self.data.chunk()
    }

    /// The store's view of it (content empty when paged out).
    pub fn meta(&self) -> MsgMeta<'_> {
        let p = self.parts();
        let (timestamp, ttl) = self.times();
        MsgMeta {
            exchange: p.exchange,
            routing_key: p.routing_key,
            header: p.header,
            body: match &self.big {
                Some(b) => b,
                None => p.inline_body,
            },
            timestamp,
            ttl,
            priority: self.priority,
        }
    }

    /// Drop the in-memory content; `at` is where the store has it.
    pub fn page_out(&mut self, arena: &mut Arena, at: StoreRef) {
        let p = self.parts();
        let prefix = Prefix {
            stored: Some(&at),
            times: self.raw_times(),
            exchange: p.exchange,
            routing_key: p.routing_key,
        };
        self.data = prefix.stub(arena);
        self.big = None;
        self.flags |= F_PAGED | F_STORED;
    }

    /// Content read back from the store: in memory again (packed apart from
    /// content as published, see [`Arena`]).
    pub fn page_in(&mut self, arena: &mut Arena, header: &[u8], body: Bytes) {
        if !self.is_paged() {
            return;
        }
        let inline = body.len() < INLINE_BODY;
        let len = self.data.len() + 4 + header.len() + if inline { body.len() } else { 0 };
        let stub = &self.data;
        let data = arena.loaded.write(len, |out| {
            out.put_slice(stub);
            out.put_u32(header.len() as u32);
            out.put_slice(header);
            if inline {
                out.put_slice(&body);
            }
        });
        self.data = data;
        self.big = (!inline).then(|| Box::new(body));
        self.flags &= !F_PAGED;
    }

    /// Append its content header and body frames to `outbox`.
    pub fn write_content(&self, outbox: &mut Outbox, channel: u16, frame_max: u32) {
        let p = self.parts();
        match &self.big {
            Some(b) => outbox.content(channel, p.header, b, frame_max),
            None => outbox.content_copied(channel, p.header, p.inline_body, frame_max),
        }
    }

    /// Append its content for a delivery: its own, or `from_store` (header
    /// and body read back for a paged-out message), with `x-delivery-count`
    /// set in its headers when `count` is given (quorum queues).
    pub fn write_delivery(
        &self,
        outbox: &mut Outbox,
        channel: u16,
        frame_max: u32,
        from_store: Option<&(Bytes, Bytes)>,
        count: Option<u8>,
    ) {
        let Some(n) = count else {
            match from_store {
                Some((header, body)) => outbox.content(channel, header, body, frame_max),
                None => self.write_content(outbox, channel, frame_max),
            }
            return;
        };
        let p = self.parts();
        let header = with_delivery_count(from_store.map_or(p.header, |(h, _)| &h[..]), n);
        match (from_store, self.big.as_deref()) {
            (Some((_, body)), _) | (None, Some(body)) => {
                outbox.content(channel, &header, body, frame_max)
            }
            (None, None) => outbox.content_copied(channel, &header, p.inline_body, frame_max),
        }
    }

    /// A message for routing again (dead-lettering), with the same parts.
    pub fn to_message(&self) -> Message {
        let mut m = Message::new(
            self.exchange(),
            self.routing_key(),
            self.header(),
            self.body(),
            self.persistent(),
        );
        m.priority = self.priority;
        m
    }

    /// True when its spill entry can carry its content (see
    /// [`QueuedMsg::spill_entry`]): in memory, with a small body.
    pub fn spills_whole(&self) -> bool {
        !self.is_paged() && self.big.is_none() && self.data.len() <= u16::MAX as usize
    }

    /// Append its spill entry to `out` (see `store::spill`): it must be
    /// paged out (its content is in the store; the entry holds its stub),
    /// or [`QueuedMsg::spills_whole`] (the entry holds all of it: read
    /// back, it is in memory again without a read per message).
    /// Layout: `seq u64 | expires u64 | size u32 | flags u8 | priority u8 |
    /// prio u8 | returns u8 | data_len u16 | data`.
    pub fn spill_entry(&self, out: &mut Vec<u8>) {
        let data = &self.data[..];
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&[self.flags, self.priority, self.prio, self.returns]);
        out.extend_from_slice(&(data.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(data.get(..u16::MAX as usize).unwrap_or(data));
    }

    /// The message whose spill entry starts `data`, and the entry's length;
    /// None if it does not parse (or is paged out without a store
    /// reference).
    pub fn from_spill(arena: &mut Arena, data: &[u8]) -> Option<(QueuedMsg, usize)> {
        let fixed = 8 + 8 + 4 + 4 + 2;
        let n = be(data, fixed - 2, 2) as usize;
        let stub = data.get(fixed..fixed + n)?;
        let flags = *data.get(20)?;
        let paged = flags & F_PAGED != 0;
        if stub.is_empty() || (paged && (flags & F_STORED == 0 || stub.first()? & B_REF == 0)) {
            return None;
        }
        let slice = if paged {
            arena.stubs.write(n, |out| out.put_slice(stub))
        } else {
            arena.queued.write(n, |out| out.put_slice(stub))
        };
        let m = QueuedMsg {
            data: slice,
            big: None,
            seq: be(data, 0, 8),
            expires: be(data, 8, 8),
            size: be(data, 16, 4) as u32,
            flags,
            priority: *data.get(21)?,
            prio: *data.get(22)?,
            returns: *data.get(23)?,
        };
        Some((m, fixed + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8], ttl: Option<u64>) -> Message {
        let mut m = Message::new(
            Bytes::from_static(b"ex"),
            Bytes::from_static(b"key"),
            Bytes::from_static(b"\x00\x3c\x00\x00hdr"),
            Bytes::copy_from_slice(body),
            true,
        );
        m.ttl = ttl;
        m.timestamp = 42;
        m.priority = 3;
        m
    }

    fn at() -> StoreRef {
        StoreRef {
            msg_id: 7,
            seg: 2,
            offset: 300,
            len: 90,
            durable: true,
        }
    }

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<QueuedMsg>(), 48);
    }

    #[test]
    fn packs_and_reads_back() {
        let mut arena = Arena::default();
        for (body, stored, ttl) in [
            (&b"small"[..], None, None),
            (&[7u8; 5000][..], Some(at()), Some(1000)),
            (&b""[..], Some(at()), None),
            (&[1u8; 2047][..], None, Some(5)),
        ] {
            let m = message(body, ttl);
            let mut q = QueuedMsg::pack(&mut arena, &m, stored);
            assert!(q.stored().is_none());
            q.set_stored(true);
            assert_eq!(q.stored(), stored);
            let p = q.parts();
            assert_eq!(p.exchange, b"ex");
            assert_eq!(p.routing_key, b"key");
            assert_eq!(p.header, &m.header[..]);
            assert_eq!(q.body(), m.body);
            assert_eq!(q.big_body().is_some(), body.len() >= INLINE_BODY);
            assert_eq!(q.size(), body.len() as u64);
            assert_eq!((q.priority(), q.persistent()), (3, true));
            let times = if stored.is_some() || ttl.is_some() {
                (42, ttl)
            } else {
                (0, None)
            };
            assert_eq!(q.times(), times);
            let resident = q.resident();
            let big = body.len() >= INLINE_BODY;
            assert_eq!(
                resident,
                if big {
                    body.len() as u64 + BIG_OVERHEAD
                } else {
                    0
                }
            );
            let paged_at = StoreRef {
                durable: false,
                ..at()
            };
            let paged_copy =
                QueuedMsg::pack_paged(&mut arena, &m, stored, stored.unwrap_or(paged_at));
            q.page_out(&mut arena, stored.unwrap_or(paged_at));
            assert!(q.is_paged());
            assert_eq!(q.resident(), 0);
            assert_eq!(q.stored(), Some(stored.unwrap_or(paged_at)));
            assert_eq!(
                (q.exchange(), q.routing_key()),
                (m.exchange.clone(), m.routing_key.clone())
            );
            assert!(q.header().is_empty() && q.body().is_empty());
            assert_eq!(q.times(), times);
            // Packed straight out, the same stub.
            assert_eq!(&paged_copy.data[..], &q.data[..]);
            assert!(paged_copy.is_paged() && paged_copy.stored().is_some());
            // Stubs are packed apart from content.
            assert_ne!(q.chunk().map(|c| c.0), arena.queued.current().map(|c| c.0));
            assert_eq!(q.chunk(), arena.stubs.current());
            q.page_in(&mut arena, &m.header, m.body.clone());
            assert!(!q.is_paged());
            // Paged in, it keeps the store reference it got when paged out.
            assert_eq!(q.stored(), Some(stored.unwrap_or(paged_at)));
            assert_eq!(q.resident(), resident);
            assert_eq!((q.header(), q.body()), (m.header.clone(), m.body.clone()));
            assert_eq!(q.meta().routing_key, b"key");
        }
    }

    #[test]
    fn flags_and_expiry() {
        let mut arena = Arena::default();
        let mut q = QueuedMsg::pack(&mut arena, &message(b"x", None), None);
        assert!(!q.redelivered() && q.expires_at().is_none());
        q.set_redelivered(true);
        q.set_expires_at(Some(99));
        assert!(q.redelivered());
        assert_eq!(q.expires_at(), Some(99));
        q.set_redelivered(false);
        assert!(!q.redelivered());
        let m = q.to_message();
        assert_eq!(
            (&m.body[..], m.priority, m.persistent),
            (&b"x"[..], 3, true)
        );
    }

    /// Paged-out messages do not keep the chunks their content was packed
    /// in: with every message paged out, content takes at most the chunk
    /// being written, and the stubs chunks of their own.
    #[test]
    fn stubs_do_not_pin_content_chunks() {
        let mut arena = Arena::default();
        let m = message(&[5u8; 1024], None);
        let mut queue: Vec<QueuedMsg> = (0..1000)
            .map(|_| QueuedMsg::pack(&mut arena, &m, None))
            .collect();
        assert!(arena.content_bytes() >= 1000 * 1024);
        assert_eq!(arena.stub_bytes(), 0);
        for q in &mut queue {
            q.page_out(&mut arena, at());
        }
        assert_eq!(arena.content_bytes(), CHUNK as u64);
        let stubs = arena.stub_bytes();
        assert!(stubs < 1000 * 64, "{stubs} bytes of stub chunks");
        // Chunks are counted once, however many messages share them.
        let mut chunks: Vec<_> = queue.iter().filter_map(|q| q.chunk()).collect();
        chunks.extend(arena.current_chunks());
        chunks.sort();
        chunks.dedup();
        assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), arena.bytes());
        // Read back for delivery, then acknowledged: all freed but the
        // chunks being written.
        for q in &mut queue {
            q.page_in(&mut arena, &m.header, m.body.clone());
        }
        assert!(arena.content_bytes() >= 1000 * 1024);
        drop(queue);
        let current: u64 = arena.current_chunks().map(|c| c.1).sum();
        assert_eq!(arena.bytes(), current);
    }
}
