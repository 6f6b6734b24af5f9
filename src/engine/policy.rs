//! Runtime configuration actions: policies, operator policies and limits
//! (the management API, `warren ctl` and the definitions import call them).
//! A policy change is applied at once to the queues and exchanges of its
//! vhost, without redeclaring anything: only the entities that the changed
//! policy matches, or that it applied to, are looked at again, so a change
//! costs one pattern match per queue however many policies there are.

use log::info;
use serde_json::{Map, Value};

use super::Engine;
use crate::broker::policy::{
    effective, Limits, LimitsOf, Policy, PolicySet, Target, OPERATOR_POLICY, POLICY,
    USER_LIMITS_PARAM,
};
use crate::broker::QueueId;
use crate::store::definitions::{DefChange, ParamDef};

/// Which of the two policy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Policies (`/api/policies`, `set_policy`).
    User,
    /// Operator policies (`/api/operator-policies`, `set_operator_policy`).
    Operator,
}

impl PolicyKind {
    /// Its set in `rt`.
    pub(crate) fn set(self, rt: &crate::broker::policy::Runtime) -> &PolicySet {
        match self {
            PolicyKind::User => &rt.policies,
            PolicyKind::Operator => &rt.operator_policies,
        }
    }

    fn set_mut(self, rt: &mut crate::broker::policy::Runtime) -> &mut PolicySet {
        match self {
            PolicyKind::User => &mut rt.policies,
            PolicyKind::Operator => &mut rt.operator_policies,
        }
    }

    fn component(self) -> &'static str {
        match self {
            PolicyKind::User => POLICY,
            PolicyKind::Operator => OPERATOR_POLICY,
        }
    }

    fn what(self) -> &'static str {
        match self {
            PolicyKind::User => "policy",
            PolicyKind::Operator => "operator policy",
        }
    }
}

/// A policy as the API, `warren ctl` and definitions give it.
#[derive(Debug, Clone)]
pub struct PolicySpec<'a> {
    /// Virtual host.
    pub vhost: &'a str,
    /// Name.
    pub name: &'a str,
    /// Regular expression over names.
    pub pattern: &'a str,
    /// `apply-to` (`all`, `queues`, `exchanges`, ...).
    pub apply_to: &'a str,
    /// Priority.
    pub priority: i64,
    /// Definition.
    pub definition: Map<String, Value>,
}

impl Engine {
    /// Record a runtime parameter's change for the definitions log: its
    /// current value, or its removal.
    pub(super) fn param_changed(&mut self, component: &str, owner: &str, name: &str) {
        let change = match self.broker.runtime.param(component, owner, name) {
            Some(v) => DefChange::PutParam(ParamDef {
                component: component.to_string(),
                owner: owner.to_string(),
                name: name.to_string(),
                value: bytes::Bytes::from(v.to_string()),
            }),
            None => DefChange::DelParam(component.into(), owner.into(), name.into()),
        };
        self.broker.def_changes.push(change);
    }

    /// Create or replace a policy and apply it at once. Returns whether
    /// it was created. The error is RabbitMQ's reason (see
    /// `broker::policy::validation_failed`), or `no vhost`.
    pub fn set_policy(&mut self, kind: PolicyKind, spec: PolicySpec<'_>) -> Result<bool, String> {
        if self.broker.vhost(spec.vhost.as_bytes()).is_none() {
            return Err(format!("no vhost '{}'", spec.vhost));
        }
        let p = Policy::new(
            spec.vhost,
            spec.name,
            spec.pattern,
            spec.apply_to,
            spec.priority,
            spec.definition,
            kind == PolicyKind::Operator,
        )?;
        let inert = p.inert_keys().join(", ");
        if !inert.is_empty() {
            log::warn!(
                "{} '{}' in vhost '{}': {inert} accepted but has no effect in warren",
                kind.what(),
                spec.name,
                spec.vhost
            );
        }
        let exchanges = p.apply_to.covers(Target::Exchange);
        let old = kind.set_mut(&mut self.broker.runtime).put(p);
        let created = old.is_none();
        let exchanges = exchanges
            || old
                .as_ref()
                .is_some_and(|o| o.apply_to.covers(Target::Exchange));
        if old.as_ref() != kind.set(&self.broker.runtime).get(spec.vhost, spec.name) {
            self.param_changed(kind.component(), spec.vhost, spec.name);
            let started = std::time::Instant::now();
            let n = self.reapply_policies(spec.vhost, kind, spec.name, exchanges);
            info!(
                "{} {} '{}' in vhost '{}': applied to {n} queues in {:?}",
                if created { "set" } else { "updated" },
                kind.what(),
                spec.name,
                spec.vhost,
                started.elapsed()
            );
        }
        Ok(created)
    }

