//! The protocol-neutral broker engine: the state every front door shares
//! (vhosts, exchanges, queues, the message store) and the actions they
//! perform on it. AMQP (`crate::amqp`), the management API (`crate::mgmt`)
//! and the definitions import call the same actions; a front door adds its
//! own permission checks and turns outcomes into its own replies.
//!
//! | file | actions |
//! |---|---|
//! | `admin.rs` | vhosts, users, permissions; declare, delete, bind, unbind, purge |
//! | `publish.rs` | publish: route (CC/BCC, alternate exchanges), queue, store |
//! | `stream.rs` | stream queues: open their logs, append, commit, wake readers |
//! | `take.rs` | settle a taken message: ack, reject (dead-letter), requeue |
//! | `expiry.rs` | message and queue expiry, dead-lettering, timers |
//! | `delayed.rs` | `x-delayed-message`: hold, and route when due |
//! | `persist.rs` | open and restore, the group commit, alarms |
//! | `policy.rs` | policies, operator policies and limits, applied at runtime |
//! | `params.rs` | runtime parameters: shovels, federation upstreams and upstream sets |
//! | `messages.rs` | [`Messages`]: store + arena + memory account; `take` |

mod admin;
mod delayed;
mod expiry;
mod messages;
mod params;
mod persist;
mod policy;
mod publish;
pub(crate) mod stream;
mod take;

use std::time::{Duration, Instant};

use crate::broker::message::QueuedMsg;
use crate::broker::queue::ConsumerRef;
use crate::broker::{Broker, QueueId};
use crate::config::Config;

pub use messages::Messages;
pub(crate) use messages::{Loaded, Taken};
pub(crate) use persist::{blocked_reason, ring_bytes};
pub use policy::{PolicyKind, PolicySpec};
pub use publish::Routed;
pub(crate) use take::count_taken;

/// Memory a queued message costs besides arena chunks and large bodies
/// (counted on their own, see [`Engine::memory_used`]): its entry in a
/// queue. Entries of unacknowledged messages are larger, and a queue's
/// buffer may be larger than its messages: [`Engine::memory_used`] counts
/// the buffers' capacity as last measured, and this for each message added
/// since.
pub const PER_MESSAGE_OVERHEAD: u64 = std::mem::size_of::<QueuedMsg>() as u64;

/// Messages that leave one queue by expiry or drop-head in one call at
/// most (the rest in the next turns: the loop is not held by one queue).
pub(crate) const LEAVE_BATCH: usize = 16_384;

/// How often queue, channel and connection buffers are measured (see
/// [`Engine::memory_used`]).
pub(crate) const BUFFER_SCAN_EVERY: Duration = Duration::from_millis(10);

/// Message and byte counters since start (management API, `/metrics`);
/// each is one integer increment where it happens.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Messages received from publishers (and the management API).
    pub publish: u64,
    /// Deliveries to consumers.
    pub deliver: u64,
    /// Messages fetched with basic.get (or the management API).
    pub get: u64,
    /// Deliveries acknowledged.
    pub ack: u64,
    /// Deliveries of messages delivered before.
    pub redeliver: u64,
    /// Unroutable mandatory messages returned.
    pub return_unroutable: u64,
    /// Unroutable messages dropped.
    pub drop_unroutable: u64,
    /// Bytes read from AMQP sockets.
    pub bytes_in: u64,
    /// Bytes written to AMQP sockets.
    pub bytes_out: u64,
}

/// The memory and disk alarms.
#[derive(Debug)]
pub struct Alarms {
    /// Publishers are blocked (memory or disk alarm).
    pub blocked: bool,
    /// Publishers are blocked for the disk: free space is below the limit,
    /// or the store cannot write or reserve its next segment.
    pub disk_alarm: bool,
    /// Free space was below `min_free_disk` at the last look.
    pub(crate) disk_low: bool,
    /// When to look at free disk space again.
    pub(crate) next_disk_check: Instant,
    /// Bytes of the queues' and channels' entry buffers and of the
    /// connections' buffers when last measured, the number of messages
    /// then, and when (see [`Engine::memory_used`]).
    pub(crate) buffers: (u64, u64, Instant),
    /// The queue scan in progress: the next slab index, and the bytes of
    /// the queues measured so far in this round; and the total of the last
    /// complete round (see [`Engine::measure_buffers`]).
    pub(crate) queue_scan: (usize, u64, u64),
    /// Highest [`Engine::memory_used`] plus connections since memory was
    /// last handed back to the system (see [`Engine::should_trim`]).
    trim_peak: u64,
}

