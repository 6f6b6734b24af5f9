//! RabbitMQ's JSON definitions format: export what the broker holds, and
//! import a file exported by RabbitMQ (or by us) through the broker's
//! ordinary declare/bind paths.
//!
//! Export follows RabbitMQ 3.10: users (sha256 password hashes, tags as a
//! list), vhosts, permissions, every non-exclusive queue and every
//! non-built-in exchange (durable or not), and the bindings between them.
//! Import accepts tags as a list or as RabbitMQ 3.x's comma-separated
//! string, `password_hash` or a plain `password`, and logs and skips what
//! warren does not apply (global parameters, runtime parameters of
//! components other than `operator_policy`, `vhost-limits`, `shovel`,
//! `federation-upstream` and `federation-upstream-set`).

use bytes::Bytes;
use log::warn;
use serde_json::{json, Value};

use super::json::{get_bool, get_str, get_table, table_to_json};
use crate::broker::auth::HASHING_ALGORITHM;
use crate::broker::exchange::Dest;
use crate::broker::params;
use crate::broker::policy::{
    validation_failed, Limits, LimitsOf, OPERATOR_POLICY, USER_LIMITS, VHOST_LIMITS,
    VHOST_LIMITS_PARAM,
};
use crate::broker::{ConnId, ExchangeSpec, QueueSpec};
use crate::engine::{Engine, PolicyKind, PolicySpec};

/// RabbitMQ version whose API and formats this follows.
pub const COMPAT_VERSION: &str = "3.10.8";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The connection id used for operator-made entities (never exclusive).
pub const NOBODY: ConnId = ConnId {
    idx: u32::MAX,
    gen: 0,
};

/// Is this a built-in exchange (the default one or `amq.*`)?
pub fn builtin_exchange(name: &[u8]) -> bool {
    name.is_empty() || name.starts_with(b"amq.")
}

fn sorted_vhosts(engine: &Engine, only: Option<&str>) -> Vec<Bytes> {
    let mut v: Vec<Bytes> = engine
        .broker
        .vhosts
        .keys()
        .filter(|k| only.is_none_or(|o| k.as_ref() == o.as_bytes()))
        .cloned()
        .collect();
    v.sort();
    v
}

/// Queues, exchanges and bindings of the given vhosts, as definitions.
fn entities(
    engine: &Engine,
    vhosts: &[Bytes],
    with_vhost: bool,
) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let b = &engine.broker;
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    for vname in vhosts {
        let Some(vh) = b.vhost(vname) else { continue };
        let vs = lossy(vname);
        let mut qnames: Vec<_> = vh.queues.iter().collect();
        qnames.sort_by(|a, c| a.0.cmp(c.0));
        for (_, id) in qnames {
            let Some(q) = b.queue(*id) else { continue };
            if q.exclusive_owner.is_some() {
                continue;
            }
            let mut o = json!({
                "name": lossy(&q.name),
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": table_to_json(&q.arguments),
            });
            if with_vhost {
                if let Some(m) = o.as_object_mut() {
                    m.insert("vhost".into(), json!(vs));
                }
            }
            queues.push(o);
        }
        let mut xs: Vec<_> = vh.exchanges.values().collect();
        xs.sort_by(|a, c| a.name.cmp(&c.name));
        for x in &xs {
            if builtin_exchange(&x.name) {
                continue;
            }
            let mut o = json!({
                "name": lossy(&x.name),
                "type": x.kind.name(),
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": table_to_json(&x.arguments),
            });
            if with_vhost {
                if let Some(m) = o.as_object_mut() {
                    m.insert("vhost".into(), json!(vs));
                }
            }
            exchanges.push(o);
        }
        for x in &xs {
            if x.name.is_empty() {
                continue;
            }
            for bd in &x.bindings {
                let (dtype, dest) = match &bd.dest {
                    Dest::Queue(id) => match b.queue(*id) {
                        Some(q) if q.exclusive_owner.is_none() => ("queue", q.name.clone()),
                        _ => continue,
                    },
                    Dest::Exchange(n) => ("exchange", n.clone()),
                };
                let mut o = json!({
                    "source": lossy(&x.name),
                    "destination": lossy(&dest),
                    "destination_type": dtype,
                    "routing_key": lossy(&bd.routing_key),
                    "arguments": table_to_json(&bd.arguments),
                });
                if with_vhost {
                    if let Some(m) = o.as_object_mut() {
                        m.insert("vhost".into(), json!(vs));
                    }
                }
                bindings.push(o);
            }
        }
    }
    (queues, exchanges, bindings)
}