    /// Remove a policy and revert what it set. False if there was none.
    pub fn clear_policy(&mut self, kind: PolicyKind, vhost: &str, name: &str) -> bool {
        let Some(old) = kind.set_mut(&mut self.broker.runtime).remove(vhost, name) else {
            return false;
        };
        self.param_changed(kind.component(), vhost, name);
        let started = std::time::Instant::now();
        let exchanges = old.apply_to.covers(Target::Exchange);
        let n = self.reapply_policies(vhost, kind, name, exchanges);
        info!(
            "cleared {} '{name}' in vhost '{vhost}': {n} queues looked at again in {:?}",
            kind.what(),
            started.elapsed()
        );
        true
    }

    /// The policy `name` of `kind` changed (or went): look again at the
    /// queues of `vhost` it matches or applied to (and its exchanges, if
    /// it applies or applied to them). Returns how many queues it matches
    /// or matched.
    fn reapply_policies(
        &mut self,
        vhost: &str,
        kind: PolicyKind,
        name: &str,
        exchanges: bool,
    ) -> usize {
        let Some(vh) = self.broker.vhost(vhost.as_bytes()) else {
            return 0;
        };
        let ids: Vec<QueueId> = vh.queues.values().copied().collect();
        let mut changed = Vec::new();
        {
            let set = kind.set(&self.broker.runtime);
            let new = set.get(vhost, name);
            for id in ids {
                let Some(q) = self.broker.queue(id) else {
                    continue;
                };
                let cur = match kind {
                    PolicyKind::User => q.policy.as_deref(),
                    PolicyKind::Operator => q.operator_policy.as_deref(),
                };
                // Those it applied to are looked at again (its definition
                // may have changed even where it still applies).
                let next = if cur == Some(name) {
                    set.best(vhost.as_bytes(), &q.name, q.target())
                        .map(|p| p.name.clone())
                } else if new
                    .is_some_and(|p| p.matches(&q.name, q.target()) && set.outranks(p, cur))
                {
                    Some(name.to_string())
                } else {
                    continue;
                };
                changed.push((id, next));
            }
        }
        let n = changed.len();
        for (id, next) in changed {
            if let Some(q) = self.broker.queue_mut(id) {
                match kind {
                    PolicyKind::User => q.policy = next,
                    PolicyKind::Operator => q.operator_policy = next,
                }
            }
            self.apply_queue_policy(id);
        }
        if kind == PolicyKind::User && exchanges {
            self.reapply_exchange_policies(vhost);
        }
        n
    }

    /// Choose the policy of every exchange in `vhost` again.
    fn reapply_exchange_policies(&mut self, vhost: &str) {
        let rt = &self.broker.runtime;
        let Some(vh) = self.broker.vhosts.get_mut(vhost.as_bytes()) else {
            return;
        };
        for x in vh.exchanges.values_mut() {
            if !x.name.is_empty() {
                choose_exchange_policy(rt, vhost.as_bytes(), x);
            }
        }
    }

    /// Choose the policies of a new queue and apply them.
    pub(crate) fn choose_queue_policy(&mut self, id: QueueId) {
        let rt = &self.broker.runtime;
        let Some(q) = self.broker.queue(id) else {
            return;
        };
        let (t, v) = (q.target(), q.vhost.clone());
        let p = rt.policies.best(&v, &q.name, t).map(|p| p.name.clone());
        let o = rt
            .operator_policies
            .best(&v, &q.name, t)
            .map(|p| p.name.clone());
        if let Some(q) = self.broker.queue_mut(id) {
            q.policy = p;
            q.operator_policy = o;
        }
        self.apply_queue_policy(id);
    }