/// The engine's time: the current turn's instant, the wall clock it
/// corresponds to, and the earliest timer due before the next regular tick.
#[derive(Debug)]
pub(crate) struct Clock {
    /// The current turn's time.
    pub(crate) now: Instant,
    /// A timer (message or queue expiry) due before the next regular tick.
    pub(crate) wake: Option<Instant>,
    /// Wall-clock milliseconds since the epoch at `base`.
    wall: u64,
    /// The instant `wall` was read.
    base: Instant,
}

/// The broker's state and actions, shared by every front door.
///
/// # Calling order
///
/// The engine never blocks, reads the clock or touches a socket: time is
/// an argument. A front door, once per loop turn:
///
/// 1. [`Engine::advance`] to the turn's time, then calls actions
///    ([`Engine::publish`], [`Engine::declare_queue`], ...). Actions mark
///    the queues that may now deliver ([`Engine::mark_queue`]).
/// 2. Hands messages to its consumers: for each queue from
///    [`Engine::next_dirty`], [`Messages::take`] one at a time while a
///    consumer has room; settles them later with [`Engine::ack`],
///    [`Engine::reject`] or [`Engine::requeue`].
/// 3. Reads the events meant for it: [`Engine::take_cancelled`]
///    (consumers of deleted queues).
/// 4. On its timer, [`Engine::tick`] (expiry, retries), and at the end of
///    the turn [`Engine::group_commit`] then [`Engine::check_alarms`]
///    (whose answer says when to block or unblock publishers).
///
/// Where it is not sans-IO: the store's file I/O (appends, fdatasync, the
/// free-space check, the definitions log) runs inside these calls, through
/// `crate::store`; see README "Durability and faults".
#[derive(Debug)]
pub struct Engine {
    /// Settings.
    pub config: Config,
    /// Exchanges, queues, bindings, users.
    pub broker: Broker,
    /// Queued messages' memory and disk.
    pub msgs: Messages,
    /// The durable definitions on disk (None: in memory).
    pub(crate) defs: Option<crate::store::definitions::DefsLog>,
    /// Queues that may be able to deliver (the ready list).
    dirty: Vec<QueueId>,
    /// Messages to dead-letter whose content could not be read for now.
    pub(crate) dead_letter_later: Vec<(QueueId, QueuedMsg, &'static str)>,
    /// Queues over their length limits with more to drop (see
    /// [`Engine::drop_over_limit`]).
    trim_later: Vec<QueueId>,
    /// Consumers whose queue was deleted, for their front door to tell.
    cancelled: Vec<ConsumerRef>,
    /// Runtime parameters (shovels, federation upstreams and upstream
    /// sets) set, changed or removed since the last drain, as (component,
    /// vhost, name): each one set or restored at open, changed, cleared,
    /// or removed with its vhost. The current value (or its absence) is in
    /// `broker.runtime.parameters`. Drained by the link manager each loop
    /// turn ([`Engine::take_param_events`]).
    pub(crate) param_events: Vec<(String, String, String)>,
    /// Message and byte counters.
    pub counters: Counters,
    /// Memory and disk alarms.
    pub alarms: Alarms,
    /// Time.
    pub(crate) clock: Clock,
    /// Sync the store at the end of this turn (a tx.commit or management
    /// publish of persistent messages).
    pub(crate) force_sync: bool,
    /// Messages held by `x-delayed-message` exchanges.
    pub(crate) delayed: crate::store::delayed::DelayStore,
    /// Scratch vector for routing results.
    route_scratch: Vec<QueueId>,
    /// Scratch vector for the store ids of durable target queues.
    store_scratch: Vec<u64>,
    /// Streams appended to since the last commit.
    streams_pending: Vec<QueueId>,
    /// A commit made stream messages readable (see
    /// [`Engine::take_stream_wakeup`]).
    stream_woke: bool,
    /// Stream readers to unblock next turn (see
    /// [`Engine::resume_reader`]).
    stream_resume: Vec<(QueueId, u32)>,
}

impl Engine {
    /// An engine with the default vhost and user, everything in memory.
    pub fn new(config: Config) -> Engine {
        let mut broker = Broker::new();
        // RabbitMQ's first boot: the default vhost, and the default user
        // (administrator) with full permissions on it.
        if config.default_vhost != "/" {
            broker.vhosts.remove(&b"/"[..]);
            broker.add_vhost(config.default_vhost.as_bytes());
        }
        let tags: Vec<&str> = config
            .default_user_tags
            .iter()
            .map(String::as_str)
            .collect();
        if let Err(e) = broker
            .auth
            .put_user(&config.default_user, &config.default_pass, &tags)
        {
            log::error!("default user '{}' not created: {e}", config.default_user);
        }
        let [c, w, r] = &config.default_permissions;
        match crate::broker::auth::Permission::new(c, w, r) {
            Ok(p) => broker
                .auth
                .set_permission(&config.default_user, &config.default_vhost, p),
            Err(e) => log::warn!("default_permissions: {e}"),
        }
        let now = Instant::now();
        Engine {
            msgs: Messages {
                max_memory: config.max_memory,
                ..Messages::default()
            },
            config,
            broker,
            defs: None,
            dirty: Vec::new(),
            dead_letter_later: Vec::new(),
            trim_later: Vec::new(),
            cancelled: Vec::new(),
            param_events: Vec::new(),
            counters: Counters::default(),
            alarms: Alarms {
                blocked: false,
                disk_alarm: false,
                disk_low: false,
                next_disk_check: now,
                buffers: (0, 0, now),
                queue_scan: (0, 0, 0),
                trim_peak: 0,
            },
            clock: Clock {
                now,
                wake: None,
                wall: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                base: now,
            },
            force_sync: false,
            delayed: crate::store::delayed::DelayStore::in_memory(),
            route_scratch: Vec::new(),
            store_scratch: Vec::new(),
            streams_pending: Vec::new(),
            stream_woke: false,
            stream_resume: Vec::new(),
        }
    }

