//! Outbound links: shovels now (federation next), each a pair of AMQP
//! client connections ([`client::Client`], the same codec as the broker
//! side) driven by the event loop. This module is sans-IO like the rest:
//! the server (`crate::server::links`) gives each end a transport — a
//! socket to a remote broker, or a connection inside this broker's own
//! [`crate::amqp::Core`] for `amqp://` with no host — and moves bytes.
//! Shovels come from `shovel` runtime parameters: the engine reports
//! their changes ([`crate::engine::Engine`]'s `param_events`), and
//! [`Links::sync`] starts, restarts and stops them.

pub(crate) mod client;
pub(crate) mod federation;
pub(crate) mod shovel;
pub(crate) mod uri;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::broker::ConnId;
use crate::engine::Engine;
use client::Client;
use shovel::{Def, Phase, Shovel};
use uri::Uri;

/// The component shovels are stored under.
pub(crate) const SHOVEL: &str = "shovel";

/// One end of a link: its client connection and its transport.
#[derive(Debug)]
pub(crate) struct End {
    pub uri: Uri,
    pub client: Client,
    /// Set by the server once it has a transport for this end.
    pub io: Option<Io>,
    /// Connecting must be done by then.
    pub connect_by: Option<Instant>,
}

/// An end's transport, as the server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    /// A connection inside this broker.
    Local(ConnId),
    /// A socket (the server's link socket index).
    Sock(usize),
    /// The host name is being resolved (the request's number).
    Resolving(u64),
}

/// Which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Src,
    Dest,
}

/// Every link.
#[derive(Debug, Default)]
pub(crate) struct Links {
    pub shovels: Slab<Shovel>,
    by_name: BTreeMap<(String, String), usize>,
    /// Ends of shovels removed or restarted, for the server to close.
    pub retired: Vec<End>,
    /// Federation links (in `shovels` too), by vhost, exchange, upstream.
    federation: BTreeMap<federation::Key, usize>,
    /// When to compare the federation links with what policies and
    /// upstreams ask for (None: at once).
    next_fed_scan: Option<Instant>,
}

/// How often federation links are compared with policies and bindings.
const FED_SCAN_EVERY: Duration = Duration::from_secs(1);

impl Links {
    /// Start at boot: every shovel parameter the engine holds.
    pub(crate) fn boot(&mut self, engine: &mut Engine) {
        self.sync(engine);
    }

    /// Apply the parameter changes the engine reports: a new or changed
    /// shovel starts (again), a removed one stops.
    pub(crate) fn sync(&mut self, engine: &mut Engine) {
        for (component, vhost, name) in engine.take_param_events() {
            if component == federation::UPSTREAM || component == federation::UPSTREAM_SET {
                self.next_fed_scan = None;
            }
            if component != SHOVEL {
                continue;
            }
            let key = (vhost.clone(), name.clone());
            if let Some(idx) = self.by_name.remove(&key) {
                if self.shovels.contains(idx) {
                    let mut old = self.shovels.remove(idx);
                    self.retired.extend(old.src.take());
                    self.retired.extend(old.dest.take());
                    log::info!("shovel '{name}' in vhost '{vhost}' stopped");
                }
            }
            let Some(value) = engine.broker.runtime.param(SHOVEL, &vhost, &name) else {
                continue;
            };
            match Def::parse(&value) {
                Ok(def) => {
                    let idx = self.shovels.insert(Shovel::new(&vhost, &name, def));
                    self.by_name.insert(key, idx);
                    log::info!("shovel '{name}' in vhost '{vhost}' declared");
                }
                Err(e) => log::warn!("shovel '{name}' in vhost '{vhost}': {e}; not started"),
            }
        }
    }

