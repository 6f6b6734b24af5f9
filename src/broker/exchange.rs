//! Exchanges and their bindings; routing a message to destinations.
//!
//! Besides the four AMQP types there is the federation plugin's
//! `x-federation-upstream`: what a RabbitMQ downstream of a federated
//! exchange declares on its upstream (here), bound from the federated
//! exchange with the downstream's binding keys and bound to the queue the
//! downstream consumes from. It routes like a fanout exchange, but only
//! the messages whose hop path (`x-received-from`) is shorter than its
//! `x-max-hops` and does not already pass through its downstream
//! (`x-downstream-name`, `x-downstream-vhost`): see [`HopFilter`].

use std::collections::HashMap;

use bytes::Bytes;

use super::headers;
use super::topic::TopicTrie;
use super::QueueId;
use crate::codec::{FieldTable, FieldValue};

/// Exchange types RabbitMQ ships (the federation plugin's included).
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
    /// `x-federation-upstream`: every binding, for the messages its
    /// [`HopFilter`] lets through.
    FederationUpstream,
    /// `x-message-deduplication` (the deduplication plugin's type): every
    /// binding, for the messages its cache has not seen (see
    /// `crate::broker::dedup`).
    Deduplication,
    /// `x-delayed-message` (the delayed message plugin's type): routes as
    /// its `x-delayed-type` (the exchange's `route_kind`), once a
    /// message's `x-delay` has passed (see `crate::broker::delayed`).
    Delayed,
}

impl ExchangeKind {
    /// Parse a type name from exchange.declare.
    pub fn parse(s: &[u8]) -> Option<ExchangeKind> {
        Some(match s {
            b"direct" => ExchangeKind::Direct,
            b"fanout" => ExchangeKind::Fanout,
            b"topic" => ExchangeKind::Topic,
            b"headers" => ExchangeKind::Headers,
            b"x-federation-upstream" => ExchangeKind::FederationUpstream,
            b"x-message-deduplication" => ExchangeKind::Deduplication,
            b"x-delayed-message" => ExchangeKind::Delayed,
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
            ExchangeKind::FederationUpstream => "x-federation-upstream",
            ExchangeKind::Deduplication => "x-message-deduplication",
            ExchangeKind::Delayed => "x-delayed-message",
        }
    }
}

/// The message header a federation link adds on each hop: an array of
/// tables, the newest first (`uri`, `exchange`, `redelivered`,
/// `cluster-name`, `vhost`).
pub const RECEIVED_FROM: &str = "x-received-from";

/// How an `x-federation-upstream` exchange decides whether a message may
/// go on to its downstream, from the exchange's arguments, as RabbitMQ's
/// `rabbit_federation_upstream_exchange:route/2` and
/// `rabbit_federation_util:should_forward/4`: a message without an
/// `x-received-from` array goes; one with it goes if the array is shorter
/// than `x-max-hops` and no table in it names the downstream (its
/// `cluster-name` and `vhost`, both long strings, equal to the exchange's
/// `x-downstream-name` and `x-downstream-vhost`; without those arguments,
/// as from federation before 3.3.0 / 3.8.9, nothing names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopFilter {
    /// `x-max-hops` (a `long`, checked at declare).
    pub max_hops: i64,
    /// `x-downstream-name`: the downstream's cluster name.
    pub downstream_name: Option<Bytes>,
    /// `x-downstream-vhost`: the downstream exchange's vhost.
    pub downstream_vhost: Option<Bytes>,
}

impl HopFilter {
    /// The filter an exchange's declare arguments describe.
    pub fn from_args(args: &FieldTable) -> HopFilter {
        let longstr = |k: &str| match args.get(k) {
            Some(FieldValue::LongStr(s)) => Some(s.clone()),
            _ => None,
        };
        HopFilter {
            max_hops: match args.get(MAX_HOPS) {
                Some(FieldValue::I64(n)) => *n,
                _ => 0,
            },
            downstream_name: longstr("x-downstream-name"),
            downstream_vhost: longstr("x-downstream-vhost"),
        }
    }

    /// True when a message with these headers may be routed on.
    pub fn should_forward(&self, headers: Option<&FieldTable>) -> bool {
        let Some(FieldValue::Array(path)) = headers.and_then(|h| h.get(RECEIVED_FROM)) else {
            return true;
        };
        i64::try_from(path.len()).is_ok_and(|n| n < self.max_hops)
            && !path.iter().any(|hop| self.names_downstream(hop))
    }

