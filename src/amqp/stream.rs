//! Stream queues over AMQP 0-9-1, with RabbitMQ 3.10's rules and texts:
//! basic.consume needs a consumer prefetch and manual acks and attaches a
//! reader where `x-stream-offset` says; the dispatch pass reads each
//! consumer's next messages from the log while it has credit, each with
//! `x-stream-offset` in its headers; acknowledgements give credit back.
//! basic.get, queue.purge and basic.nack / basic.reject are refused as
//! RabbitMQ refuses them (540, closing the connection).

use bytes::Bytes;
use log::error;

use super::channel::Unacked;
use super::dispatch::lossy;
use super::{ConnState, Connection, Core};
use crate::broker::message::QueuedMsg;
use crate::broker::stream::{attach_point, filter_of, header_with_offset, Reader};
use crate::broker::{ConnId, QueueId};
use crate::codec::outbox::COPY_THRESHOLD;
use crate::codec::{BasicConsume, Error, FieldTable, FieldValue, ReplyCode};
use crate::store::stream::Attach;

/// Records a reader may pass over (filtered out) in one dispatch pass
/// before the loop moves on; it goes on in the next turn.
const SKIP_BUDGET: usize = 100_000;

/// `queue 'Q' in vhost 'V'`, as RabbitMQ names a queue in its texts.
fn rs(name: &[u8], vhost: &[u8]) -> String {
    format!("queue '{}' in vhost '{}'", lossy(name), lossy(vhost))
}

/// 540 for `what` on stream `name`.
pub(super) fn not_supported(what: &str, name: &[u8], vhost: &[u8]) -> Error {
    Error::new(
        ReplyCode::NOT_IMPLEMENTED,
        format!("{what} not supported by stream queues {}", rs(name, vhost)),
    )
}

/// The 406 RabbitMQ gives for an `x-stream-offset` it cannot read.
fn bad_offset(v: &FieldValue) -> String {
    let shown = match v {
        FieldValue::LongStr(s) | FieldValue::Bytes(s) => {
            format!("{{longstr,<<\"{}\">>}}", lossy(s))
        }
        other => format!(
            "{{{},{}}}",
            crate::broker::args::type_name(other),
            other
                .as_i64()
                .map_or_else(|| format!("{other:?}"), |n| n.to_string())
        ),
    };
    format!("{{invalid_stream_offset_arg,{shown}}}")
}

impl Core {
    /// The name and vhost of `q` if it is a stream.
    pub(super) fn stream_name(&self, q: QueueId) -> Option<(Bytes, Bytes)> {
        self.engine
            .broker
            .queue(q)
            .filter(|x| x.stream.is_some())
            .map(|x| (x.name.clone(), x.vhost.clone()))
    }

