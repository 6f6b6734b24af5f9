//! basic.publish into the engine: the connection's permission checks, the
//! engine's publish action (or a direct reply-to delivery), basic.return
//! for an unroutable mandatory message, and publisher confirms.

use bytes::Bytes;

use super::{Connection, Core};
use crate::broker::auth::Access;
use crate::broker::message::Message;
use crate::broker::ConnId;
use crate::codec::{BasicAck, BasicNack, BasicReturn, ConnectionBlocked, Error, ReplyCode};
use crate::engine::Routed;

impl Core {
    /// Route a complete message and queue it (or return it). Persistent
    /// messages for durable queues are appended to the store; their confirm
    /// waits for the end-of-turn sync.
    pub(crate) fn publish(
        &mut self,
        id: ConnId,
        ch: u16,
        mut msg: Message,
        mandatory: bool,
    ) -> Result<(), Error> {
        self.rewrite_reply_to(id, ch, &mut msg)?;
        let (blocked, disk_alarm) = (self.engine.alarms.blocked, self.engine.alarms.disk_alarm);
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let vhost = c.vhost.clone();
        if !c.published {
            c.published = true;
            if blocked && c.cap_blocked {
                let reason = crate::engine::blocked_reason(disk_alarm);
                c.outbox.method(
                    0,
                    &ConnectionBlocked {
                        reason: Bytes::from_static(reason.as_bytes()),
                    }
                    .into(),
                );
            }
        }
        // The write permission is checked once per exchange a connection
        // publishes to in a row (a pattern, look-around and all, per publish
        // would cost more than the rest of the publish).
        if self
            .conn(id)
            .is_none_or(|c| c.write_ok.as_ref() != Some(&msg.exchange))
        {
            self.check_access(id, Access::Write, "exchange", &msg.exchange)?;
            if let Some(c) = self.conn_mut(id) {
                c.write_ok = Some(msg.exchange.clone());
            }
        }
        self.check_topic(id, Access::Write, &vhost, &msg.exchange, &msg.routing_key)?;
        let r = self.publish_message(&vhost, msg, mandatory)?;
        if let Some(msg) = r.returned {
            if let Some(c) = self.conn_mut(id) {
                let ret = BasicReturn {
                    reply_code: ReplyCode::NO_ROUTE,
                    reply_text: Bytes::from_static(b"NO_ROUTE"),
                    exchange: msg.exchange.clone(),
                    routing_key: msg.routing_key.clone(),
                };
                c.outbox.method(ch, &ret.into());
                c.outbox.content(ch, &msg.header, &msg.body, c.frame_max);
            }
        }
        if r.stored {
            self.wait_for_sync(id, ch);
        }
        let rejected = r.rejected;
        let waiting = self
            .conn(id)
            .and_then(|c| c.channel(ch))
            .is_some_and(|c| c.confirm && c.waiting_sync);
        if rejected && waiting {
            // A nack must not overtake the acks that wait for the sync.
            self.sync_now();
        }
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let Connection {
            channels, outbox, ..
        } = c;
        if let Some(chan) = channels.get_mut(ch) {
            if chan.confirm {
                chan.publish_seq += 1;
                if rejected {
                    // Confirms go out in order: ack what precedes, then nack this one.
                    if chan.confirm_ready > chan.confirm_sent {
                        let ack = BasicAck {
                            delivery_tag: chan.confirm_ready,
                            multiple: chan.confirm_ready - chan.confirm_sent > 1,
                        };
                        outbox.method(ch, &ack.into());
                    }
                    let nack = BasicNack {
                        delivery_tag: chan.publish_seq,
                        multiple: false,
                        requeue: false,
                    };
                    outbox.method(ch, &nack.into());
                    chan.confirm_sent = chan.publish_seq;
                    chan.confirm_ready = chan.publish_seq;
                } else if chan.waiting_sync {
                    chan.confirm_after_sync = chan.publish_seq;
                } else {
                    chan.confirm_ready = chan.publish_seq;
                }
            }
        }
        Ok(())
    }

    /// The publish action as every AMQP-side caller takes it (basic.publish,
    /// the management API): a reply to a direct reply-to address goes
    /// straight to the requester's channel; anything else goes through the
    /// engine's publish (routing incl. CC/BCC and alternate exchanges,
    /// queues, store).
    pub fn publish_message(
        &mut self,
        vhost: &[u8],
        msg: Message,
        mandatory: bool,
    ) -> Result<Routed, Error> {
        let direct = msg.exchange.is_empty()
            && msg.routing_key.starts_with(super::reply_to::REPLY_PREFIX)
            && self
                .engine
                .broker
                .check_publish(vhost, &msg.exchange)
                .is_ok()
            && self.deliver_reply(&msg);
        if direct {
            self.engine.counters.publish += 1;
            return Ok(Routed {
                routed: true,
                ..Routed::default()
            });
        }
        self.engine.publish(vhost, msg, mandatory)
    }
}
