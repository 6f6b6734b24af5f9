//! Operator actions on the running broker (used by the management API and
//! `warren ctl`): virtual hosts, users, permissions, and closing connections.
//! Every change to durable state is recorded for the definitions log.

use std::time::Instant;

use bytes::Bytes;
use log::info;

use crate::broker::auth::{hash_password, Permission, TopicPermission, User};
use crate::broker::ConnId;
use crate::codec::{Error, ReplyCode};
use crate::core::Core;
use crate::store::definitions::DefChange;

impl Core {
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

    /// Delete a virtual host: close its connections (320), delete its queues
    /// and their messages, drop permissions on it. False if it did not exist.
    pub fn delete_vhost(&mut self, name: &str, now: Instant) -> bool {
        if self.broker.vhost(name.as_bytes()).is_none() {
            return false;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.vhost == name.as_bytes())
            .map(|(_, c)| c.id)
            .collect();
        for id in conns {
            let e = Error::new(
                ReplyCode::CONNECTION_FORCED,
                format!("vhost '{name}' is deleted"),
            );
            self.connection_error(id, e, now);
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
    /// are given (definitions import); neither keeps an existing hash.
    pub fn put_user(
        &mut self,
        name: &str,
        password: Option<&str>,
        password_hash: Option<&str>,
        tags: Vec<String>,
    ) {
        let hash = match (password_hash, password) {
            (Some(h), _) => h.to_string(),
            (None, Some(p)) => hash_password(p.as_bytes()),
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
    }

    /// Delete a user, its permissions, and close its connections (320).
    pub fn delete_user(&mut self, name: &str, now: Instant) -> bool {
        if self.broker.auth.users.remove(name).is_none() {
            return false;
        }
        self.broker.auth.permissions.retain(|(u, _), _| u != name);
        self.broker
            .auth
            .topic_permissions
            .retain(|(u, _, _), _| u != name);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user == name.as_bytes())
            .map(|(_, c)| c.id)
            .collect();
        for id in conns {
            let e = Error::new(
                ReplyCode::CONNECTION_FORCED,
                format!("user '{name}' is deleted"),
            );
            self.connection_error(id, e, now);
        }
        self.broker.def_changes.push(DefChange::Auth);
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

    /// Close a connection with 320 CONNECTION_FORCED and the given reason.
    pub fn close_connection(&mut self, id: ConnId, reason: &str, now: Instant) {
        let e = Error::new(ReplyCode::CONNECTION_FORCED, reason.to_string());
        self.connection_error(id, e, now);
    }

    /// A connection's name as the management API shows it:
    /// `127.0.0.1:54321 -> 127.0.0.1:5672`-style peer address.
    pub fn connection_name(&self, id: ConnId) -> Option<Bytes> {
        self.conn(id).map(|c| Bytes::from(c.name()))
    }
}