    /// basic.consume's checks for queue `q`, in RabbitMQ's order; for a
    /// stream, where its reader attaches (and the filter).
    pub(super) fn stream_consume_checks(
        &mut self,
        id: ConnId,
        ch: u16,
        q: QueueId,
        bc: &BasicConsume,
    ) -> Result<Option<Reader>, Error> {
        let args = &bc.arguments;
        let Some((name, vhost)) = self.stream_name(q) else {
            if args.get("x-stream-offset").is_some() {
                let (name, vhost) = self
                    .engine
                    .broker
                    .queue(q)
                    .map(|x| (x.name.clone(), x.vhost.clone()))
                    .unwrap_or_default();
                return Err(Error::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "invalid arg 'x-stream-offset' for {} of queue type rabbit_classic_queue",
                        rs(&name, &vhost)
                    ),
                ));
            }
            return Ok(None);
        };
        for k in ["x-priority", "x-cancel-on-ha-failover"] {
            if args.get(k).is_some() {
                return Err(Error::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "invalid arg '{k}' for {} of queue type rabbit_stream_queue",
                        rs(&name, &vhost)
                    ),
                ));
            }
        }
        let prefetch = self.chan(id, ch).map_or(0, |c| c.prefetch_count);
        if prefetch == 0 {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "consumer prefetch count is not set for '{}'",
                    rs(&name, &vhost)
                ),
            ));
        }
        if bc.no_ack {
            return Err(not_supported("automatic acknowledgement", &name, &vhost));
        }
        let at = self.attach_of(args, &name, &vhost)?;
        let (filter, match_unfiltered) =
            filter_of(args).map_err(|t| Error::new(ReplyCode::PRECONDITION_FAILED, t))?;
        let Some(stream) = self
            .engine
            .broker
            .queue_mut(q)
            .and_then(|x| x.stream.as_deref_mut())
        else {
            return Ok(None);
        };
        let min_offset = match at {
            Attach::Offset(n) => n,
            _ => 0,
        };
        Ok(Some(Reader {
            cursor: stream.log.attach(at),
            filter,
            match_unfiltered,
            min_offset,
        }))
    }

    fn attach_of(&self, args: &FieldTable, name: &[u8], vhost: &[u8]) -> Result<Attach, Error> {
        let now = self.engine.wall_ms();
        attach_point(args, now).map_err(|_| {
            let v = args
                .get("x-stream-offset")
                .cloned()
                .unwrap_or(FieldValue::Void);
            Error::new(
                ReplyCode::PRECONDITION_FAILED,
                format!(
                    "invalid arg 'x-stream-offset' for {}: {}",
                    rs(name, vhost),
                    bad_offset(&v)
                ),
            )
        })
    }

    /// The consumer `tag` on channel `ch` was just added to stream `q`:
    /// give it its reader.
    pub(super) fn attach_reader(&mut self, id: ConnId, ch: u16, q: QueueId, tag: &[u8], r: Reader) {
        let Some(key) = self
            .chan(id, ch)
            .and_then(|c| c.consumers.key_of(tag).and_then(|s| c.consumers.get(s)))
            .map(|k| k.qkey)
        else {
            return;
        };
        if let Some(s) = self
            .engine
            .broker
            .queue_mut(q)
            .and_then(|x| x.stream.as_deref_mut())
        {
            s.readers.insert(key, r);
        }
        self.engine.mark_queue(q);
    }

    /// Hand stream `qid`'s messages to its consumers: each reads the log
    /// from its own position while it has credit; one that has read
    /// everything waits (blocked) until the next commit wakes it.
    pub(super) fn dispatch_stream(&mut self, qid: QueueId) {
        let Core {
            engine,
            conns,
            flush_list,
            stream_header,
            ..
        } = self;
        let max_outbox = engine.config.max_outbox;
        let stamp = engine.stamp();
        let Some(queue) = engine.broker.queue_mut(qid) else {
            return;
        };
        let crate::broker::queue::Queue {
            consumers,
            stream,
            unacked,
            stats,
            ..
        } = queue;
        let Some(stream) = stream.as_deref_mut() else {
            return;
        };
        let mut skipped = 0usize;
        let mut delivered = 0u64;
        let mut resume = None;
        while let Some(key) = consumers.next_active() {
            let Some(r) = consumers.get(key) else {
                break;
            };
            let c = conns
                .get_mut(r.conn.idx as usize)
                .filter(|c| c.id == r.conn && c.state == ConnState::Running);
            let Some(c) = c else {
                consumers.block(key);
                continue;
            };
            if !super::deliver::has_room(c, r, qid, key, max_outbox) {
                consumers.block(key);
                continue;
            }
            let Some(reader) = stream.readers.get_mut(&key) else {
                consumers.block(key);
                continue;
            };
            // Its next message, past those its filter or its starting
            // offset leave out.
            let rec = loop {
                match stream.log.read(&mut reader.cursor) {
                    Ok(Some(rec)) => {
                        if rec.offset >= reader.min_offset && reader.wants(rec.filter()) {
                            break Some(rec);
                        }
                        skipped += 1;
                        if skipped >= SKIP_BUDGET {
                            break None;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => {
                        error!("stream '{}': cannot read: {e}", lossy(&r.tag));
                        break None;
                    }
                }
            };
            let Some(rec) = rec else {
                consumers.block(key);
                if skipped >= SKIP_BUDGET {
                    // More to pass over: again next turn.
                    resume = Some(key);
                    break;
                }
                continue;
            };
            let (channel, slot) = (r.channel, r.slot);
            let ctag = r.tag.clone();
            consumers.delivered(key);
            let frame_max = c.frame_max;
            let Connection {
                channels, outbox, ..
            } = &mut *c;
            let Some(chan) = channels.get_mut(channel) else {
                continue;
            };
            chan.last_tag += 1;
            let tag = chan.last_tag;
            outbox.deliver(
                channel,
                &ctag,
                tag,
                false,
                rec.exchange(),
                rec.routing_key(),
            );
            let header = if header_with_offset(rec.header(), rec.offset, stream_header) {
                &stream_header[..]
            } else {
                rec.header()
            };
            // A small body is copied into the output; a large one goes
            // out as a slice of the reader's block, uncopied.
            if rec.body().len() < COPY_THRESHOLD {
                outbox.content_copied(channel, header, rec.body(), frame_max);
            } else {
                outbox.content(channel, header, &rec.body_bytes(), frame_max);
            }
            *unacked += 1;
            delivered += 1;
            chan.hold(Unacked {
                tag,
                queue: qid,
                msg: QueuedMsg::marker(rec.offset),
                consumer: Some(ctag),
                consumer_slot: slot,
                at: stamp,
            });
            c.flush_later(flush_list);
        }
        stats.deliver += delivered;
        engine.counters.deliver += delivered;
        if let Some(key) = resume {
            engine.resume_reader(qid, key);
        }
    }
}