    /// Move the engine's time forward to `now` (never back).
    pub fn advance(&mut self, now: Instant) {
        self.clock.now = self.clock.now.max(now);
    }

    /// The current turn's time.
    pub fn now(&self) -> Instant {
        self.clock.now
    }

    /// Wall-clock milliseconds since the epoch for the current turn (TTLs
    /// are wall-clock based so they survive restarts).
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall
            + self
                .clock
                .now
                .saturating_duration_since(self.clock.base)
                .as_millis() as u64
    }

    /// The current turn's time as tenths of a second since the engine
    /// started: a delivery's time for the consumer timeout (four bytes per
    /// delivery, good for thirteen years).
    pub(crate) fn stamp(&self) -> u32 {
        let ds = self
            .clock
            .now
            .saturating_duration_since(self.clock.base)
            .as_millis()
            / 100;
        u32::try_from(ds).unwrap_or(u32::MAX)
    }

    /// Ask for a tick at `at`.
    pub(crate) fn wake_at(&mut self, at: Instant) {
        self.clock.wake = Some(self.clock.wake.map_or(at, |w| w.min(at)));
    }

    /// When [`Engine::tick`] must run before its regular interval (a
    /// message or queue expiry scheduled since the last tick).
    pub fn wake_hint(&self) -> Option<Instant> {
        self.clock.wake
    }

    /// Note that a queue may be able to deliver.
    pub(crate) fn mark_queue(&mut self, q: QueueId) {
        if let Some(queue) = self.broker.queue_mut(q) {
            if !queue.dirty {
                queue.dirty = true;
                self.dirty.push(q);
            }
        }
    }