    /// Choose the policy of a new exchange.
    pub(crate) fn choose_exchange_policy(&mut self, vhost: &[u8], name: &[u8]) {
        let rt = &self.broker.runtime;
        if let Some(x) = self
            .broker
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(name))
        {
            choose_exchange_policy(rt, vhost, x);
        }
    }

    /// A queue's policy names are set: recompute its effective settings
    /// and act on a change, as RabbitMQ does: lower length limits drop
    /// from the head (drop-head), a new `expires` starts counting now.
    fn apply_queue_policy(&mut self, id: QueueId) {
        let Some(q) = self.broker.queue(id) else {
            return;
        };
        let (p, o) = self.broker.runtime.of_queue(q);
        let args = effective(&q.declared, p, o);
        if args == q.args {
            return;
        }
        let Some(q) = self.broker.queue_mut(id) else {
            return;
        };
        let expires_changed = args.expires != q.args.expires;
        if let Some(s) = q.stream.as_deref_mut() {
            s.log.set_limits(crate::engine::stream::limits_of(&args));
        }
        // Deduplication switched on (with no keys, as the plugin starts its
        // cache) or off by a policy.
        let dedup = match (args.dedup, q.dedup.is_some()) {
            (true, false) => {
                q.dedup = Some(Box::default());
                1
            }
            (false, true) => {
                q.dedup = None;
                -1
            }
            _ => 0,
        };
        q.args = args;
        let b = &mut self.broker;
        b.dedup_queues = b.dedup_queues.saturating_add_signed(dedup);
        self.drop_over_limit(id);
        if expires_changed {
            // Counted from now (touch_queue marks it used now).
            self.touch_queue(id);
        }
        self.mark_queue(id);
    }

    /// Set a vhost's or a user's limits (all of them: those not given are
    /// removed), as `rabbitmqctl set_vhost_limits` and `set_user_limits` do.
    pub fn set_limits(&mut self, of: LimitsOf, owner: &str, limits: Limits) -> Result<(), String> {
        let exists = match of {
            LimitsOf::Vhost => self.broker.vhost(owner.as_bytes()).is_some(),
            LimitsOf::User => self.broker.auth.users.contains_key(owner),
        };
        if !exists {
            return Err(format!("no {} '{owner}'", of.owner_key()));
        }
        let m = self.broker.runtime.limits_mut(of);
        if limits.0.is_empty() {
            m.remove(owner);
        } else {
            m.insert(owner.to_string(), limits);
        }
        self.param_changed(of.component(), owner, "limits");
        Ok(())
    }

    /// Policies, operator policies, limits and parameters (shovels,
    /// upstreams) of a vhost being deleted.
    pub(crate) fn forget_vhost_runtime(&mut self, vhost: &str) {
        self.forget_vhost_params(vhost);
        let rt = &self.broker.runtime;
        let mut gone: Vec<(&'static str, String)> = Vec::new();
        for kind in [PolicyKind::User, PolicyKind::Operator] {
            let names = kind.set(rt).iter(Some(vhost)).map(|p| p.name.clone());
            gone.extend(names.map(|n| (kind.component(), n)));
        }
        if rt.vhost_limits.contains_key(vhost) {
            gone.push((LimitsOf::Vhost.component(), "limits".into()));
        }
        let rt = &mut self.broker.runtime;
        rt.policies.remove_vhost(vhost);
        rt.operator_policies.remove_vhost(vhost);
        rt.vhost_limits.remove(vhost);
        for (component, name) in gone {
            self.param_changed(component, vhost, &name);
        }
    }

    /// The limits of a user being deleted.
    pub(crate) fn forget_user_runtime(&mut self, user: &str) {
        if self.broker.runtime.user_limits.remove(user).is_some() {
            self.param_changed(USER_LIMITS_PARAM, user, "limits");
        }
    }
}

