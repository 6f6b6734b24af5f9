//! Broker state: virtual hosts, exchanges, queues and bindings, and the verbs
//! the connection layer calls (declare, bind, route, delete …). Connections
//! are named by [`ConnId`], never borrowed; effects on other connections (a
//! consumer cancelled because its queue went) are returned to the caller.

pub mod args;
pub mod auth;
pub mod consumers;
pub mod dedup;
pub mod delayed;
pub mod exchange;
pub mod headers;
pub mod message;
pub mod params;
pub mod policy;
pub mod queue;
pub mod ready;
pub mod stream;
pub mod topic;

use std::collections::HashMap;

use bytes::Bytes;
use slab::Slab;

use crate::codec::{Error, FieldTable, ReplyCode};
use crate::store::definitions::{BindingDef, DefChange, ExchangeDef, QueueDef};
use args::QueueArgs;
use consumers::ConsumerRef;
use exchange::{Binding, Dest, Exchange, ExchangeKind};
use queue::Queue;

/// A connection's id: slab index plus a generation, since slab keys are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Slab index.
    pub idx: u32,
    /// Generation of that index.
    pub gen: u32,
}

/// A queue's id: slab index plus a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    /// Slab index.
    pub idx: u32,
    /// Generation of that index.
    pub gen: u32,
}

/// A virtual host's names.
#[derive(Debug, Default)]
pub struct VHost {
    /// Exchanges by name.
    pub exchanges: HashMap<Bytes, Exchange>,
    /// Queues by name.
    pub queues: HashMap<Bytes, QueueId>,
}

/// What deleting a queue left behind.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Its ready messages (those in memory, and the spilled ones).
    pub ready: ready::Ready,
    /// Its store id, if durable.
    pub store_id: Option<u64>,
    /// Consumers that lost their queue (to be sent basic.cancel).
    pub consumers: Vec<ConsumerRef>,
    /// A stream's log, to delete.
    pub stream: Option<Box<stream::Stream>>,
}

/// All broker state.
#[derive(Debug, Default)]
pub struct Broker {
    /// Virtual hosts by name.
    pub vhosts: HashMap<Bytes, VHost>,
    /// Every queue of every vhost.
    pub queues: Slab<Queue>,
    /// Generation counter for queue ids.
    next_gen: u32,
    /// Counter for server-generated names.
    name_counter: u64,
    /// Durable queues get store ids (a message store is attached).
    pub persistent: bool,
    /// Stream queues (publishing looks for them only when there are).
    pub streams: usize,
    /// Next durable queue store id.
    pub next_store_id: u64,
    /// Changes to the durable definitions since the end of the last turn,
    /// in order (written to the definitions log, see [`DefChange`]).
    pub def_changes: Vec<DefChange>,
    /// Users and permissions.
    pub auth: auth::Auth,
    /// Policies, operator policies and limits.
    pub runtime: policy::Runtime,
    /// Queues with `x-message-deduplication` (none: a publish looks for
    /// none).
    pub dedup_queues: usize,
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn not_found_exchange(vhost: &[u8], name: &[u8]) -> Error {
    Error::new(
        ReplyCode::NOT_FOUND,
        format!("no exchange '{}' in vhost '{}'", s(name), s(vhost)),
    )
}

fn not_found_queue(vhost: &[u8], name: &[u8]) -> Error {
    Error::new(
        ReplyCode::NOT_FOUND,
        format!("no queue '{}' in vhost '{}'", s(name), s(vhost)),
    )
}

/// 406 naming the first of `flags` (argument, received, current) that differs.
fn check_flags<const N: usize>(
    what: &str,
    name: &[u8],
    vhost: &[u8],
    flags: [(&str, String, String); N],
) -> Result<(), Error> {
    match flags.into_iter().find(|(_, got, cur)| got != cur) {
        None => Ok(()),
        Some((arg, got, cur)) => Err(Error::new(
            ReplyCode::PRECONDITION_FAILED,
            format!(
                "inequivalent arg '{arg}' for {what} '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                s(name),
                s(vhost)
            ),
        )),
    }
}

/// Exchange.declare arguments.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// Name.
    pub name: Bytes,
    /// Type name.
    pub kind: Bytes,
    /// passive.
    pub passive: bool,
    /// durable.
    pub durable: bool,
    /// auto-delete.
    pub auto_delete: bool,
    /// internal.
    pub internal: bool,
    /// arguments.
    pub arguments: FieldTable,
}

