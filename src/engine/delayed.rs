//! `x-delayed-message` exchanges in the engine: a message with a positive
//! `x-delay` is held (`crate::store::delayed`) instead of routed, and
//! routed when its time comes as the exchange's `x-delayed-type` routes,
//! with the bindings (and alternate exchange) of that moment, its
//! `x-delay` header negated. As with the plugin, a held message counts as
//! unroutable at publish time: `mandatory` returns it at once (312
//! NO_ROUTE) although it is routed later; a publisher confirm comes at
//! publish time (after the group commit has its record on disk when it is
//! persistent). Unroutable when its time comes, it is dropped (or goes to
//! the alternate exchange); the exchange deleted meanwhile, it is dropped.

use std::time::Duration;

use bytes::BytesMut;

use super::{Engine, Routed};
use crate::broker::delayed::{delay_of, DELAY_HEADER};
use crate::broker::exchange::ExchangeKind;
use crate::broker::message::Message;
use crate::codec::{ContentHeader, Error, FieldTable, FieldValue, ReplyCode};
use crate::store::delayed::Held;

impl Engine {
    /// Hold `msg` if it was published to an `x-delayed-message` exchange
    /// with a delay: the outcome of the publish then (None: route it now).
    /// A non-numeric string delay is 541 INTERNAL_ERROR, the plugin's
    /// channel crash as its client sees it.
    pub(crate) fn hold_delayed(
        &mut self,
        vhost: &[u8],
        msg: &Message,
        headers: &FieldTable,
        mandatory: bool,
    ) -> Result<Option<Routed>, Error> {
        let delayed = self
            .broker
            .vhosts
            .get(vhost)
            .and_then(|v| v.exchanges.get(&msg.exchange))
            .is_some_and(|x| x.kind == ExchangeKind::Delayed);
        if !delayed {
            return Ok(None);
        }
        let Some(delay) =
            delay_of(Some(headers)).map_err(|()| Error::new(ReplyCode::INTERNAL_ERROR, ""))?
        else {
            return Ok(None);
        };
        let due = self.wall_ms() + delay;
        let held = Held {
            vhost: bytes::Bytes::copy_from_slice(vhost),
            delay: u32::try_from(delay).unwrap_or(u32::MAX),
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            header: msg.header.clone(),
            body: msg.body.clone(),
            persistent: msg.persistent,
            priority: msg.priority,
            ttl: msg.ttl,
        };
        let on_disk = self.delayed.hold(due, held);
        let at = self.clock.now + Duration::from_millis(delay);
        self.wake_at(at);
        self.counters.return_unroutable += u64::from(mandatory);
        Ok(Some(Routed {
            routed: false,
            rejected: false,
            stored: on_disk && msg.persistent,
            returned: mandatory.then(|| msg.clone()),
        }))
    }

    /// Route the held messages whose time has come, in due order (at most
    /// [`super::LEAVE_BATCH`] in one call; the rest in the next turn).
    pub(crate) fn run_delayed(&mut self) {
        if self.delayed.is_idle() {
            return;
        }
        let now_ms = self.wall_ms();
        self.delayed.read_ahead(now_ms);
        for _ in 0..super::LEAVE_BATCH {
            let Some(h) = self.delayed.take_due(now_ms) else {
                return;
            };
            self.route_held(h);
        }
        let now = self.clock.now;
        self.wake_at(now);
    }

    /// Messages held by `x-delayed-message` exchanges.
    pub fn delayed_pending(&self) -> u64 {
        self.delayed.pending()
    }

    /// When the next held message is due (or a bucket is to be read).
    pub(crate) fn next_delayed(&self) -> Option<std::time::Instant> {
        let due = self.delayed.next_due()?;
        let ms = due.saturating_sub(self.wall_ms());
        Some(self.clock.now + Duration::from_millis(ms))
    }

    /// Route one held message now.
    fn route_held(&mut self, h: Held) {
        let mut msg = Message::new(h.exchange, h.routing_key, h.header, h.body, h.persistent);
        msg.priority = h.priority;
        msg.ttl = h.ttl;
        // x-delay becomes the negated delay, as the plugin does, so that
        // an exchange further on does not hold it again.
        let mut headers = None;
        if let Ok(mut ch) = ContentHeader::decode(&msg.header) {
            if let Some(t) = ch.properties.headers.as_mut() {
                let neg = -i64::from(h.delay);
                let v = i32::try_from(neg).map_or(FieldValue::I64(neg), FieldValue::I32);
                t.insert(DELAY_HEADER, v);
                let mut buf = BytesMut::new();
                ch.encode(&mut buf);
                msg.header = buf.freeze();
            }
            headers = ch.properties.headers;
        }
        let mut out = std::mem::take(&mut self.route_scratch);
        self.route_message(&h.vhost, &mut msg, headers.as_ref(), &mut out);
        if out.is_empty() {
            self.counters.drop_unroutable += 1;
        } else {
            let _ = self.enqueue(msg, &out);
        }
        self.route_scratch = out;
    }
}
