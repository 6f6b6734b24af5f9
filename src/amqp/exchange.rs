//! AMQP class `exchange`: declare, delete, bind, unbind, each the engine's
//! action behind this connection's permission checks.

use bytes::Bytes;

use super::dispatch::not_on_channel;
use super::Core;
use crate::broker::auth::Access;
use crate::broker::exchange::Dest;
use crate::broker::{ConnId, ExchangeSpec};
use crate::codec::*;

impl Core {
    /// exchange.* on an open channel.
    pub(super) fn exchange_method(
        &mut self,
        id: ConnId,
        ch: u16,
        vhost: Bytes,
        m: Method,
    ) -> Result<(), Error> {
        match m {
            Method::ExchangeDeclare(d) => {
                if !d.passive {
                    self.check_access(id, Access::Configure, "exchange", &d.exchange)?;
                    if let Some(ae) = d
                        .arguments
                        .get("alternate-exchange")
                        .and_then(|v| v.as_bytes())
                    {
                        self.check_access(id, Access::Write, "exchange", ae)?;
                        self.check_access(id, Access::Read, "exchange", &d.exchange)?;
                    }
                }
                let nowait = d.nowait;
                self.engine.declare_exchange(
                    &vhost,
                    ExchangeSpec {
                        name: d.exchange,
                        kind: d.kind,
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    },
                )?;
                if !nowait {
                    self.reply(id, ch, ExchangeDeclareOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeDelete(d) => {
                self.check_access(id, Access::Configure, "exchange", &d.exchange)?;
                self.engine
                    .delete_exchange(&vhost, &d.exchange, d.if_unused)?;
                if !d.nowait {
                    self.reply(id, ch, ExchangeDeleteOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeBind(b) => {
                let binding = (b.source, b.destination, b.routing_key, b.arguments);
                self.exchange_binding(id, &vhost, true, binding)?;
                if !b.nowait {
                    self.reply(id, ch, ExchangeBindOk {}.into());
                }
                Ok(())
            }
            Method::ExchangeUnbind(b) => {
                let binding = (b.source, b.destination, b.routing_key, b.arguments);
                self.exchange_binding(id, &vhost, false, binding)?;
                if !b.nowait {
                    self.reply(id, ch, ExchangeUnbindOk {}.into());
                }
                Ok(())
            }
            m => Err(not_on_channel(&m)),
        }
    }

    /// exchange.bind (`bind`) or exchange.unbind of (source, destination,
    /// routing key, arguments): write on the destination, read on the
    /// source (and its topic permission), as RabbitMQ checks them.
    fn exchange_binding(
        &mut self,
        id: ConnId,
        vhost: &Bytes,
        bind: bool,
        (source, destination, key, arguments): (Bytes, Bytes, Bytes, FieldTable),
    ) -> Result<(), Error> {
        self.check_access(id, Access::Write, "exchange", &destination)?;
        self.check_access(id, Access::Read, "exchange", &source)?;
        self.check_topic(id, Access::Read, vhost, &source, &key)?;
        let dest = Dest::Exchange(destination);
        match bind {
            true => self.engine.bind(vhost, &source, dest, key, arguments),
            false => self.engine.unbind(vhost, &source, dest, key, arguments),
        }
    }
}