    /// Put a blocked consumer (key `key` of queue `q`) back into its
    /// queue's rotation and have the queue dispatch; a no-op for a consumer
    /// that is active or gone.
    pub(crate) fn unblock_consumer(&mut self, q: QueueId, key: u32) {
        if let Some(queue) = self.broker.queue_mut(q) {
            queue.consumers.unblock(key);
            if !queue.dirty {
                queue.dirty = true;
                self.dirty.push(q);
            }
        }
    }

    /// The next queue that may be able to deliver, its expired head
    /// already removed (the front door then takes messages for its
    /// consumers and calls [`Engine::after_dispatch`]).
    pub(crate) fn next_dirty(&mut self) -> Option<QueueId> {
        let q = self.dirty.pop()?;
        if let Some(queue) = self.broker.queue_mut(q) {
            queue.dirty = false;
        }
        self.expire_overdue(q);
        Some(q)
    }

    /// A queue's dispatch pass is over: what is due now and found nobody
    /// to take it expires now (TTL 0).
    pub(crate) fn after_dispatch(&mut self, q: QueueId) {
        self.expire_queue(q);
    }

    /// True when a queue may be able to deliver.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Consumers whose queue was deleted since the last call, for their
    /// front door to tell (AMQP: basic.cancel).
    pub(crate) fn take_cancelled(&mut self) -> Vec<ConsumerRef> {
        std::mem::take(&mut self.cancelled)
    }

    /// The runtime parameters (component, vhost, name) set, changed or
    /// removed since the last call (see `param_events`); look their
    /// current values up in `broker.runtime`.
    pub fn take_param_events(&mut self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.param_events)
    }

    /// True when a consumer of a deleted queue waits to be told.
    pub(crate) fn has_cancelled(&self) -> bool {
        !self.cancelled.is_empty()
    }

    /// Timers: message and queue expiry, and the retries of what could not
    /// be read for now.
    pub fn tick(&mut self, now: Instant) {
        self.advance(now);
        self.clock.wake = None;
        self.run_timers(now);
        self.run_delayed();
        for (q, m, reason) in std::mem::take(&mut self.dead_letter_later) {
            self.dead_letter(q, m, reason);
        }
        for q in std::mem::take(&mut self.msgs.read_later) {
            self.mark_queue(q);
        }
        for q in std::mem::take(&mut self.trim_later) {
            self.drop_over_limit(q);
        }
        if self.msgs.settle_purged() {
            self.wake_at(now);
        }
    }

    /// The next time [`Engine::tick`] has something to do.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        // Heartbeats have a resolution of half a second; message and queue
        // expiry bring it forward.
        let tick = now + Duration::from_millis(500);
        self.next_timer(now).map_or(tick, |t| t.min(tick))
    }

    /// Bytes of memory in use as the memory alarm counts them: the
    /// arena's chunks (content and stubs, as allocated), large bodies, the
    /// queues' and channels' entry buffers and the connections' buffers (as
    /// last measured, plus an entry for each message added since), and
    /// the delayed messages in memory. O(1).
    pub fn memory_used(&self) -> u64 {
        let (bytes, queued, _) = self.alarms.buffers;
        let buffers = bytes + self.msgs.queued.saturating_sub(queued) * PER_MESSAGE_OVERHEAD;
        self.msgs.arena.bytes() + self.msgs.resident + buffers + self.delayed.memory()
    }

    /// True when much of the memory in use at the last peak (`in_use`,
    /// bytes) has been freed since (a queue drained, connections closed):
    /// the server then asks the allocator to return free pages to the
    /// system. Cheap; call it every loop turn.
    pub fn should_trim(&mut self, in_use: u64) -> bool {
        let a = &mut self.alarms;
        a.trim_peak = a.trim_peak.max(in_use);
        if a.trim_peak - in_use >= 8 << 20 && in_use < a.trim_peak / 2 {
            a.trim_peak = in_use;
            return true;
        }
        false
    }
}
