//! Exchanges and their bindings; routing a message to destinations.

use std::collections::HashMap;

use bytes::Bytes;

use super::headers;
use super::topic::TopicTrie;
use super::QueueId;
use crate::codec::FieldTable;

/// Exchange types RabbitMQ ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header matching (`x-match`).
    Headers,
}

impl ExchangeKind {
    /// Parse a type name from exchange.declare.
    pub fn parse(s: &[u8]) -> Option<ExchangeKind> {
        Some(match s {
            b"direct" => ExchangeKind::Direct,
            b"fanout" => ExchangeKind::Fanout,
            b"topic" => ExchangeKind::Topic,
            b"headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    /// The type name.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// A queue.
    Queue(QueueId),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(Bytes),
}

/// One binding from an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Destination.
    pub dest: Dest,
    /// Binding key.
    pub routing_key: Bytes,
    /// Binding arguments (headers exchanges match on them).
    pub arguments: FieldTable,
}

/// An exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Name.
    pub name: Bytes,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// All bindings, in creation order.
    pub bindings: Vec<Binding>,
    /// How many bindings lead to other exchanges.
    pub exchange_bindings: usize,
    /// Where unroutable messages go: the `alternate-exchange` argument, else
    /// its policy's.
    pub alternate: Option<Bytes>,
    /// The policy that applies to it.
    pub policy: Option<String>,
    /// Direct exchanges: routing key → destinations.
    direct: HashMap<Bytes, Vec<Dest>>,
    /// Topic exchanges: the pattern trie.
    topic: TopicTrie<Dest>,
}

impl Exchange {
    /// A new exchange without bindings.
    pub fn new(
        name: Bytes,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let alternate = arguments
            .get("alternate-exchange")
            .and_then(|v| v.as_bytes())
            .cloned();
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Vec::new(),
            exchange_bindings: 0,
            alternate,
            policy: None,
            direct: HashMap::new(),
            topic: TopicTrie::new(),
        }
    }

    /// Add a binding; false if an identical one exists.
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self
                .direct
                .entry(b.routing_key.clone())
                .or_default()
                .push(b.dest.clone()),
            ExchangeKind::Topic => {
                self.topic.insert(&b.routing_key, b.dest.clone());
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        if matches!(b.dest, Dest::Exchange(_)) {
            self.exchange_bindings += 1;
        }
        self.bindings.push(b);
        true
    }

    /// Remove a binding; false if it did not exist.
    pub fn unbind(&mut self, b: &Binding) -> bool {
        let Some(i) = self.bindings.iter().position(|x| x == b) else {
            return false;
        };
        self.bindings.remove(i);
        if matches!(b.dest, Dest::Exchange(_)) {
            self.exchange_bindings -= 1;
        }
        self.unindex(b);
        true
    }

    fn unindex(&mut self, b: &Binding) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get_mut(&b.routing_key) {
                    if let Some(j) = v.iter().position(|d| *d == b.dest) {
                        v.remove(j);
                    }
                    if v.is_empty() {
                        self.direct.remove(&b.routing_key);
                    }
                }
            }
            ExchangeKind::Topic => {
                // Another binding with the same key and destination but other
                // arguments keeps the trie entry.
                let still = self
                    .bindings
                    .iter()
                    .any(|x| x.dest == b.dest && x.routing_key == b.routing_key);
                if !still {
                    self.topic.remove(&b.routing_key, &b.dest);
                }
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    /// Remove every binding to `dest`; returns how many went.
    pub fn unbind_dest(&mut self, dest: &Dest) -> usize {
        let gone: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.dest == *dest)
            .cloned()
            .collect();
        for b in &gone {
            self.unbind(b);
        }
        gone.len()
    }

    /// True when some binding leads to `dest`.
    pub fn has_dest(&self, dest: &Dest) -> bool {
        self.bindings.iter().any(|b| b.dest == *dest)
    }

    /// Call `f` for every destination the message matches.
    pub fn route(
        &self,
        routing_key: &[u8],
        headers: Option<&FieldTable>,
        f: &mut impl FnMut(&Dest),
    ) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    v.iter().for_each(f);
                }
            }
            ExchangeKind::Fanout => self.bindings.iter().for_each(|b| f(&b.dest)),
            ExchangeKind::Topic => self.topic.route(routing_key, f),
            ExchangeKind::Headers => {
                for b in &self.bindings {
                    if headers::matches(&b.arguments, headers) {
                        f(&b.dest)
                    }
                }
            }
        }
    }
}
