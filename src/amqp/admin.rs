//! Operator actions that reach AMQP connections (the management API and
//! `warren ctl`): deleting a vhost or a user closes its connections with
//! 320 CONNECTION_FORCED before the engine deletes it; closing one
//! connection; a connection's name.

use std::time::Instant;

#[cfg(any(test, feature = "testing"))]
use bytes::Bytes;

use super::Core;
use crate::broker::{ConnId, QueueId};
use crate::codec::{Error, ReplyCode};

impl Core {
    /// Delete a virtual host: close its connections (320), then delete its
    /// queues and their messages and the permissions on it. False if it did
    /// not exist.
    pub fn delete_vhost(&mut self, name: &str, now: Instant) -> bool {
        if self.engine.broker.vhost(name.as_bytes()).is_none() {
            return false;
        }
        let reason = format!("vhost '{name}' is deleted");
        self.close_where(|c| c.vhost == name.as_bytes(), &reason, now);
        let gone = self.engine.delete_vhost(name);
        self.run_dispatch();
        gone
    }

    /// Delete a user and its permissions, and close its connections (320).
    pub fn delete_user(&mut self, name: &str, now: Instant) -> bool {
        if !self.engine.delete_user(name) {
            return false;
        }
        let reason = format!("user '{name}' is deleted");
        self.close_where(|c| c.user == name.as_bytes(), &reason, now);
        true
    }

    /// Delete a queue and tell its consumers (basic.cancel for clients that
    /// announced consumer_cancel_notify). Returns the ready messages dropped.
    pub fn delete_queue(&mut self, q: QueueId) -> u32 {
        let n = self.engine.delete_queue(q);
        self.tell_cancelled();
        n
    }

    /// Close every connection `which` selects with 320 CONNECTION_FORCED.
    fn close_where(
        &mut self,
        which: impl Fn(&super::Connection) -> bool,
        reason: &str,
        now: Instant,
    ) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| which(c))
            .map(|(_, c)| c.id)
            .collect();
        for id in ids {
            self.close_connection(id, reason, now);
        }
    }

    /// Close a connection with 320 CONNECTION_FORCED and the given reason.
    pub fn close_connection(&mut self, id: ConnId, reason: &str, now: Instant) {
        let e = Error::new(ReplyCode::CONNECTION_FORCED, reason.to_string());
        self.connection_error(id, e, now);
    }

    #[cfg(any(test, feature = "testing"))]
    /// A connection's name as the management API shows it: its peer
    /// address (see [`super::Connection::name`]).
    pub fn connection_name(&self, id: ConnId) -> Option<Bytes> {
        self.conn(id).map(|c| Bytes::from(c.name()))
    }
}
