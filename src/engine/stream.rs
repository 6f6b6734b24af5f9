//! Streams in the engine: a stream queue's log is opened when the queue is
//! declared or restored (`data_dir/streams/<store id>/`, or in memory
//! without a data directory), publishing appends to it, the group commit
//! writes and syncs what the turn appended (one chunk) and then wakes the
//! stream's readers; deleting the queue deletes its log.

use std::io;

use log::error;

use super::Engine;
use crate::broker::args::QueueArgs;
use crate::broker::message::Message;
use crate::broker::stream::{filter_value, Stream};
use crate::broker::QueueId;
use crate::codec::ContentHeader;
use crate::store::stream::{Limits, StreamLog, DEFAULT_SEGMENT};

/// A stream's limits from its effective arguments.
pub(crate) fn limits_of(args: &QueueArgs) -> Limits {
    Limits {
        max_segment: args.max_segment.unwrap_or(DEFAULT_SEGMENT),
        max_bytes: args.max_length_bytes,
        max_age: args.max_age,
    }
}

impl Engine {
    /// Open the log of stream queue `q` (just declared or restored).
    pub(crate) fn open_stream(&mut self, q: QueueId) -> io::Result<()> {
        let dir = self.config.data_dir.clone();
        let faults = self.config.faults.clone();
        let Some(queue) = self.broker.queue_mut(q) else {
            return Ok(());
        };
        if !queue.args.stream || queue.stream.is_some() {
            return Ok(());
        }
        let limits = limits_of(&queue.args);
        let dir = match (dir, queue.store_id) {
            (Some(d), Some(sid)) => Some(d.join("streams").join(sid.to_string())),
            _ => None,
        };
        // Retention is not applied here: as RabbitMQ, only when a segment
        // rolls over (a restart drops nothing).
        let log = StreamLog::open(dir, faults, limits)?;
        queue.stream = Some(Box::new(Stream::new(log)));
        Ok(())
    }

    /// Append `msg` to stream queue `q`; true if it was (the queue is a
    /// stream). It is readable, and confirmed, after the turn's commit.
    pub(crate) fn stream_append(&mut self, q: QueueId, msg: &Message) -> bool {
        let now = self.wall_ms();
        let Some(queue) = self.broker.queue_mut(q) else {
            return false;
        };
        let Some(stream) = queue.stream.as_deref_mut() else {
            return false;
        };
        let filter = if super::publish::has_headers(&msg.header) {
            ContentHeader::decode(&msg.header)
                .ok()
                .and_then(|h| filter_value(h.properties.headers.as_ref()))
        } else {
            None
        };
        stream.log.append(
            now,
            filter.as_deref(),
            &msg.exchange,
            &msg.routing_key,
            &msg.header,
            &msg.body,
        );
        queue.stats.publish += 1;
        if !self.streams_pending.contains(&q) {
            self.streams_pending.push(q);
        }
        self.force_sync = true;
        true
    }

    /// Write and sync what this turn appended to streams; their readers
    /// may read it now. The first error is returned (what failed is
    /// written again by the next commit).
    pub(crate) fn commit_streams(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        let pending = std::mem::take(&mut self.streams_pending);
        for &q in &pending {
            let Some(queue) = self.broker.queue_mut(q) else {
                continue;
            };
            let Some(stream) = queue.stream.as_deref_mut() else {
                continue;
            };
            match stream.log.commit() {
                Ok(true) => {
                    for &key in stream.readers.keys() {
                        queue.consumers.unblock(key);
                    }
                    self.stream_woke = true;
                    self.mark_queue(q);
                }
                Ok(false) => {}
                Err(e) => {
                    error!(
                        "stream '{}': cannot write: {e}",
                        String::from_utf8_lossy(&queue.name)
                    );
                    if result.is_ok() {
                        result = Err(e);
                    }
                    if !self.streams_pending.contains(&q) {
                        self.streams_pending.push(q);
                    }
                }
            }
        }
        result
    }

    /// A reader of stream `q` (consumer key `key`) stopped passing over
    /// filtered-out messages for this turn: it goes on next turn.
    pub(crate) fn resume_reader(&mut self, q: QueueId, key: u32) {
        self.stream_resume.push((q, key));
        let now = self.clock.now;
        self.wake_at(now);
    }

    /// Readers that stopped for the turn (see [`Engine::resume_reader`])
    /// go on.
    pub(crate) fn resume_readers(&mut self) {
        for (q, key) in std::mem::take(&mut self.stream_resume) {
            self.unblock_consumer(q, key);
        }
    }

    /// Streams got new readable messages since the last call: their
    /// readers should be dispatched again this turn.
    pub(crate) fn take_stream_wakeup(&mut self) -> bool {
        std::mem::take(&mut self.stream_woke)
    }
}