    /// True when one hop of the path is the downstream itself.
    fn names_downstream(&self, hop: &FieldValue) -> bool {
        let (FieldValue::Table(t), Some(name), Some(vhost)) =
            (hop, &self.downstream_name, &self.downstream_vhost)
        else {
            return false;
        };
        let is =
            |k: &str, want: &Bytes| matches!(t.get(k), Some(FieldValue::LongStr(v)) if v == want);
        is("cluster-name", name) && is("vhost", vhost)
    }
}

/// The argument an `x-federation-upstream` exchange must have.
pub const MAX_HOPS: &str = "x-max-hops";

/// A new `x-federation-upstream` exchange's arguments: `x-max-hops` must
/// be there and be a `long` (RabbitMQ's `validate/1`; the 406 text).
pub fn check_upstream_args(args: &FieldTable) -> Result<(), String> {
    match args.get(MAX_HOPS) {
        Some(FieldValue::I64(_)) => Ok(()),
        None => Err(format!("Argument {MAX_HOPS} missing")),
        Some(_) => Err(format!("Argument {MAX_HOPS} must be of type long")),
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
    /// How it routes: `kind`, except for an `x-delayed-message` exchange,
    /// which routes as its `x-delayed-type`.
    pub route_kind: ExchangeKind,
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
    /// `x-federation-upstream` exchanges: which messages go on.
    pub hops: HopFilter,
    /// `x-message-deduplication` exchanges: the keys seen.
    /// Its cache is checked (and filled) while routing, which only reads
    /// the broker: hence the cell.
    pub dedup: Option<Box<std::cell::RefCell<super::dedup::DedupCache>>>,
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
        let dedup = (kind == ExchangeKind::Deduplication).then(|| {
            Box::new(std::cell::RefCell::new(
                super::dedup::DedupCache::from_args(&arguments),
            ))
        });
        let hops = if kind == ExchangeKind::FederationUpstream {
            HopFilter::from_args(&arguments)
        } else {
            HopFilter::default()
        };
        let route_kind = if kind == ExchangeKind::Delayed {
            super::delayed::delayed_type(&arguments).unwrap_or(ExchangeKind::Direct)
        } else {
            kind
        };
        Exchange {
            name,
            kind,
            route_kind,
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
            hops,
            dedup,
        }
    }

    /// Add a binding; false if an identical one exists.
    pub fn bind(&mut self, b: Binding) -> bool {
        if self.bindings.contains(&b) {
            return false;
        }
        match self.route_kind {
            ExchangeKind::Direct => self
                .direct
                .entry(b.routing_key.clone())
                .or_default()
                .push(b.dest.clone()),
            ExchangeKind::Topic => {
                self.topic.insert(&b.routing_key, b.dest.clone());
            }
            ExchangeKind::Fanout
            | ExchangeKind::Headers
            | ExchangeKind::FederationUpstream
            | ExchangeKind::Deduplication
            | ExchangeKind::Delayed => {}
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
        match self.route_kind {
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
            ExchangeKind::Fanout
            | ExchangeKind::Headers
            | ExchangeKind::FederationUpstream
            | ExchangeKind::Deduplication
            | ExchangeKind::Delayed => {}
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
        match self.route_kind {
            ExchangeKind::Direct => {
                if let Some(v) = self.direct.get(routing_key) {
                    v.iter().for_each(f);
                }
            }
            ExchangeKind::Fanout | ExchangeKind::Deduplication => {
                self.bindings.iter().for_each(|b| f(&b.dest))
            }
            ExchangeKind::Topic => self.topic.route(routing_key, f),
            ExchangeKind::Headers => {
                for b in &self.bindings {
                    if headers::matches(&b.arguments, headers) {
                        f(&b.dest)
                    }
                }
            }
            ExchangeKind::FederationUpstream => {
                if self.hops.should_forward(headers) {
                    self.bindings.iter().for_each(|b| f(&b.dest))
                }
            }
            // Never a route kind (`x-delayed-type` cannot name it).
            ExchangeKind::Delayed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(idx: u32) -> Dest {
        Dest::Queue(QueueId { idx, gen: 0 })
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::from(v.to_string()))
    }

    /// The arguments RabbitMQ 3.10's exchange link declares with.
    fn link_args(max_hops: i64) -> FieldTable {
        let mut a = FieldTable::new();
        a.insert("x-max-hops", FieldValue::I64(max_hops));
        a.insert("x-downstream-name", s("rabbit@down"));
        a.insert("x-downstream-vhost", s("/"));
        a.insert("x-internal-purpose", s("federation"));
        a
    }

    /// One `x-received-from` entry as a link writes it.
    fn hop(cluster: &str, vhost: &str) -> FieldValue {
        let mut t = FieldTable::new();
        t.insert("uri", s("amqp://somewhere"));
        t.insert("exchange", s("fed.x"));
        t.insert("redelivered", FieldValue::Bool(false));
        t.insert("cluster-name", s(cluster));
        t.insert("vhost", s(vhost));
        FieldValue::Table(t)
    }

    fn received_from(hops: Vec<FieldValue>) -> FieldTable {
        let mut h = FieldTable::new();
        h.insert("other", s("kept"));
        h.insert(RECEIVED_FROM, FieldValue::Array(hops));
        h
    }

    fn upstream(max_hops: i64) -> Exchange {
        let mut x = Exchange::new(
            Bytes::from_static(b"federation: fed.x -> rabbit@down A"),
            ExchangeKind::FederationUpstream,
            true,
            true,
            true,
            link_args(max_hops),
        );
        let bind = |dest, key: &'static str| Binding {
            dest,
            routing_key: Bytes::from_static(key.as_bytes()),
            arguments: FieldTable::new(),
        };
        assert!(x.bind(bind(q(1), "")));
        assert!(x.bind(bind(q(2), "ignored.key")));
        assert!(x.bind(bind(Dest::Exchange(Bytes::from_static(b"e")), "")));
        x
    }

    fn routed(x: &Exchange, key: &[u8], headers: Option<&FieldTable>) -> Vec<Dest> {
        let mut out = Vec::new();
        x.route(key, headers, &mut |d| out.push(d.clone()));
        out
    }

    #[test]
    fn kind_is_parsed_and_named() {
        assert_eq!(
            ExchangeKind::parse(b"x-federation-upstream"),
            Some(ExchangeKind::FederationUpstream)
        );
        assert_eq!(
            ExchangeKind::FederationUpstream.name(),
            "x-federation-upstream"
        );
        assert_eq!(ExchangeKind::parse(b"x-federation"), None);
    }

    #[test]
    fn filter_comes_from_the_arguments() {
        let x = upstream(3);
        assert_eq!(
            x.hops,
            HopFilter {
                max_hops: 3,
                downstream_name: Some(Bytes::from_static(b"rabbit@down")),
                downstream_vhost: Some(Bytes::from_static(b"/")),
            }
        );
        // Other kinds carry no filter.
        let d = Exchange::new(
            Bytes::from_static(b"d"),
            ExchangeKind::Direct,
            false,
            false,
            false,
            link_args(3),
        );
        assert_eq!(d.hops, HopFilter::default());
    }

    /// Without a hop path every binding gets the message, whatever the
    /// routing key, exchanges included: a fanout exchange.
    #[test]
    fn routes_like_fanout() {
        let x = upstream(1);
        let all = vec![q(1), q(2), Dest::Exchange(Bytes::from_static(b"e"))];
        assert_eq!(routed(&x, b"a.b", None), all);
        assert_eq!(routed(&x, b"", None), all);
        let mut h = FieldTable::new();
        h.insert("x-match", s("all"));
        assert_eq!(routed(&x, b"z", Some(&h)), all);
        // An unbound binding is gone from routing.
        let mut x = x;
        assert!(x.unbind(&Binding {
            dest: q(2),
            routing_key: Bytes::from_static(b"ignored.key"),
            arguments: FieldTable::new(),
        }));
        assert_eq!(routed(&x, b"a", None).len(), 2);
    }

    /// `length(x-received-from) < x-max-hops`, or the message stops here.
    #[test]
    fn hop_count_against_max_hops() {
        let one = received_from(vec![hop("elsewhere", "/")]);
        let two = received_from(vec![hop("b", "/"), hop("c", "/")]);
        let none = received_from(vec![]);
        assert!(routed(&upstream(1), b"k", Some(&one)).is_empty());
        assert_eq!(routed(&upstream(2), b"k", Some(&one)).len(), 3);
        assert!(routed(&upstream(2), b"k", Some(&two)).is_empty());
        assert_eq!(routed(&upstream(3), b"k", Some(&two)).len(), 3);
        assert_eq!(routed(&upstream(1), b"k", Some(&none)).len(), 3);
        // x-max-hops 0 (or below) stops every message that has a path.
        assert!(routed(&upstream(0), b"k", Some(&none)).is_empty());
        assert_eq!(routed(&upstream(0), b"k", None).len(), 3);
        // Entries that are not tables still count as hops.
        let odd = received_from(vec![s("junk")]);
        assert!(routed(&upstream(1), b"k", Some(&odd)).is_empty());
        assert_eq!(routed(&upstream(2), b"k", Some(&odd)).len(), 3);
    }

    /// Only an array is a hop path: anything else under the header is
    /// ignored, as RabbitMQ's `{array, A}` match.
    #[test]
    fn a_header_that_is_not_an_array_is_no_path() {
        let mut h = FieldTable::new();
        h.insert(RECEIVED_FROM, s("rabbit@down"));
        assert_eq!(routed(&upstream(1), b"k", Some(&h)).len(), 3);
        let mut h = FieldTable::new();
        h.insert(RECEIVED_FROM, FieldValue::Table(FieldTable::new()));
        assert_eq!(routed(&upstream(1), b"k", Some(&h)).len(), 3);
    }

    /// A message never goes back to the downstream it came through: any
    /// hop naming its cluster and vhost (both long strings) stops it.
    #[test]
    fn not_back_to_the_downstream_it_came_from() {
        let x = upstream(5);
        let back = received_from(vec![hop("a", "/"), hop("rabbit@down", "/")]);
        assert!(routed(&x, b"k", Some(&back)).is_empty());
        // Same cluster, other vhost; other cluster, same vhost: go.
        let other_vhost = received_from(vec![hop("rabbit@down", "other")]);
        assert_eq!(routed(&x, b"k", Some(&other_vhost)).len(), 3);
        let other_cluster = received_from(vec![hop("rabbit@else", "/")]);
        assert_eq!(routed(&x, b"k", Some(&other_cluster)).len(), 3);
        // A binary (not longstr) cluster name is not the downstream's.
        let mut t = FieldTable::new();
        t.insert(
            "cluster-name",
            FieldValue::Bytes(Bytes::from_static(b"rabbit@down")),
        );
        t.insert("vhost", s("/"));
        let binary = received_from(vec![FieldValue::Table(t)]);
        assert_eq!(routed(&x, b"k", Some(&binary)).len(), 3);
        // A hop without a vhost (from before 3.8.9) is not the downstream.
        let mut t = FieldTable::new();
        t.insert("cluster-name", s("rabbit@down"));
        let old = received_from(vec![FieldValue::Table(t)]);
        assert_eq!(routed(&x, b"k", Some(&old)).len(), 3);
    }

    /// Declared without `x-downstream-name` / `x-downstream-vhost` (older
    /// links): only the hop count applies.
    #[test]
    fn without_downstream_arguments_only_hops_count() {
        let mut a = FieldTable::new();
        a.insert("x-max-hops", FieldValue::I64(5));
        let mut x = Exchange::new(
            Bytes::from_static(b"up"),
            ExchangeKind::FederationUpstream,
            true,
            true,
            true,
            a,
        );
        x.bind(Binding {
            dest: q(1),
            routing_key: Bytes::new(),
            arguments: FieldTable::new(),
        });
        let back = received_from(vec![hop("rabbit@down", "/")]);
        assert_eq!(routed(&x, b"k", Some(&back)).len(), 1);
    }

    #[test]
    fn max_hops_must_be_a_long() {
        assert_eq!(check_upstream_args(&link_args(1)), Ok(()));
        assert_eq!(
            check_upstream_args(&FieldTable::new()).unwrap_err(),
            "Argument x-max-hops missing"
        );
        let mut a = FieldTable::new();
        a.insert("x-max-hops", FieldValue::I32(1));
        assert_eq!(
            check_upstream_args(&a).unwrap_err(),
            "Argument x-max-hops must be of type long"
        );
    }
}