/// A user as the API and definitions show it, with its limits.
pub fn user_json(engine: &Engine, u: &crate::broker::auth::User) -> Value {
    let limits = engine
        .broker
        .runtime
        .user_limits
        .get(&u.name)
        .map_or_else(|| json!({}), |l| l.to_json());
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": u.tags,
        "limits": limits,
    })
}

/// The policies of the given vhosts, as definitions list them.
fn policies_json(engine: &Engine, vhost: Option<&str>) -> Vec<Value> {
    engine
        .broker
        .runtime
        .policies
        .iter(vhost)
        .map(|p| {
            let mut v = p.to_json();
            if let (Some(_), Some(m)) = (vhost, v.as_object_mut()) {
                m.remove("vhost");
            }
            v
        })
        .collect()
}

/// Runtime parameters as RabbitMQ lists them (`/api/parameters`) and
/// exports them: operator policies (component `operator_policy`), vhost
/// limits (`vhost-limits`), then shovels, federation upstreams and upstream
/// sets; each `{"vhost", "component", "name", "value"}`, only those of
/// `component` and in `vhost` where given.
pub fn parameter_items(
    engine: &Engine,
    component: Option<&str>,
    vhost: Option<&str>,
) -> Vec<Value> {
    let rt = &engine.broker.runtime;
    let wants = |c: &str| component.is_none_or(|x| x == c);
    let mut out: Vec<Value> = Vec::new();
    if wants(OPERATOR_POLICY) {
        out.extend(rt.operator_policies.iter(vhost).map(|p| {
            json!({
                "vhost": p.vhost,
                "component": OPERATOR_POLICY,
                "name": p.name,
                "value": {"pattern": p.pattern, "definition": p.definition,
                          "priority": p.priority, "apply-to": p.apply_to.name()},
            })
        }));
    }
    if wants(VHOST_LIMITS_PARAM) {
        for (v, l) in &rt.vhost_limits {
            if vhost.is_none_or(|x| x == v) {
                out.push(json!({"vhost": v, "component": VHOST_LIMITS_PARAM, "name": "limits", "value": l.to_json()}));
            }
        }
    }
    for (c, v, n, value) in rt.parameters_in(component, vhost) {
        out.push(json!({"vhost": v, "component": c, "name": n, "value": value}));
    }
    out
}

/// A parameter's value from a PUT body or a definitions entry: as given,
/// or the JSON a string holds (older tools send it encoded).
pub fn param_value(v: &Value) -> Value {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => inner,
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

/// Runtime parameters as RabbitMQ exports them (see [`parameter_items`]).
fn parameters_json(engine: &Engine, vhost: Option<&str>) -> Vec<Value> {
    let mut out = parameter_items(engine, None, vhost);
    if vhost.is_some() {
        for p in &mut out {
            if let Some(m) = p.as_object_mut() {
                m.remove("vhost");
            }
        }
    }
    out
}

/// `GET /api/definitions` (all) or `/api/definitions/VHOST` (one vhost's
/// queues, exchanges and bindings, without vhost fields).
pub fn export(engine: &Engine, vhost: Option<&str>) -> Option<Value> {
    if let Some(v) = vhost {
        engine.broker.vhost(v.as_bytes())?;
        let (queues, exchanges, bindings) = entities(engine, &sorted_vhosts(engine, vhost), false);
        return Some(json!({
            "rabbit_version": COMPAT_VERSION,
            "rabbitmq_version": COMPAT_VERSION,
            "product_name": "Warren",
            "product_version": env!("CARGO_PKG_VERSION"),
            "parameters": parameters_json(engine, vhost),
            "policies": policies_json(engine, vhost),
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        }));
    }
    let auth = &engine.broker.auth;
    let users: Vec<Value> = auth.users.values().map(|u| user_json(engine, u)).collect();
    let vhosts = sorted_vhosts(engine, None);
    let vhost_list: Vec<Value> = vhosts
        .iter()
        .map(|v| json!({"name": lossy(v), "limits": [], "metadata": {"description": "", "tags": []}}))
        .collect();
    let permissions: Vec<Value> = auth
        .permissions
        .iter()
        .map(|((u, v), p)| {
            json!({"user": u, "vhost": v, "configure": &*p.configure, "write": &*p.write, "read": &*p.read})
        })
        .collect();
    let topic_permissions: Vec<Value> = auth
        .topic_permissions
        .iter()
        .map(|(k, p)| topic_permission_json(k, p))
        .collect();
    let (queues, exchanges, bindings) = entities(engine, &vhosts, true);
    Some(json!({
        "rabbit_version": COMPAT_VERSION,
        "rabbitmq_version": COMPAT_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhost_list,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": parameters_json(engine, None),
        "global_parameters": [],
        "policies": policies_json(engine, None),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }))
}

/// A topic permission as RabbitMQ's API and definitions show it.
pub fn topic_permission_json(
    (user, vhost, exchange): &(String, String, String),
    p: &crate::broker::auth::TopicPermission,
) -> Value {
    json!({"user": user, "vhost": vhost, "exchange": exchange, "write": p.write, "read": p.read})
}

/// User tags from a definitions file or a PUT body: a list, or a
/// comma-separated string (RabbitMQ 3.x exports).
pub fn parse_tags(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(String::from)
                    .ok_or_else(|| "tags must be strings".to_string())
            })
            .collect(),
        Some(_) => Err("tags must be a list or a comma-separated string".into()),
    }
}