/// Set an exchange's policy, and its alternate exchange: the
/// `alternate-exchange` argument, else its policy's.
fn choose_exchange_policy(
    rt: &crate::broker::policy::Runtime,
    vhost: &[u8],
    x: &mut crate::broker::exchange::Exchange,
) {
    let p = rt.policies.best(vhost, &x.name, Target::Exchange);
    x.policy = p.map(|p| p.name.clone());
    x.alternate = match x.arguments.get("alternate-exchange") {
        Some(v) => v.as_bytes().cloned(),
        None => p.and_then(|p| p.keys.alternate_exchange.clone()),
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec<'a>(vhost: &'a str, name: &'a str, d: Value) -> PolicySpec<'a> {
        PolicySpec {
            vhost,
            name,
            pattern: "^q",
            apply_to: "queues",
            priority: 0,
            definition: d.as_object().cloned().unwrap(),
        }
    }

    /// The deduplication plugin's policy key switches a queue's
    /// deduplication on (with no keys) and off, over its argument.
    #[test]
    fn a_policy_switches_deduplication_on_and_off() {
        use crate::broker::message::Message;
        use crate::codec::{BasicProperties, ContentHeader, FieldTable, FieldValue};
        let mut e = Engine::new(crate::Config::default());
        let nobody = crate::mgmt::definitions::NOBODY;
        let declare = |e: &mut Engine, name: &'static str, dedup: bool| {
            let mut arguments = FieldTable::new();
            if dedup {
                arguments.insert("x-message-deduplication", FieldValue::Bool(true));
            }
            let spec = crate::broker::QueueSpec {
                name: bytes::Bytes::from_static(name.as_bytes()),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                arguments,
            };
            e.declare_queue(b"/", spec, nobody, 0).unwrap().0
        };
        let publish = |e: &mut Engine, q: &'static str| {
            let mut h = FieldTable::new();
            h.insert("x-deduplication-header", FieldValue::I64(7));
            let header = ContentHeader {
                class_id: 60,
                body_size: 0,
                properties: BasicProperties {
                    headers: Some(h),
                    ..Default::default()
                },
            };
            let mut buf = bytes::BytesMut::new();
            header.encode(&mut buf);
            let m = Message::new(
                bytes::Bytes::new(),
                bytes::Bytes::from_static(q.as_bytes()),
                buf.freeze(),
                bytes::Bytes::new(),
                false,
            );
            e.publish(b"/", m, false).unwrap();
        };
        let depth = |e: &Engine, q| e.broker.queue(q).unwrap().ready.len();
        let plain = declare(&mut e, "q-plain", false);
        let with_arg = declare(&mut e, "q-arg", true);
        for q in ["q-plain", "q-arg"] {
            publish(&mut e, q);
            publish(&mut e, q);
        }
        assert_eq!((depth(&e, plain), depth(&e, with_arg)), (2, 1));
        assert_eq!(e.broker.dedup_queues, 1);
        e.set_policy(
            PolicyKind::User,
            spec("/", "p", json!({"x-message-deduplication": true})),
        )
        .unwrap();
        assert_eq!(e.broker.dedup_queues, 2);
        // Switched on with no keys: the messages already queued hold none.
        for _ in 0..2 {
            publish(&mut e, "q-plain");
        }
        assert_eq!(depth(&e, plain), 3);
        // The policy wins over the argument.
        e.set_policy(
            PolicyKind::User,
            spec("/", "p", json!({"x-message-deduplication": false})),
        )
        .unwrap();
        assert_eq!(e.broker.dedup_queues, 0);
        publish(&mut e, "q-arg");
        assert_eq!(depth(&e, with_arg), 2);
        assert!(e.clear_policy(PolicyKind::User, "/", "p"));
        assert_eq!(e.broker.dedup_queues, 1);
        let bad = e.set_policy(
            PolicyKind::User,
            spec("/", "p", json!({"x-message-deduplication": 1})),
        );
        assert_eq!(
            bad.unwrap_err(),
            "'x-message-deduplication' must be a boolean, got 1"
        );
        let bad = e.set_policy(PolicyKind::User, spec("/", "p", json!({"x-cache-size": 0})));
        assert_eq!(
            bad.unwrap_err(),
            "'x-cache-size' must be an integer greater than 0, got 0"
        );
    }

    /// Policies and limits are durable item by item: set, changed, and
    /// removed with their vhost or user, through the log and a snapshot.
    #[test]
    fn policies_and_limits_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("warren-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = crate::Config {
            data_dir: Some(dir.clone()),
            ..crate::Config::default()
        };
        let limits = |v: Value| Limits::parse(&v, &crate::broker::policy::VHOST_LIMITS).unwrap();
        let user_limits =
            |v: Value| Limits::parse(&v, &crate::broker::policy::USER_LIMITS).unwrap();
        for snapshot in [false, true] {
            let mut e = Engine::open(cfg.clone()).unwrap();
            let now = std::time::Instant::now();
            e.add_vhost("gone");
            e.put_user("bob", Some("pw"), None, Vec::new()).unwrap();
            e.set_policy(PolicyKind::User, spec("/", "p", json!({"max-length": 1})))
                .unwrap();
            e.set_policy(PolicyKind::User, spec("/", "p", json!({"max-length": 2})))
                .unwrap();
            e.set_policy(
                PolicyKind::Operator,
                spec("/", "o", json!({"message-ttl": 5})),
            )
            .unwrap();
            e.set_policy(
                PolicyKind::User,
                spec("gone", "g", json!({"max-length": 3})),
            )
            .unwrap();
            e.set_limits(LimitsOf::Vhost, "/", limits(json!({"max-queues": 7})))
                .unwrap();
            e.set_limits(LimitsOf::Vhost, "gone", limits(json!({"max-queues": 1})))
                .unwrap();
            e.set_limits(
                LimitsOf::User,
                "guest",
                user_limits(json!({"max-channels": 9})),
            )
            .unwrap();
            e.set_limits(
                LimitsOf::User,
                "bob",
                user_limits(json!({"max-channels": 1})),
            )
            .unwrap();
            e.delete_vhost("gone");
            e.delete_user("bob");
            if snapshot {
                e.broker.def_changes.push(DefChange::All);
            }
            assert!(e.group_commit(now, true, false).1.is_ok());
            e.close_store();
            drop(e);
            let e = Engine::open(cfg.clone()).unwrap();
            let rt = &e.broker.runtime;
            let p = rt.policies.get("/", "p").expect("policy restored");
            assert_eq!(p.keys.max_length, Some(2));
            assert!(rt.operator_policies.get("/", "o").is_some());
            assert!(rt.policies.get("gone", "g").is_none());
            assert_eq!(rt.vhost_limit(b"/", "max-queues"), Some(7));
            assert!(!rt.vhost_limits.contains_key("gone"));
            assert_eq!(rt.user_limit(b"guest", "max-channels"), Some(9));
            assert!(!rt.user_limits.contains_key("bob"));
            drop(e);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod bench {
    use super::*;
    use crate::broker::QueueSpec;
    use serde_json::json;

    /// `cargo test --release --lib policy_reapply_timing -- --ignored --nocapture`:
    /// the engine alone, 10,000 queues and 1,000 policies.
    #[test]
    #[ignore]
    fn policy_reapply_timing() {
        let mut e = Engine::new(crate::Config {
            data_dir: None,
            ..crate::Config::default()
        });
        let nobody = crate::mgmt::definitions::NOBODY;
        for i in 0..1000 {
            for j in 0..10 {
                let spec = QueueSpec {
                    name: bytes::Bytes::from(format!("app-{i}-{j}")),
                    passive: false,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    arguments: Default::default(),
                };
                e.declare_queue(b"/", spec, nobody, 0).unwrap();
            }
            let pattern = format!("^app-{i}-");
            let name = format!("p-{i}");
            e.set_policy(
                PolicyKind::User,
                PolicySpec {
                    vhost: "/",
                    name: &name,
                    pattern: &pattern,
                    apply_to: "queues",
                    priority: i % 10,
                    definition: json!({"max-length": 100000}).as_object().cloned().unwrap(),
                },
            )
            .unwrap();
        }
        for round in 0..3 {
            let t = std::time::Instant::now();
            e.set_policy(
                PolicyKind::User,
                PolicySpec {
                    vhost: "/",
                    name: "all",
                    pattern: ".*",
                    apply_to: "queues",
                    priority: 100,
                    definition: json!({"max-length": 50000}).as_object().cloned().unwrap(),
                },
            )
            .unwrap();
            let set = t.elapsed();
            let t = std::time::Instant::now();
            e.clear_policy(PolicyKind::User, "/", "all");
            let clear = t.elapsed();
            let t = std::time::Instant::now();
            e.set_policy(
                PolicyKind::User,
                PolicySpec {
                    vhost: "/",
                    name: "p-0",
                    pattern: "^app-0-",
                    apply_to: "queues",
                    priority: 0,
                    definition: json!({"max-length": 1000 + round})
                        .as_object()
                        .cloned()
                        .unwrap(),
                },
            )
            .unwrap();
            let one = t.elapsed();
            println!("round {round}: catch-all set {set:?}, cleared {clear:?}, one policy {one:?}");
            while e.next_dirty().is_some() {}
        }
    }
}