    /// Handle what every link's ends did, start attempts that are due,
    /// and remove the shovels that are done (their parameter too).
    pub(crate) fn step(&mut self, engine: &mut Engine, now: Instant) {
        if self.next_fed_scan.is_none_or(|t| now >= t) {
            self.scan_federation(engine);
            self.next_fed_scan = Some(now + FED_SCAN_EVERY);
        }
        let mut finished = Vec::new();
        for (idx, s) in self.shovels.iter_mut() {
            if let Some(f) = s.def.fed.as_ref().filter(|f| f.queue) {
                let demand = federation::demand(engine, &s.vhost, &f.exchange);
                s.set_demand(demand);
            }
            s.step(now);
            if s.phase == Phase::Finished {
                finished.push(idx);
            }
        }
        for idx in finished {
            let mut s = self.shovels.remove(idx);
            self.by_name.remove(&(s.vhost.clone(), s.name.clone()));
            self.retired.extend(s.src.take());
            self.retired.extend(s.dest.take());
            engine.clear_param(SHOVEL, &s.vhost, &s.name);
            // Its own removal event is not a new shovel.
            engine
                .param_events
                .retain(|(c, v, n)| !(c == SHOVEL && *v == s.vhost && *n == s.name));
        }
    }

    /// Start, restart, rebind and stop federation links to match what the
    /// policies, upstreams and bindings ask for now.
    fn scan_federation(&mut self, engine: &Engine) {
        let mut wanted = federation::wanted(engine);
        let keys: Vec<federation::Key> = self.federation.keys().cloned().collect();
        for key in keys {
            let Some(&idx) = self.federation.get(&key) else {
                continue;
            };
            let keep = match (wanted.remove(&key), self.shovels.get_mut(idx)) {
                (Some(def), Some(s)) if !federation::differs(&def, &s.def) => {
                    if let Some(f) = def.fed {
                        s.rebind(f.keys);
                    }
                    true
                }
                (Some(def), Some(_)) => {
                    // Changed: start again with the new definition.
                    wanted.insert(key.clone(), def);
                    false
                }
                _ => false,
            };
            if !keep {
                self.federation.remove(&key);
                if self.shovels.contains(idx) {
                    let mut old = self.shovels.remove(idx);
                    self.retired.extend(old.src.take());
                    self.retired.extend(old.dest.take());
                    log::info!(
                        "federation link for exchange '{}' in vhost '{}' from upstream '{}' stopped",
                        key.1,
                        key.0,
                        key.2
                    );
                }
            }
        }
        for (key, def) in wanted {
            let name = format!("{} -> {}", key.1, key.2);
            log::info!(
                "federation link for exchange '{}' in vhost '{}' from upstream '{}' starting",
                key.1,
                key.0,
                key.2
            );
            let idx = self.shovels.insert(Shovel::new(&key.0, &name, def));
            self.federation.insert(key, idx);
        }
    }

    /// `/api/federation-links`: every federation link's status.
    pub(crate) fn federation_status(&self, vhost: Option<&str>) -> Vec<serde_json::Value> {
        self.federation
            .iter()
            .filter(|((v, _, _), _)| vhost.is_none_or(|x| x == v))
            .filter_map(|(_, &idx)| self.shovels.get(idx).and_then(federation::status))
            .collect()
    }

    /// The earliest time a link needs [`Links::step`] (a reconnect).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        // Federation scans need no timer: the loop turns at least twice
        // a second for its own ticks.
        self.shovels.iter().filter_map(|(_, s)| s.deadline()).min()
    }

    /// Remove an end whose transport is gone and whose client is closed.
    pub(crate) fn drop_end(&mut self, idx: usize, side: Side) -> Option<End> {
        let s = self.shovels.get_mut(idx)?;
        match side {
            Side::Src => s.src.take(),
            Side::Dest => s.dest.take(),
        }
    }

    /// Every current end's key.
    pub(crate) fn end_keys(&self) -> Vec<(usize, Side)> {
        let mut out = Vec::new();
        for (idx, s) in &self.shovels {
            if s.src.is_some() {
                out.push((idx, Side::Src));
            }
            if s.dest.is_some() {
                out.push((idx, Side::Dest));
            }
        }
        out
    }

    /// `/api/shovels`: every shovel's status, of `vhost` or all.
    pub(crate) fn status(&self, vhost: Option<&str>) -> Vec<serde_json::Value> {
        let mut list: Vec<&Shovel> = self
            .shovels
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.def.fed.is_none() && vhost.is_none_or(|v| v == s.vhost))
            .collect();
        list.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        list.into_iter().map(shovel::status).collect()
    }
}
