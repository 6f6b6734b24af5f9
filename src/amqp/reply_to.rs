//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ implements it for
//! RPC clients: a requester consumes from the pseudo-queue in no-ack mode;
//! its requests' `reply_to` is rewritten to a name that identifies its
//! channel; a reply published to that name on the default exchange is handed
//! straight to the requester's channel, bypassing queues.

use bytes::{Bytes, BytesMut};

use crate::amqp::Core;
use crate::broker::message::Message;
use crate::broker::ConnId;
use crate::codec::{BasicConsumeOk, ContentHeader, Error, ReplyCode};

/// The pseudo-queue's name.
pub const REPLY_TO: &[u8] = b"amq.rabbitmq.reply-to";
/// Prefix of the per-channel reply addresses.
pub const REPLY_PREFIX: &[u8] = b"amq.rabbitmq.reply-to.";

/// True when the raw content header has the `reply-to` property.
fn has_reply_to(header: &[u8]) -> bool {
    header.get(12).is_some_and(|f| f & 0x02 != 0)
}

fn address(id: ConnId, ch: u16) -> Bytes {
    Bytes::from(format!(
        "amq.rabbitmq.reply-to.{}.{}.{}",
        id.idx, id.gen, ch
    ))
}

fn parse_address(rk: &[u8]) -> Option<(ConnId, u16)> {
    let rest = std::str::from_utf8(rk.strip_prefix(REPLY_PREFIX)?).ok()?;
    let mut it = rest.split('.');
    let idx = it.next()?.parse().ok()?;
    let gen = it.next()?.parse().ok()?;
    let ch = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((ConnId { idx, gen }, ch))
}

impl Core {
    /// basic.consume on `amq.rabbitmq.reply-to`.
    pub(crate) fn consume_reply_to(
        &mut self,
        id: ConnId,
        ch: u16,
        tag: Bytes,
        no_ack: bool,
        nowait: bool,
    ) -> Result<(), Error> {
        if !no_ack {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                "reply consumer cannot acknowledge",
            ));
        }
        let Some(chan) = self.conn_mut(id).and_then(|c| c.channel_mut(ch)) else {
            return Ok(());
        };
        if chan.reply_consumer.is_some() {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                "reply consumer already set",
            ));
        }
        chan.reply_consumer = Some(tag.clone());
        if !nowait {
            if let Some(c) = self.conn_mut(id) {
                c.outbox
                    .method(ch, &BasicConsumeOk { consumer_tag: tag }.into());
            }
        }
        Ok(())
    }

    /// A request whose `reply_to` is the pseudo-queue gets the channel's
    /// reply address instead (406 if the channel is not consuming replies).
    pub(crate) fn rewrite_reply_to(
        &mut self,
        id: ConnId,
        ch: u16,
        msg: &mut Message,
    ) -> Result<(), Error> {
        if !has_reply_to(&msg.header) {
            return Ok(());
        }
        let Ok(mut h) = ContentHeader::decode(&msg.header) else {
            return Ok(());
        };
        if h.properties.reply_to.as_deref() != Some(REPLY_TO) {
            return Ok(());
        }
        let consuming = self
            .conn(id)
            .and_then(|c| c.channel(ch))
            .is_some_and(|c| c.reply_consumer.is_some());
        if !consuming {
            return Err(Error::new(
                ReplyCode::PRECONDITION_FAILED,
                "fast reply consumer does not exist",
            ));
        }
        h.properties.reply_to = Some(address(id, ch));
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        msg.header = buf.freeze();
        Ok(())
    }

    /// A reply to a reply address: deliver it to the requester's channel.
    /// Returns false when nobody is there (the reply is unroutable).
    pub(crate) fn deliver_reply(&mut self, msg: &Message) -> bool {
        let Some((id, ch)) = parse_address(&msg.routing_key) else {
            return false;
        };
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        let frame_max = c.frame_max;
        let crate::amqp::Connection {
            channels, outbox, ..
        } = c;
        let Some(chan) = channels.get_mut(ch) else {
            return false;
        };
        let Some(tag) = chan.reply_consumer.clone() else {
            return false;
        };
        chan.last_tag += 1;
        outbox.deliver(
            ch,
            &tag,
            chan.last_tag,
            false,
            &msg.exchange,
            &msg.routing_key,
        );
        outbox.content(ch, &msg.header, &msg.body, frame_max);
        self.mark_flush(id);
        true
    }
}