/// Create or update a user from a definitions entry or a PUT body. Returns
/// whether the user was created.
pub fn put_user(engine: &mut Engine, name: &str, body: &Value) -> Result<bool, String> {
    let tags = parse_tags(body.get("tags"))?;
    if let Some(alg) = get_str(body, "hashing_algorithm") {
        if alg != HASHING_ALGORITHM {
            return Err(format!(
                "hashing algorithm '{alg}' is not supported (only {HASHING_ALGORITHM})"
            ));
        }
    }
    let hash = get_str(body, "password_hash");
    let password = get_str(body, "password");
    if let Some(h) = hash.filter(|h| !h.is_empty()) {
        match crate::broker::auth::base64_decode(h) {
            Some(raw) if raw.len() == 36 => {}
            _ => {
                return Err(format!(
                    "password_hash of user '{name}' is not a sha256 hash"
                ))
            }
        }
    }
    let exists = engine.broker.auth.users.contains_key(name);
    if hash.is_none() && password.is_none() && !exists {
        return Err("key_missing: password or password_hash".into());
    }
    engine.put_user(name, password, hash, tags)?;
    Ok(!exists)
}

/// Create or replace a policy from a PUT body or a definitions entry
/// (`pattern`, `definition`, `priority`, `apply-to`). Returns whether it
/// was created; a bad policy is RabbitMQ's "Validation failed" text.
pub fn put_policy(
    engine: &mut Engine,
    kind: PolicyKind,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, String> {
    let pattern = match body.get("pattern") {
        None => return Err("[{key_missing,pattern}]".into()),
        Some(Value::String(p)) => p.as_str(),
        Some(v) => {
            return Err(validation_failed(&format!(
                "pattern should be a binary but was {}",
                crate::broker::policy::erl(v)
            )))
        }
    };
    let definition = match body.get("definition") {
        Some(Value::Object(m)) => m.clone(),
        // rabbitmqadmin and older tools send the definition as a string.
        Some(Value::String(s)) => match serde_json::from_str(s) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(validation_failed(&format!(
                    "<<\"{s}\">> is not a valid JSON object"
                )))
            }
        },
        Some(_) => return Err(validation_failed("definition must be a JSON object")),
        None => return Err("[{key_missing,definition}]".into()),
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(v) => match v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(n) => n,
            None => {
                return Err(validation_failed(&format!(
                    "priority should be a number, actually was {}",
                    crate::broker::policy::erl(v)
                )))
            }
        },
    };
    let apply_to = get_str(body, "apply-to").unwrap_or("all");
    let spec = PolicySpec {
        vhost,
        name,
        pattern,
        apply_to,
        priority,
        definition,
    };
    engine.set_policy(kind, spec).map_err(|e| {
        if e.starts_with("no vhost") {
            e
        } else {
            validation_failed(&e)
        }
    })
}

fn field<'a>(item: &'a Value, key: &str, what: &str) -> Result<&'a str, String> {
    get_str(item, key).ok_or_else(|| format!("{what}: missing '{key}'"))
}

fn items<'a>(defs: &'a Value, key: &str) -> &'a [Value] {
    defs.get(key)
        .and_then(|v| v.as_array())
        .map_or(&[], |a| a.as_slice())
}