/// Queue.declare arguments.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Name ("" = server-named).
    pub name: Bytes,
    /// passive.
    pub passive: bool,
    /// durable.
    pub durable: bool,
    /// exclusive.
    pub exclusive: bool,
    /// auto-delete.
    pub auto_delete: bool,
    /// arguments.
    pub arguments: FieldTable,
}

impl Broker {
    /// A broker with the default vhost `/` and its standard exchanges.
    pub fn new() -> Broker {
        let mut b = Broker::default();
        b.add_vhost(b"/");
        b
    }

    /// Consumers on all queues.
    pub fn consumer_count(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.consumers.len()).sum()
    }

    /// Create a vhost with RabbitMQ's predeclared exchanges.
    pub fn add_vhost(&mut self, name: &[u8]) {
        let mut vh = VHost::default();
        let std = [
            (&b""[..], ExchangeKind::Direct),
            (b"amq.direct", ExchangeKind::Direct),
            (b"amq.fanout", ExchangeKind::Fanout),
            (b"amq.topic", ExchangeKind::Topic),
            (b"amq.headers", ExchangeKind::Headers),
            (b"amq.match", ExchangeKind::Headers),
        ];
        for (n, k) in std {
            let n = Bytes::copy_from_slice(n);
            vh.exchanges.insert(
                n.clone(),
                Exchange::new(n, k, true, false, false, FieldTable::new()),
            );
        }
        self.vhosts.insert(Bytes::copy_from_slice(name), vh);
    }

    /// The vhost, if it exists.
    pub fn vhost(&self, name: &[u8]) -> Option<&VHost> {
        self.vhosts.get(name)
    }

    fn vhost_mut(&mut self, name: &[u8]) -> Result<&mut VHost, Error> {
        self.vhosts
            .get_mut(name)
            .ok_or_else(|| Error::new(ReplyCode::NOT_FOUND, format!("no vhost '{}'", s(name))))
    }

    /// A queue by id (None once deleted).
    pub fn queue(&self, id: QueueId) -> Option<&Queue> {
        self.queues.get(id.idx as usize).filter(|q| q.id == id)
    }

    /// A queue by id, mutable.
    pub fn queue_mut(&mut self, id: QueueId) -> Option<&mut Queue> {
        self.queues.get_mut(id.idx as usize).filter(|q| q.id == id)
    }

    /// Look a queue up by name, checking exclusivity for `conn`.
    pub fn find_queue(&self, vhost: &[u8], name: &[u8], conn: ConnId) -> Result<QueueId, Error> {
        let id = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.queues.get(name))
            .copied()
            .ok_or_else(|| not_found_queue(vhost, name))?;
        let q = self.queue(id).ok_or_else(|| not_found_queue(vhost, name))?;
        check_exclusive(q, conn)?;
        Ok(id)
    }

    /// A fresh server-generated name with `prefix` (`amq.gen-…`, `amq.ctag-…`).
    pub fn gen_name(&mut self, prefix: &str, salt: u64) -> Bytes {
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.name_counter += 1;
        let mut x = self.name_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ salt.rotate_left(17)
            ^ 0xD1B5_4A32_D192_ED03;
        let mut out = String::with_capacity(prefix.len() + 22);
        out.push_str(prefix);
        for _ in 0..22 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(ALPHA.get((x % 64) as usize).copied().unwrap_or(b'A') as char);
        }
        Bytes::from(out)
    }

    /// exchange.declare.
    pub fn declare_exchange(&mut self, vhost: &[u8], spec: ExchangeSpec) -> Result<(), Error> {
        // RabbitMQ refuses the default exchange even for a passive declare.
        if spec.name.is_empty() {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        let vh = self.vhost_mut(vhost)?;
        if let Some(x) = vh.exchanges.get(&spec.name) {
            if spec.passive {
                return Ok(());
            }
            let flags = [
                ("type", s(&spec.kind), x.kind.name().to_string()),
                ("durable", spec.durable.to_string(), x.durable.to_string()),
                (
                    "auto_delete",
                    spec.auto_delete.to_string(),
                    x.auto_delete.to_string(),
                ),
                (
                    "internal",
                    spec.internal.to_string(),
                    x.internal.to_string(),
                ),
            ];
            check_flags("exchange", &spec.name, vhost, flags)?;
            let same = if x.kind == ExchangeKind::FederationUpstream {
                args::check_upstream_equivalent(&x.arguments, &spec.arguments)
            } else {
                args::check_exchange_equivalent(&x.arguments, &spec.arguments)
            };
            same.map_err(|e| e.into_error_for("exchange", &spec.name, vhost))?;
            return Ok(());
        }
        if spec.passive {
            return Err(not_found_exchange(vhost, &spec.name));
        }
        if spec.name.starts_with(b"amq.") {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    s(&spec.name)
                ),
            ));
        }
        let Some(kind) = ExchangeKind::parse(&spec.kind) else {
            return Err(Error::new(
                ReplyCode::COMMAND_INVALID,
                format!("unknown exchange type '{}'", s(&spec.kind)),
            ));
        };
        args::check_exchange_args(&spec.arguments)
            .map_err(|e| e.into_error_for("exchange", &spec.name, vhost))?;
        if kind == ExchangeKind::FederationUpstream {
            exchange::check_upstream_args(&spec.arguments)
                .map_err(|e| Error::new(ReplyCode::PRECONDITION_FAILED, e))?;
        }
        if kind == ExchangeKind::Deduplication {
            dedup::check_args(&spec.arguments)
                .map_err(|e| Error::new(ReplyCode::PRECONDITION_FAILED, e))?;
        }
        if kind == ExchangeKind::Delayed {
            delayed::check_args(&spec.arguments).map_err(|(code, e)| Error::new(code, e))?;
        }
        let x = Exchange::new(
            spec.name.clone(),
            kind,
            spec.durable,
            spec.auto_delete,
            spec.internal,
            spec.arguments,
        );
        let def = spec.durable.then(|| ExchangeDef {
            vhost: Bytes::copy_from_slice(vhost),
            name: spec.name.clone(),
            kind: Bytes::from_static(x.kind.name().as_bytes()),
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: x.arguments.clone(),
        });
        vh.exchanges.insert(spec.name, x);
        if let Some(def) = def {
            self.def_changes.push(DefChange::PutExchange(def));
        }
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(
        &mut self,
        vhost: &[u8],
        name: &[u8],
        if_unused: bool,
    ) -> Result<(), Error> {
        let vh = self.vhost_mut(vhost)?;
        if name.is_empty() {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with(b"amq.") {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "deletion of system exchange '{}' in vhost '{}' not allowed",
                    s(name),
                    s(vhost)
                ),
            ));
        }
        // Deleting an exchange that does not exist succeeds (RabbitMQ).
        let Some(x) = vh.exchanges.get(name) else {
            return Ok(());
        };
        let dest = Dest::Exchange(Bytes::copy_from_slice(name));
        let is_dest = vh.exchanges.values().any(|e| e.has_dest(&dest));
        if if_unused && (!x.bindings.is_empty() || is_dest) {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!("exchange '{}' in vhost '{}' in use", s(name), s(vhost)),
            ));
        }
        let durable = x.durable;
        vh.exchanges.remove(name);
        for e in vh.exchanges.values_mut() {
            e.unbind_dest(&dest);
        }
        if durable {
            self.def_changes.push(DefChange::DelExchange(
                Bytes::copy_from_slice(vhost),
                Bytes::copy_from_slice(name),
            ));
        }
        self.cleanup_auto_delete_exchanges(vhost);
        Ok(())
    }

    fn cleanup_auto_delete_exchanges(&mut self, vhost: &[u8]) {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        loop {
            let gone: Vec<Bytes> = vh
                .exchanges
                .values()
                .filter(|e| e.auto_delete && e.bindings.is_empty())
                .filter(|e| {
                    let d = Dest::Exchange(e.name.clone());
                    !vh.exchanges.values().any(|o| o.has_dest(&d))
                })
                .map(|e| e.name.clone())
                .collect();
            if gone.is_empty() {
                return;
            }
            for n in gone {
                if vh.exchanges.remove(&n).is_some_and(|x| x.durable) {
                    self.def_changes.push(DefChange::DelExchange(
                        Bytes::copy_from_slice(vhost),
                        n.clone(),
                    ));
                }
                let d = Dest::Exchange(n);
                for e in vh.exchanges.values_mut() {
                    e.unbind_dest(&d);
                }
            }
        }
    }

    /// queue.declare; returns the queue id and whether it was created.
    pub fn declare_queue(
        &mut self,
        vhost: &[u8],
        mut spec: QueueSpec,
        conn: ConnId,
        salt: u64,
    ) -> Result<(QueueId, bool), Error> {
        if !self.vhosts.contains_key(vhost) {
            return Err(Error::new(
                ReplyCode::NOT_FOUND,
                format!("no vhost '{}'", s(vhost)),
            ));
        }
        if !spec.passive && spec.name.starts_with(b"amq.") {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    s(&spec.name)
                ),
            ));
        }
        if spec.name.is_empty() {
            if spec.passive {
                return Err(not_found_queue(vhost, b""));
            }
            spec.name = self.gen_name("amq.gen-", salt);
        }
        let existing = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.queues.get(&spec.name))
            .copied();
        if let Some(id) = existing {
            let q = self
                .queue(id)
                .ok_or_else(|| not_found_queue(vhost, &spec.name))?;
            check_exclusive(q, conn)?;
            if spec.passive {
                return Ok((id, false));
            }
            if q.exclusive_owner.is_some() != spec.exclusive {
                return Err(locked(q));
            }
            let flags = [
                ("durable", spec.durable.to_string(), q.durable.to_string()),
                (
                    "auto_delete",
                    spec.auto_delete.to_string(),
                    q.auto_delete.to_string(),
                ),
            ];
            check_flags("queue", &spec.name, vhost, flags)?;
            args::check_equivalent(&q.arguments, &spec.arguments)
                .map_err(|e| e.into_error(&spec.name, vhost))?;
            return Ok((id, false));
        }
        if spec.passive {
            return Err(not_found_queue(vhost, &spec.name));
        }
        let args =
            QueueArgs::parse(&spec.arguments).map_err(|e| e.into_error(&spec.name, vhost))?;
        // Quorum and stream queues are served as classic queues, but their
        // declaration rules are RabbitMQ's: durable, not exclusive, not
        // auto-delete.
        let replicated = spec
            .arguments
            .get("x-queue-type")
            .and_then(|v| v.as_bytes())
            .is_some_and(|t| &t[..] == b"quorum" || &t[..] == b"stream");
        // RabbitMQ's order (rabbit_queue_type_util's checks).
        let bad = [
            (spec.auto_delete, "auto-delete"),
            (spec.exclusive, "exclusive-owner"),
            (!spec.durable, "non-durable"),
        ];
        if let Some((_, prop)) = bad.iter().find(|(b, _)| replicated && *b) {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "invalid property '{prop}' for queue '{}' in vhost '{}'",
                    s(&spec.name),
                    s(vhost)
                ),
            ));
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let entry = self.queues.vacant_entry();
        let id = QueueId {
            idx: entry.key() as u32,
            gen: self.next_gen,
        };
        let name = spec.name.clone();
        let owner = spec.exclusive.then_some(conn);
        let store_id = (spec.durable && self.persistent).then(|| {
            self.next_store_id += 1;
            self.next_store_id - 1
        });
        if let Some(sid) = store_id {
            self.def_changes.push(DefChange::PutQueue(QueueDef {
                vhost: Bytes::copy_from_slice(vhost),
                name: spec.name.clone(),
                id: sid,
                auto_delete: spec.auto_delete,
                arguments: spec.arguments.clone(),
            }));
        }
        let mut q = Queue::new(id, Bytes::copy_from_slice(vhost), spec, owner, args);
        q.store_id = store_id;
        self.streams += usize::from(q.args.stream);
        self.dedup_queues += usize::from(q.dedup.is_some());
        entry.insert(q);
        let vh = self.vhost_mut(vhost)?;
        vh.queues.insert(name, id);
        // Every queue is bound to the default exchange by its name (implicit;
        // routed without a binding entry).
        Ok((id, true))
    }

    /// Delete a queue, its bindings, and report its consumers.
    pub fn delete_queue(&mut self, id: QueueId) -> Deleted {
        let Some(q) = self.queue(id) else {
            return Deleted::default();
        };
        let vhost = q.vhost.clone();
        let name = q.name.clone();
        let mut q = self.queues.remove(id.idx as usize);
        self.dedup_queues -= usize::from(q.dedup.is_some() && self.dedup_queues > 0);
        if let Some(vh) = self.vhosts.get_mut(&vhost) {
            vh.queues.remove(&name);
            let d = Dest::Queue(id);
            for e in vh.exchanges.values_mut() {
                e.unbind_dest(&d);
            }
        }
        if q.store_id.is_some() {
            self.def_changes
                .push(DefChange::DelQueue(vhost.clone(), q.name.clone()));
        }
        self.cleanup_auto_delete_exchanges(&vhost);
        self.streams -= usize::from(q.args.stream && self.streams > 0);
        Deleted {
            ready: q.ready,
            store_id: q.store_id,
            consumers: q.consumers.take_all(),
            stream: q.stream.take(),
        }
    }

    fn check_bindable(name: &[u8]) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        Ok(())
    }

    /// queue.bind / exchange.bind.
    pub fn bind(
        &mut self,
        vhost: &[u8],
        source: &[u8],
        dest: Dest,
        routing_key: Bytes,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        Self::check_bindable(source)?;
        let vh = self.vhost_mut(vhost)?;
        if let Dest::Exchange(d) = &dest {
            Self::check_bindable(d)?;
            if !vh.exchanges.contains_key(d) {
                return Err(not_found_exchange(vhost, d));
            }
        }
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Err(not_found_exchange(vhost, source));
        };
        if x.route_kind == ExchangeKind::Headers {
            if let Err(e) = headers::parse_x_match(&arguments) {
                return Err(Error::new(ReplyCode::PRECONDITION_FAILED, e));
            }
        }
        let def = self.binding_def(vhost, source, &dest, &routing_key, &arguments);
        if let Some(x) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(source))
        {
            x.bind(Binding {
                dest,
                routing_key,
                arguments,
            });
        }
        if let Some(b) = def {
            self.def_changes.push(DefChange::PutBinding(b));
        }
        Ok(())
    }

    /// queue.unbind / exchange.unbind. Unbinding what is not bound is not an
    /// error (RabbitMQ answers unbind-ok).
    pub fn unbind(
        &mut self,
        vhost: &[u8],
        source: &[u8],
        dest: Dest,
        routing_key: Bytes,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        Self::check_bindable(source)?;
        let vh = self.vhost_mut(vhost)?;
        if !vh.exchanges.contains_key(source) {
            return Ok(());
        }
        let def = self.binding_def(vhost, source, &dest, &routing_key, &arguments);
        if let Some(x) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(source))
        {
            x.unbind(&Binding {
                dest,
                routing_key,
                arguments,
            });
        }
        if let Some(b) = def {
            self.def_changes.push(DefChange::DelBinding(b));
        }
        self.cleanup_auto_delete_exchanges(vhost);
        Ok(())
    }

    /// The durable form of a binding, if both its ends are durable (only
    /// those survive a restart).
    fn binding_def(
        &self,
        vhost: &[u8],
        source: &[u8],
        dest: &Dest,
        routing_key: &Bytes,
        arguments: &FieldTable,
    ) -> Option<BindingDef> {
        let vh = self.vhosts.get(vhost)?;
        if !vh.exchanges.get(source)?.durable {
            return None;
        }
        let (to_queue, dest) = match dest {
            Dest::Queue(q) => {
                let q = self.queue(*q).filter(|q| q.store_id.is_some())?;
                (true, q.name.clone())
            }
            Dest::Exchange(n) => {
                vh.exchanges.get(n).filter(|x| x.durable)?;
                (false, n.clone())
            }
        };
        Some(BindingDef {
            vhost: Bytes::copy_from_slice(vhost),
            source: Bytes::copy_from_slice(source),
            to_queue,
            dest,
            routing_key: routing_key.clone(),
            arguments: arguments.clone(),
        })
    }

    /// Check that a message may be published to `exchange`.
    pub fn check_publish(&self, vhost: &[u8], exchange: &[u8]) -> Result<(), Error> {
        let vh = self
            .vhosts
            .get(vhost)
            .ok_or_else(|| not_found_exchange(vhost, exchange))?;
        match vh.exchanges.get(exchange) {
            None => Err(not_found_exchange(vhost, exchange)),
            Some(x) if x.internal => Err(Error::new(
                ReplyCode::ACCESS_REFUSED,
                format!(
                    "cannot publish to internal exchange '{}' in vhost '{}'",
                    s(exchange),
                    s(vhost)
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Route a message: the queues it goes to, each once, into `out`.
    /// `dedup_at`: the time (wall-clock ms) at which the deduplication
    /// exchanges on its way check it (and remember its key); None for a
    /// message without a deduplication key, or routed again (CC keys).
    pub fn route(
        &self,
        vhost: &[u8],
        exchange: &[u8],
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        dedup_at: Option<u64>,
        out: &mut Vec<QueueId>,
    ) {
        out.clear();
        let Some(vh) = self.vhosts.get(vhost) else {
            return;
        };
        // An `x-message-deduplication` exchange on the way (published to,
        // bound to another, an alternate) routes nothing it has seen: a
        // duplicate is unroutable there, as with the plugin.
        let duplicate = |x: &Exchange| -> bool {
            let (Some(now), Some(cache)) = (dedup_at, x.dedup.as_deref()) else {
                return false;
            };
            cache
                .try_borrow_mut()
                .is_ok_and(|mut c| c.is_duplicate(headers, now))
        };
        if exchange.is_empty() {
            if let Some(id) = vh.queues.get(routing_key) {
                out.push(*id);
            }
            return;
        }
        // Unroutable through an exchange: try its alternate exchange (and
        // that one's), as RabbitMQ does.
        let mut name = exchange;
        for _ in 0..8 {
            let Some(x) = vh.exchanges.get(name) else {
                break;
            };
            if x.exchange_bindings == 0 {
                // Fast path: no exchange-to-exchange bindings, no allocation.
                if !duplicate(x) {
                    x.route(routing_key, headers, &mut |d| {
                        if let Dest::Queue(q) = d {
                            out.push(*q)
                        }
                    });
                }
            } else {
                let mut visited: Vec<&[u8]> = Vec::new();
                let mut stack: Vec<&Exchange> = vec![x];
                while let Some(x) = stack.pop() {
                    if visited.contains(&&x.name[..]) {
                        continue;
                    }
                    visited.push(&x.name[..]);
                    if duplicate(x) {
                        continue;
                    }
                    x.route(routing_key, headers, &mut |d| match d {
                        Dest::Queue(q) => out.push(*q),
                        Dest::Exchange(n) => {
                            if let Some(e) = vh.exchanges.get(n) {
                                stack.push(e)
                            }
                        }
                    });
                }
            }
            if !out.is_empty() {
                break;
            }
            match &x.alternate {
                Some(ae) => name = ae,
                None => break,
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

fn locked(q: &Queue) -> Error {
    Error::new(
        ReplyCode::RESOURCE_LOCKED,
        format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            s(&q.name),
            s(&q.vhost)
        ),
    )
}

/// 405 RESOURCE_LOCKED unless `conn` may use queue `q`.
pub fn check_exclusive(q: &Queue, conn: ConnId) -> Result<(), Error> {
    match q.exclusive_owner {
        Some(owner) if owner != conn => Err(locked(q)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::FieldValue;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::from(v.to_string()))
    }

    fn xspec(name: &str, kind: &str, args: FieldTable) -> ExchangeSpec {
        ExchangeSpec {
            name: Bytes::from(name.to_string()),
            kind: Bytes::from(kind.to_string()),
            passive: false,
            durable: true,
            auto_delete: true,
            internal: true,
            arguments: args,
        }
    }

    fn link_args(max_hops: FieldValue) -> FieldTable {
        let mut a = FieldTable::new();
        a.insert("x-max-hops", max_hops);
        a.insert("x-downstream-name", s("rabbit@down"));
        a.insert("x-downstream-vhost", s("/"));
        a.insert("x-internal-purpose", s("federation"));
        a
    }

    const UP: &str = "federation: fed.x -> rabbit@down A";

    /// What RabbitMQ 3.10's exchange link declares on its upstream is
    /// accepted; what its type refuses is refused with its texts.
    #[test]
    fn federation_upstream_declare() {
        let mut b = Broker::new();
        b.declare_exchange(
            b"/",
            xspec(UP, "x-federation-upstream", link_args(FieldValue::I64(1))),
        )
        .unwrap();
        let x = &b.vhost(b"/").unwrap().exchanges[UP.as_bytes()];
        assert_eq!(x.kind, ExchangeKind::FederationUpstream);
        assert!(x.durable && x.auto_delete && x.internal);
        assert_eq!(x.hops.max_hops, 1);
        assert_eq!(
            b.def_changes.last().map(|c| match c {
                DefChange::PutExchange(d) => d.kind.clone(),
                _ => Bytes::new(),
            }),
            Some(Bytes::from_static(b"x-federation-upstream"))
        );
        // The same again, or with other downstream names: only x-max-hops
        // is compared.
        let mut other = link_args(FieldValue::I64(1));
        other.insert("alternate-exchange", s("ae"));
        other.0.retain(|(k, _)| &k[..] != b"x-downstream-name");
        b.declare_exchange(b"/", xspec(UP, "x-federation-upstream", other))
            .unwrap();
        let e = b
            .declare_exchange(
                b"/",
                xspec(UP, "x-federation-upstream", link_args(FieldValue::I64(2))),
            )
            .unwrap_err();
        assert_eq!(e.code, ReplyCode::PRECONDITION_FAILED);
        assert_eq!(
            e.text,
            "inequivalent arg 'x-max-hops' for exchange 'federation: fed.x -> rabbit@down A' \
             in vhost '/': received '2' but current is '1'"
        );
        let e = b
            .declare_exchange(b"/", xspec(UP, "fanout", link_args(FieldValue::I64(1))))
            .unwrap_err();
        assert_eq!(e.code, ReplyCode::PRECONDITION_FAILED);
        assert!(e
            .text
            .contains("received 'fanout' but current is 'x-federation-upstream'"));
        // A new one needs a long x-max-hops.
        let e = b
            .declare_exchange(
                b"/",
                xspec("u2", "x-federation-upstream", FieldTable::new()),
            )
            .unwrap_err();
        assert_eq!(
            (e.code, &e.text[..]),
            (
                ReplyCode::PRECONDITION_FAILED,
                "Argument x-max-hops missing"
            )
        );
        let e = b
            .declare_exchange(
                b"/",
                xspec("u2", "x-federation-upstream", link_args(FieldValue::I32(1))),
            )
            .unwrap_err();
        assert_eq!(
            (e.code, &e.text[..]),
            (
                ReplyCode::PRECONDITION_FAILED,
                "Argument x-max-hops must be of type long"
            )
        );
        assert!(!b.vhost(b"/").unwrap().exchanges.contains_key(&b"u2"[..]));
    }

    /// The link's topology on the upstream: the federated topic exchange,
    /// bound with the downstream's binding keys (and `x-bound-from`) to the
    /// x-federation-upstream exchange, which is bound to the link's queue.
    #[test]
    fn federation_upstream_topology_routes_and_filters() {
        let mut b = Broker::new();
        let mut fed = xspec("fed.x", "topic", FieldTable::new());
        (fed.auto_delete, fed.internal) = (false, false);
        b.declare_exchange(b"/", fed).unwrap();
        b.declare_exchange(
            b"/",
            xspec(UP, "x-federation-upstream", link_args(FieldValue::I64(1))),
        )
        .unwrap();
        let conn = ConnId { idx: 0, gen: 0 };
        let mut qargs = FieldTable::new();
        qargs.insert("x-internal-purpose", s("federation"));
        let (q, _) = b
            .declare_queue(
                b"/",
                QueueSpec {
                    name: Bytes::from_static(b"federation: fed.x -> rabbit@down"),
                    passive: false,
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: qargs,
                },
                conn,
                0,
            )
            .unwrap();
        b.bind(
            b"/",
            UP.as_bytes(),
            Dest::Queue(q),
            Bytes::new(),
            FieldTable::new(),
        )
        .unwrap();
        let mut bound_from = FieldTable::new();
        let mut info = FieldTable::new();
        info.insert("cluster-name", s("rabbit@down"));
        info.insert("vhost", s("/"));
        info.insert("exchange", s("/:fed.x A"));
        info.insert("hops", FieldValue::I16(1));
        bound_from.insert(
            "x-bound-from",
            FieldValue::Array(vec![FieldValue::Table(info)]),
        );
        let to_up = Dest::Exchange(Bytes::from(UP));
        b.bind(
            b"/",
            b"fed.x",
            to_up,
            Bytes::from_static(b"a.#"),
            bound_from,
        )
        .unwrap();
        let route = |key: &[u8], h: Option<&FieldTable>| {
            let mut out = Vec::new();
            b.route(b"/", b"fed.x", key, h, None, &mut out);
            out
        };
        assert_eq!(route(b"a.b", None), vec![q]);
        assert!(route(b"z.z", None).is_empty());
        // One hop already made, x-max-hops 1: not forwarded.
        let mut hop = FieldTable::new();
        hop.insert("uri", s("amqp://elsewhere"));
        hop.insert("cluster-name", s("other"));
        hop.insert("vhost", s("/"));
        let mut h = FieldTable::new();
        h.insert(
            "x-received-from",
            FieldValue::Array(vec![FieldValue::Table(hop)]),
        );
        assert!(route(b"a.b", Some(&h)).is_empty());
        // Other headers do not matter.
        let mut plain = FieldTable::new();
        plain.insert("x-other", s("v"));
        assert_eq!(route(b"a.b", Some(&plain)), vec![q]);
        // Publishing to it directly is refused: it is internal.
        assert_eq!(
            b.check_publish(b"/", UP.as_bytes()).unwrap_err().code,
            ReplyCode::ACCESS_REFUSED
        );
    }
}
