//! Operator actions on the running broker (used by the management API and
//! `warren ctl`): virtual hosts, users, permissions, and closing connections.
//! Every change to durable state is recorded for the definitions log.

use bytes::Bytes;
use log::info;

use super::Engine;
use crate::broker::auth::{hash_password, Permission, TopicPermission, User};
use crate::broker::exchange::Dest;
use crate::broker::{ConnId, ExchangeSpec, QueueId, QueueSpec};
use crate::codec::{Error, ReplyCode};
use crate::store::definitions::DefChange;

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Engine {
    /// Create a virtual host (no-op if it exists).
    pub fn add_vhost(&mut self, name: &str) {
        if self.broker.vhost(name.as_bytes()).is_none() {
            self.broker.add_vhost(name.as_bytes());
            self.broker
                .def_changes
                .push(DefChange::AddVhost(Bytes::copy_from_slice(name.as_bytes())));
            info!("added vhost '{name}'");
        }
    }

    /// Delete a virtual host: its queues and their messages, and the
    /// permissions on it (the front doors close its connections first).
    /// False if it did not exist.
    pub fn delete_vhost(&mut self, name: &str) -> bool {
        if self.broker.vhost(name.as_bytes()).is_none() {
            return false;
        }
        let queues: Vec<_> = self
            .broker
            .queues
            .iter()
            .filter(|(_, q)| q.vhost == name.as_bytes())
            .map(|(_, q)| q.id)
            .collect();
        for q in queues {
            self.delete_queue(q);
        }
        self.broker.vhosts.remove(name.as_bytes());
        self.forget_vhost_runtime(name);
        self.broker.auth.permissions.retain(|(_, v), _| v != name);
        self.broker
            .auth
            .topic_permissions
            .retain(|(_, v, _), _| v != name);
        self.broker
            .def_changes
            .push(DefChange::DelVhost(Bytes::copy_from_slice(name.as_bytes())));
        info!("deleted vhost '{name}'");
        true
    }

    /// Create or update a user. `password_hash` wins over `password` when both
    /// are given (definitions import); neither keeps an existing hash. Fails,
    /// changing nothing, when a password cannot be hashed (no random salt).
    pub fn put_user(
        &mut self,
        name: &str,
        password: Option<&str>,
        password_hash: Option<&str>,
        tags: Vec<String>,
    ) -> Result<(), String> {
        let hash = match (password_hash, password) {
            (Some(h), _) => h.to_string(),
            (None, Some(p)) => hash_password(p.as_bytes())?,
            (None, None) => self
                .broker
                .auth
                .users
                .get(name)
                .map(|u| u.password_hash.clone())
                .unwrap_or_default(),
        };
        self.broker.auth.users.insert(
            name.to_string(),
            User {
                name: name.to_string(),
                password_hash: hash,
                tags,
            },
        );
        self.broker.def_changes.push(DefChange::Auth);
        Ok(())
    }

    /// Delete a user and its permissions (the front doors close its
    /// connections). False if it did not exist.
    pub fn delete_user(&mut self, name: &str) -> bool {
        if self.broker.auth.users.remove(name).is_none() {
            return false;
        }
        self.broker.auth.permissions.retain(|(u, _), _| u != name);
        self.broker
            .auth
            .topic_permissions
            .retain(|(u, _, _), _| u != name);
        self.broker.def_changes.push(DefChange::Auth);
        self.forget_user_runtime(name);
        true
    }

    /// Set a user's permissions in a vhost.
    pub fn set_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), String> {
        if !self.broker.auth.users.contains_key(user) {
            return Err(format!("no user '{user}'"));
        }
        if self.broker.vhost(vhost.as_bytes()).is_none() {
            return Err(format!("no vhost '{vhost}'"));
        }
        let p = Permission::new(configure, write, read)?;
        self.broker.auth.set_permission(user, vhost, p);
        self.broker.def_changes.push(DefChange::Auth);
        Ok(())
    }

    /// Remove a user's permissions in a vhost.
    pub fn clear_permissions(&mut self, user: &str, vhost: &str) -> bool {
        let gone = self
            .broker
            .auth
            .permissions
            .remove(&(user.to_string(), vhost.to_string()))
            .is_some();
        if gone {
            self.broker.def_changes.push(DefChange::Auth);
        }
        gone
    }

    /// Set a user's topic permission on an exchange of a vhost.
    pub fn set_topic_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), String> {
        if !self.broker.auth.users.contains_key(user) {
            return Err(format!("no user '{user}'"));
        }
        if self.broker.vhost(vhost.as_bytes()).is_none() {
            return Err(format!("no vhost '{vhost}'"));
        }
        let p = TopicPermission::new(write, read)?;
        self.broker
            .auth
            .topic_permissions
            .insert((user.into(), vhost.into(), exchange.into()), p);
        self.broker.def_changes.push(DefChange::Auth);
        Ok(())
    }

    /// Remove a user's topic permissions in a vhost: on one exchange, or
    /// all of them. False if there were none.
    pub fn clear_topic_permissions(
        &mut self,
        user: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> bool {
        let before = self.broker.auth.topic_permissions.len();
        self.broker
            .auth
            .topic_permissions
            .retain(|(u, v, x), _| !(u == user && v == vhost && exchange.is_none_or(|e| e == x)));
        let gone = self.broker.auth.topic_permissions.len() != before;
        if gone {
            self.broker.def_changes.push(DefChange::Auth);
        }
        gone
    }

    /// Declare an exchange (RabbitMQ's rules: reserved names, equivalent
    /// redeclaration, known types, valid arguments).
    pub fn declare_exchange(&mut self, vhost: &[u8], spec: ExchangeSpec) -> Result<(), Error> {
        let name = spec.name.clone();
        let existed = self
            .broker
            .vhost(vhost)
            .is_some_and(|v| v.exchanges.contains_key(&name));
        self.broker.declare_exchange(vhost, spec)?;
        if !existed {
            self.choose_exchange_policy(vhost, &name);
        }
        Ok(())
    }

    /// Delete an exchange (`if_unused`: 406 if it has bindings from it).
    pub fn delete_exchange(
        &mut self,
        vhost: &[u8],
        name: &[u8],
        if_unused: bool,
    ) -> Result<(), Error> {
        self.broker.delete_exchange(vhost, name, if_unused)
    }

    /// Declare a queue for `owner` (its exclusive owner if `spec.exclusive`;
    /// `salt` seeds a generated name). Returns the queue and whether it was
    /// created. Declaring counts as a use (`x-expires`), and what has
    /// expired is gone before the counts are read.
    pub fn declare_queue(
        &mut self,
        vhost: &[u8],
        spec: QueueSpec,
        owner: ConnId,
        salt: u64,
    ) -> Result<(QueueId, bool), Error> {
        let limit = self.broker.runtime.vhost_limit(vhost, "max-queues");
        if let (Some(max), false) = (limit, spec.passive) {
            let vh = self.broker.vhost(vhost);
            let exists = vh.is_some_and(|v| v.queues.contains_key(&spec.name));
            let count = vh.map_or(0, |v| v.queues.len()) as u64;
            if !exists && count >= max {
                return Err(Error::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "cannot declare queue '{}': queue limit in vhost '{}' ({max}) is reached",
                        lossy(&spec.name),
                        lossy(vhost)
                    ),
                ));
            }
        }
        let (q, created) = self.broker.declare_queue(vhost, spec, owner, salt)?;
        if created {
            if let Err(e) = self.open_stream(q) {
                self.delete_queue(q);
                return Err(Error::new(
                    ReplyCode::INTERNAL_ERROR,
                    format!("cannot create the stream's log: {e}"),
                ));
            }
            self.choose_queue_policy(q);
        }
        self.expire_queue(q);
        self.touch_queue(q);
        Ok((q, created))
    }

    /// Bind `dest` to exchange `source`.
    pub fn bind(
        &mut self,
        vhost: &[u8],
        source: &[u8],
        dest: Dest,
        routing_key: Bytes,
        arguments: crate::codec::FieldTable,
    ) -> Result<(), Error> {
        self.broker
            .bind(vhost, source, dest, routing_key, arguments)
    }

    /// Remove a binding (a missing one is not an error, as in RabbitMQ).
    pub fn unbind(
        &mut self,
        vhost: &[u8],
        source: &[u8],
        dest: Dest,
        routing_key: Bytes,
        arguments: crate::codec::FieldTable,
    ) -> Result<(), Error> {
        self.broker
            .unbind(vhost, source, dest, routing_key, arguments)
    }

    /// Delete a queue if it may be: 406 if `if_unused` and it has
    /// consumers, or `if_empty` and it has ready messages. Returns the
    /// ready messages dropped.
    pub fn delete_queue_if(
        &mut self,
        q: QueueId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, Error> {
        if let Some(qq) = self.broker.queue(q) {
            let why = if if_unused && !qq.consumers.is_empty() {
                "in use"
            } else if if_empty && !qq.ready.is_empty() {
                "not empty"
            } else {
                ""
            };
            if !why.is_empty() {
                return Err(Error::new(
                    ReplyCode::PRECONDITION_FAILED,
                    format!(
                        "queue '{}' in vhost '{}' {why}",
                        lossy(&qq.name),
                        lossy(&qq.vhost)
                    ),
                ));
            }
        }
        Ok(self.delete_queue(q))
    }

    /// Delete a queue and drop its messages; its consumers are told by
    /// their front doors (see [`Engine::take_cancelled`]). Returns the
    /// ready messages dropped.
    pub fn delete_queue(&mut self, q: QueueId) -> u32 {
        let mut gone = self.broker.delete_queue(q);
        self.cancelled.extend(gone.consumers);
        if let Some(s) = gone.stream.take() {
            // RabbitMQ's delete-ok counts no messages of a stream.
            s.log.destroy();
            return 0;
        }
        if let (Some(sid), Some(st)) = (gone.store_id, self.msgs.store.as_mut()) {
            st.purge(sid);
        }
        let n = gone.ready.len();
        let (msgs, spills) = gone.ready.take_all();
        for m in &msgs {
            // The purge record covers the durable ones: only release them.
            self.msgs.forget(None, m);
        }
        for s in spills {
            self.msgs.discard_spill(s);
        }
        n.min(u64::from(u32::MAX)) as u32
    }

    /// Remove a queue's ready messages. Returns how many, and whether the
    /// queue is durable (then the answer depends on this turn's commit).
    /// Spilled messages go at once too: with none unacknowledged, one
    /// purge record covers every durable one; else each needs an ack, and
    /// they are read back and acknowledged in the background (see
    /// [`Messages::settle_purged`](super::Messages)).
    pub fn purge(&mut self, q: QueueId) -> (u32, bool) {
        let Some(queue) = self.broker.queue_mut(q) else {
            return (0, false);
        };
        let sid = queue.store_id;
        let n = queue.ready.len();
        let whole = queue.unacked == 0 && queue.ready.spilled() > 0;
        let (msgs, spills) = queue.ready.take_all();
        if let Some(d) = queue.dedup.as_deref_mut() {
            d.purge();
        }
        if let (true, Some(sid), Some(st)) = (whole, sid, self.msgs.store.as_mut()) {
            st.purge(sid);
        }
        let ack_sid = if whole { None } else { sid };
        for m in &msgs {
            self.msgs.forget(ack_sid, m);
        }
        for s in spills {
            if whole || sid.is_none() {
                self.msgs.discard_spill(s);
            } else {
                self.msgs.purged.push((sid, s));
            }
        }
        (n.min(u64::from(u32::MAX)) as u32, sid.is_some())
    }

    /// A queue by vhost and name, exclusive or not (an operator may look
    /// at anything).
    pub fn find_queue(&self, vhost: &[u8], name: &[u8]) -> Option<QueueId> {
        let id = *self.broker.vhost(vhost)?.queues.get(name)?;
        self.broker.queue(id).map(|q| q.id)
    }
}