/// Declare an exchange from an API body or definitions entry. Returns
/// whether it was created.
pub fn declare_exchange(
    engine: &mut Engine,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, String> {
    let kind = get_str(body, "type").ok_or("key_missing: type")?;
    let existed = engine
        .broker
        .vhost(vhost.as_bytes())
        .is_some_and(|v| v.exchanges.contains_key(name.as_bytes()));
    let spec = ExchangeSpec {
        name: Bytes::from(name.to_string()),
        kind: Bytes::from(kind.to_string()),
        passive: false,
        durable: get_bool(body, "durable", true)?,
        auto_delete: get_bool(body, "auto_delete", false)?,
        internal: get_bool(body, "internal", false)?,
        arguments: get_table(body, "arguments")?,
    };
    engine
        .declare_exchange(vhost.as_bytes(), spec)
        .map_err(|e| e.text.to_string())?;
    Ok(!existed)
}

/// Declare a queue from an API body or definitions entry. Returns whether
/// it was created.
pub fn declare_queue(
    engine: &mut Engine,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, String> {
    if name.is_empty() {
        return Err("queue name must not be empty".into());
    }
    let spec = QueueSpec {
        name: Bytes::from(name.to_string()),
        passive: false,
        durable: get_bool(body, "durable", true)?,
        exclusive: false,
        auto_delete: get_bool(body, "auto_delete", false)?,
        arguments: get_table(body, "arguments")?,
    };
    let (_, created) = engine
        .declare_queue(vhost.as_bytes(), spec, NOBODY, 0)
        .map_err(|e| e.text.to_string())?;
    Ok(created)
}

/// Add a binding from an API body or definitions entry.
pub fn bind(
    engine: &mut Engine,
    vhost: &str,
    source: &str,
    dest_type: &str,
    dest: &str,
    body: &Value,
) -> Result<(), String> {
    let d = match dest_type {
        "queue" | "q" => Dest::Queue(
            engine
                .find_queue(vhost.as_bytes(), dest.as_bytes())
                .ok_or_else(|| format!("no queue '{dest}' in vhost '{vhost}'"))?,
        ),
        "exchange" | "e" => Dest::Exchange(Bytes::from(dest.to_string())),
        other => return Err(format!("bad destination_type '{other}'")),
    };
    let rk = get_str(body, "routing_key").unwrap_or("");
    let args = get_table(body, "arguments")?;
    engine
        .bind(
            vhost.as_bytes(),
            source.as_bytes(),
            d,
            Bytes::from(rk.to_string()),
            args,
        )
        .map_err(|e| e.text.to_string())
}

/// What an import did: how many entities of each kind it applied, what it
/// skipped (as RabbitMQ skips them, each with a WARN line) and what failed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportReport {
    /// Applied entities per kind, in import order.
    pub applied: Vec<(&'static str, usize)>,
    /// What was skipped, and why.
    pub skipped: Vec<String>,
    /// What was applied only in part (policy keys warren keeps without
    /// acting on them).
    pub warnings: Vec<String>,
    /// Errors (the rest was still applied).
    pub errors: Vec<String>,
}

impl ImportReport {
    fn count(&mut self, kind: &'static str) {
        match self.applied.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.applied.push((kind, 1)),
        }
    }

    fn skip(&mut self, why: String) {
        warn!("definitions import: {why}");
        self.skipped.push(why);
    }

    fn warn(&mut self, why: String) {
        warn!("definitions import: {why}");
        self.warnings.push(why);
    }

    fn note(&mut self, kind: &'static str, r: Result<(), String>) {
        match r {
            Ok(()) => self.count(kind),
            Err(e) => {
                warn!("definitions import: {e}");
                self.errors.push(e);
            }
        }
    }

    /// The report as the management API answers it.
    pub fn to_json(&self) -> Value {
        let applied: serde_json::Map<String, Value> = self
            .applied
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        json!({"applied": applied, "skipped": self.skipped, "warnings": self.warnings,
               "errors": self.errors})
    }

    /// Everything that went wrong, on one line.
    pub fn error_text(&self) -> String {
        self.errors.join("; ")
    }
}

/// Names RabbitMQ reserves: server-named queues (`amq.gen-*`) and every
/// other `amq.*` name are not imported.
fn reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

/// Import `config.definitions` (after the durable state is restored).
/// Whatever can be applied is; any error fails the start, as in RabbitMQ.
pub fn load_file(engine: &mut Engine) -> std::io::Result<()> {
    let Some(path) = engine.config.definitions.clone() else {
        return Ok(());
    };
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let defs = crate::config_file::read_definitions(&path).map_err(bad)?;
    let rep = import(engine, &defs, None)
        .and_then(|rep| match rep.errors.is_empty() {
            true => Ok(rep),
            false => Err(rep.error_text()),
        })
        .map_err(|e| {
            bad(format!(
                "{}: importing definitions failed: {e}",
                path.display()
            ))
        })?;
    log::info!(
        "imported definitions from {} ({} skipped)",
        path.display(),
        rep.skipped.len()
    );
    Ok(())
}

/// `POST /api/definitions[/VHOST]`: apply a definitions document. Entities
/// are created in dependency order; every error is collected and the rest
/// still applied (as RabbitMQ, nothing is rolled back). What RabbitMQ skips
/// is skipped with a WARN line: queues and exchanges named `amq.*` (an
/// export taken while clients were connected lists their `amq.gen-*`
/// queues), the bindings of those, and what warren does not implement yet.
pub fn import(
    engine: &mut Engine,
    defs: &Value,
    vhost: Option<&str>,
) -> Result<ImportReport, String> {
    if !defs.is_object() {
        return Err("definitions must be a JSON object".into());
    }
    let mut rep = ImportReport::default();
    if vhost.is_none() {
        for u in items(defs, "users") {
            let r = field(u, "name", "user").and_then(|n| {
                put_user(engine, n, u)?;
                match u.get("limits") {
                    Some(l) if l.as_object().is_some_and(|m| !m.is_empty()) => {
                        let l = Limits::parse(l, &USER_LIMITS)
                            .map_err(|e| format!("limits of user '{n}': {e}"))?;
                        engine.set_limits(LimitsOf::User, n, l)
                    }
                    _ => Ok(()),
                }
            });
            rep.note("users", r);
        }
        for v in items(defs, "vhosts") {
            let r = field(v, "name", "vhost").map(|n| engine.add_vhost(n));
            rep.note("vhosts", r);
        }
        for p in items(defs, "permissions") {
            let r = (|| {
                let user = field(p, "user", "permission")?;
                let vh = field(p, "vhost", "permission")?;
                engine.set_permissions(
                    user,
                    vh,
                    get_str(p, "configure").unwrap_or(""),
                    get_str(p, "write").unwrap_or(""),
                    get_str(p, "read").unwrap_or(""),
                )
            })();
            rep.note("permissions", r);
        }
        for p in items(defs, "topic_permissions") {
            let r = (|| {
                let user = field(p, "user", "topic permission")?;
                let vh = field(p, "vhost", "topic permission")?;
                let x = field(p, "exchange", "topic permission")?;
                engine.set_topic_permissions(
                    user,
                    vh,
                    x,
                    get_str(p, "write").unwrap_or(""),
                    get_str(p, "read").unwrap_or(""),
                )
            })();
            rep.note("topic_permissions", r);
        }
    }
    let vhost_of = |item: &Value| -> Result<String, String> {
        match vhost {
            Some(v) => Ok(v.to_string()),
            None => get_str(item, "vhost")
                .map(String::from)
                .ok_or_else(|| "missing 'vhost'".to_string()),
        }
    };
    for p in items(defs, "parameters") {
        let component = get_str(p, "component").unwrap_or("");
        let name = get_str(p, "name").unwrap_or("?");
        let value = p.get("value").unwrap_or(&Value::Null);
        match component {
            VHOST_LIMITS_PARAM => {
                let r = vhost_of(p).and_then(|vh| {
                    let l = Limits::parse(value, &VHOST_LIMITS)
                        .map_err(|e| format!("limits of vhost '{vh}': {e}"))?;
                    engine.set_limits(LimitsOf::Vhost, &vh, l)
                });
                rep.note("vhost_limits", r);
            }
            OPERATOR_POLICY => {
                let r = vhost_of(p).and_then(|vh| {
                    put_policy(engine, PolicyKind::Operator, &vh, name, value)
                        .map(drop)
                        .map_err(|e| format!("operator policy '{name}': {}", e.trim_end()))
                });
                rep.note("operator_policies", r);
            }
            c if params::component(c).is_some() => {
                let r = vhost_of(p).and_then(|vh| {
                    let name = field(p, "name", "parameter")?;
                    engine
                        .set_param(c, &vh, name, param_value(value))
                        .map(drop)
                        .map_err(|e| {
                            format!(
                                "parameter '{name}' of component '{c}' in vhost '{vh}': {}",
                                e.trim_end().replace('\n', "; ")
                            )
                        })
                });
                rep.note("parameters", r);
            }
            other => rep.skip(format!(
                "skipped parameter '{name}' of component '{other}' (not supported by warren yet)"
            )),
        }
    }
    for p in items(defs, "global_parameters") {
        let name = get_str(p, "name").unwrap_or("?");
        rep.skip(format!(
            "skipped global parameter '{name}' (not supported by warren yet)"
        ));
    }
    for (key, kind) in [
        ("policies", PolicyKind::User),
        ("operator_policies", PolicyKind::Operator),
    ] {
        for p in items(defs, key) {
            let name = get_str(p, "name").unwrap_or("?");
            let r = vhost_of(p).and_then(|vh| {
                put_policy(engine, kind, &vh, name, p)
                    .map_err(|e| format!("policy '{name}' in vhost '{vh}': {}", e.trim_end()))?;
                let set = kind.set(&engine.broker.runtime);
                let inert = set.get(&vh, name).map(|p| p.inert_keys().join(", "));
                if let Some(keys) = inert.filter(|k| !k.is_empty()) {
                    rep.warn(format!(
                        "policy '{name}' in vhost '{vh}': {keys} accepted but has no effect in warren"
                    ));
                }
                Ok(())
            });
            rep.note(
                match kind {
                    PolicyKind::User => "policies",
                    PolicyKind::Operator => "operator_policies",
                },
                r,
            );
        }
    }
    for x in items(defs, "exchanges") {
        let name = get_str(x, "name").unwrap_or("");
        if builtin_exchange(name.as_bytes()) {
            let what = if name.is_empty() {
                "the default exchange".to_string()
            } else {
                format!("exchange '{name}' (names beginning with 'amq.' are reserved)")
            };
            rep.skip(format!("skipped {what}"));
            continue;
        }
        let r = (|| {
            let vh = vhost_of(x)?;
            let name = field(x, "name", "exchange")?;
            declare_exchange(engine, &vh, name, x).map(|_| ())
        })();
        rep.note("exchanges", r);
    }
    for q in items(defs, "queues") {
        let name = get_str(q, "name").unwrap_or("");
        if reserved(name) {
            rep.skip(format!(
                "skipped queue '{name}' (names beginning with 'amq.' are reserved)"
            ));
            continue;
        }
        let r = (|| {
            let vh = vhost_of(q)?;
            let name = field(q, "name", "queue")?;
            declare_queue(engine, &vh, name, q).map(|_| ())
        })();
        rep.note("queues", r);
    }
    for b in items(defs, "bindings") {
        let source = get_str(b, "source").unwrap_or("");
        if source.is_empty() {
            // The default exchange's implicit bindings.
            continue;
        }
        let dest = get_str(b, "destination").unwrap_or("");
        let dtype = get_str(b, "destination_type").unwrap_or("queue");
        let skipped_dest = (dtype == "queue" || dtype == "q") && reserved(dest)
            || (dtype == "exchange" || dtype == "e") && builtin_exchange(dest.as_bytes());
        if skipped_dest {
            rep.skip(format!(
                "skipped binding from '{source}' to {dtype} '{dest}' (its destination is not imported)"
            ));
            continue;
        }
        let r = (|| {
            let vh = vhost_of(b)?;
            let dest = field(b, "destination", "binding")?;
            bind(engine, &vh, source, dtype, dest, b)
        })();
        rep.note("bindings", r);
    }
    engine
        .broker
        .def_changes
        .push(crate::store::definitions::DefChange::All);
    Ok(rep)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::broker::exchange::ExchangeKind;

    fn engine() -> Engine {
        Engine::new(crate::Config {
            data_dir: None,
            ..crate::Config::default()
        })
    }

    #[test]
    fn import_rabbitmq_export_and_export_back() {
        let mut c = engine();
        // As RabbitMQ 3.8 exports it: tags as a string.
        let defs = json!({
            "rabbit_version": "3.8.9",
            "users": [{"name": "ops", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator,monitoring"}],
            "vhosts": [{"name": "prod"}],
            "permissions": [{"user": "ops", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}],
            "policies": [{"vhost": "prod", "name": "ha", "pattern": ".*", "definition": {"ha-mode": "all"}}],
            "exchanges": [{"name": "ev", "vhost": "prod", "type": "topic", "durable": true,
                           "auto_delete": false, "internal": false, "arguments": {}}],
            "queues": [{"name": "jobs", "vhost": "prod", "durable": true, "auto_delete": false,
                        "arguments": {"x-max-length": 100}}],
            "bindings": [{"source": "ev", "vhost": "prod", "destination": "jobs", "destination_type": "queue",
                          "routing_key": "job.#", "arguments": {}}]
        });
        import(&mut c, &defs, None).unwrap();
        assert!(!c.broker.def_changes.is_empty());
        let u = &c.broker.auth.users["ops"];
        assert_eq!(u.tags, vec!["administrator", "monitoring"]);
        let out = export(&c, None).unwrap();
        assert_eq!(out["users"].as_array().unwrap().len(), 2);
        let q = out["queues"].as_array().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0]["arguments"]["x-max-length"], 100);
        assert_eq!(out["bindings"][0]["routing_key"], "job.#");
        assert_eq!(out["exchanges"][0]["type"], "topic");
        // Routing works through what was imported.
        let mut to = Vec::new();
        c.broker
            .route(b"prod", b"ev", b"job.a", None, None, &mut to);
        assert_eq!(to.len(), 1);
        // Re-importing the export is a no-op.
        import(&mut c, &out, None).unwrap();
        // Per-vhost export has no vhost fields.
        let v = export(&c, Some("prod")).unwrap();
        assert!(v["queues"][0].get("vhost").is_none());
        assert!(export(&c, Some("nope")).is_none());
    }

    /// Shovels, upstreams and upstream sets come in through the engine
    /// (validated, one error per bad one) and go out as RabbitMQ exports
    /// them; other components are skipped.
    #[test]
    fn parameters_import_and_export() {
        let mut c = engine();
        let shovel = json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://remote",
                            "dest-queue": "b", "ack-mode": "on-publish"});
        let defs = json!({
            "vhosts": [{"name": "v"}],
            "parameters": [
                {"vhost": "v", "component": "shovel", "name": "s", "value": shovel},
                {"vhost": "v", "component": "federation-upstream", "name": "up",
                 "value": {"uri": "amqp://upstream", "max-hops": 1}},
                {"vhost": "/", "component": "federation-upstream-set", "name": "set",
                 "value": [{"upstream": "up"}]},
                {"vhost": "v", "component": "shovel", "name": "bad",
                 "value": {"src-uri": "amqp://", "src-queue": "a"}},
                {"vhost": "v", "component": "mqtt-port-to-vhost-mapping", "name": "m",
                 "value": {}}
            ]
        });
        let rep = import(&mut c, &defs, None).unwrap();
        assert_eq!(rep.applied, vec![("vhosts", 1), ("parameters", 3)]);
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert!(rep.errors[0].contains("Key \"dest-uri\" not found in bad"));
        assert_eq!(rep.skipped.len(), 1);
        assert_eq!(
            c.broker.runtime.param("shovel", "v", "s"),
            Some(shovel.clone())
        );
        assert_eq!(c.take_param_events().len(), 3);
        let out = export(&c, None).unwrap();
        let ps = out["parameters"].as_array().unwrap();
        assert_eq!(ps.len(), 3);
        assert!(
            ps.contains(&json!({"vhost": "v", "component": "shovel", "name": "s",
                                    "value": shovel}))
        );
        let v = export(&c, Some("v")).unwrap();
        assert_eq!(v["parameters"].as_array().unwrap().len(), 2);
        assert!(v["parameters"][0].get("vhost").is_none());
        // Importing the export again changes nothing.
        let rep = import(&mut c, &out, None).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert!(c.take_param_events().is_empty());
        // A per-vhost export imports into another vhost.
        c.add_vhost("w");
        import(&mut c, &v, Some("w")).unwrap();
        assert!(c
            .broker
            .runtime
            .param("federation-upstream", "w", "up")
            .is_some());
    }

    /// The exchange a RabbitMQ federation downstream declares here (type
    /// `x-federation-upstream`) is exported with its type and arguments and
    /// imports back; one without a long `x-max-hops` is refused.
    #[test]
    fn federation_upstream_exchange_export_and_import() {
        let mut c = engine();
        let up = "federation: fed.x -> rabbit@down A";
        let defs = json!({
            "exchanges": [
                {"name": "fed.x", "vhost": "/", "type": "topic", "durable": true,
                 "auto_delete": false, "internal": false, "arguments": {}},
                {"name": up, "vhost": "/", "type": "x-federation-upstream", "durable": true,
                 "auto_delete": true, "internal": true,
                 "arguments": {"x-max-hops": 1, "x-downstream-name": "rabbit@down",
                               "x-downstream-vhost": "/", "x-internal-purpose": "federation"}},
                {"name": "bad", "vhost": "/", "type": "x-federation-upstream", "durable": true,
                 "arguments": {"x-max-hops": "1"}}
            ],
            "bindings": [{"source": "fed.x", "vhost": "/", "destination": up,
                          "destination_type": "exchange", "routing_key": "a.#", "arguments": {}}]
        });
        let rep = import(&mut c, &defs, None).unwrap();
        assert_eq!(rep.applied, vec![("exchanges", 2), ("bindings", 1)]);
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert!(
            rep.errors[0].contains("Argument x-max-hops must be of type long"),
            "{:?}",
            rep.errors
        );
        let out = export(&c, None).unwrap();
        let x = out["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == up)
            .unwrap()
            .clone();
        assert_eq!(x["type"], "x-federation-upstream");
        assert_eq!(x["internal"], true);
        assert_eq!(x["auto_delete"], true);
        assert_eq!(x["arguments"]["x-max-hops"], 1);
        assert_eq!(x["arguments"]["x-downstream-name"], "rabbit@down");
        // Into a fresh broker: the same exchange, filtering as before.
        let mut d = engine();
        let rep = import(&mut d, &out, None).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let got = &d.broker.vhost(b"/").unwrap().exchanges[up.as_bytes()];
        assert_eq!(got.kind, ExchangeKind::FederationUpstream);
        assert_eq!(got.hops.max_hops, 1);
        assert_eq!(
            got.hops.downstream_name.as_deref(),
            Some(&b"rabbit@down"[..])
        );
        assert_eq!(export(&d, None).unwrap()["exchanges"], out["exchanges"]);
    }

    #[test]
    fn delayed_message_exchanges_round_trip() {
        let mut c = engine();
        let defs = json!({
            "exchanges": [
                {"name": "later", "vhost": "/", "type": "x-delayed-message", "durable": true,
                 "arguments": {"x-delayed-type": "topic"}},
                {"name": "bad", "vhost": "/", "type": "x-delayed-message", "durable": true,
                 "arguments": {}}
            ]
        });
        let rep = import(&mut c, &defs, None).unwrap();
        assert_eq!(rep.applied, vec![("exchanges", 1)]);
        assert!(
            rep.errors[0].contains("'x-delayed-type' must be an existing exchange type"),
            "{:?}",
            rep.errors
        );
        let out = export(&c, None).unwrap();
        let x = out["exchanges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "later")
            .unwrap()
            .clone();
        assert_eq!(x["type"], "x-delayed-message");
        assert_eq!(x["arguments"]["x-delayed-type"], "topic");
        let mut d = engine();
        let rep = import(&mut d, &out, None).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        let got = &d.broker.vhost(b"/").unwrap().exchanges[&b"later"[..]];
        assert_eq!(got.kind, ExchangeKind::Delayed);
        assert_eq!(got.route_kind, ExchangeKind::Topic);
        assert_eq!(export(&d, None).unwrap()["exchanges"], out["exchanges"]);
    }

    #[test]
    fn import_reports_errors_and_applies_the_rest() {
        let mut c = engine();
        let defs = json!({
            "queues": [{"name": "ok", "vhost": "/", "durable": false},
                       {"name": "bad", "vhost": "missing"}],
            "exchanges": [{"name": "x", "vhost": "/", "type": "nonsense"}]
        });
        let rep = import(&mut c, &defs, None).unwrap();
        let e = rep.error_text();
        assert!(e.contains("missing"), "{e}");
        assert!(e.contains("nonsense"), "{e}");
        assert!(c.find_queue(b"/", b"ok").is_some());
        // Exactly what was applied is reported.
        assert_eq!(rep.applied, vec![("queues", 1)]);
    }

    /// An export taken while clients were connected lists their server-named
    /// queues and the bindings to them: RabbitMQ skips those (with a warning)
    /// and imports the rest; so does warren, and says what it skipped.
    #[test]
    fn import_skips_what_rabbitmq_skips() {
        let mut c = engine();
        let defs = json!({
            "exchanges": [{"name": "amq.topic", "vhost": "/", "type": "topic", "durable": true},
                          {"name": "events", "vhost": "/", "type": "fanout", "durable": true}],
            "queues": [{"name": "amq.gen-JzTY20BRgKO-HjmUJj0wLg", "vhost": "/", "durable": false,
                        "auto_delete": false, "arguments": {}},
                       {"name": "work", "vhost": "/", "durable": true}],
            "bindings": [{"source": "events", "vhost": "/", "destination": "amq.gen-JzTY20BRgKO-HjmUJj0wLg",
                          "destination_type": "queue", "routing_key": "", "arguments": {}},
                         {"source": "events", "vhost": "/", "destination": "work",
                          "destination_type": "queue", "routing_key": "", "arguments": {}}],
            "policies": [{"vhost": "/", "name": "ttl", "pattern": ".*", "definition": {"message-ttl": 1}}],
            "global_parameters": [{"name": "cluster_name", "value": "rabbit@old"}]
        });
        let rep = import(&mut c, &defs, None).unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(
            rep.applied,
            vec![
                ("policies", 1),
                ("exchanges", 1),
                ("queues", 1),
                ("bindings", 1)
            ]
        );
        assert_eq!(rep.skipped.len(), 4, "{:?}", rep.skipped);
        assert!(rep.skipped.iter().any(|s| s.contains("cluster_name")));
        // The policy applies to what was imported.
        let work = c.find_queue(b"/", b"work").unwrap();
        assert_eq!(c.broker.queue(work).unwrap().args.message_ttl, Some(1));
        assert!(rep
            .skipped
            .iter()
            .any(|s| s.contains("amq.gen-JzTY20BRgKO")));
        assert!(c
            .find_queue(b"/", b"amq.gen-JzTY20BRgKO-HjmUJj0wLg")
            .is_none());
        assert!(c.find_queue(b"/", b"work").is_some());
        let json = rep.to_json();
        assert_eq!(json["applied"]["queues"], 1);
        assert_eq!(json["skipped"].as_array().unwrap().len(), 4);
    }
}
