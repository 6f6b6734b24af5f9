//! Runtime parameter actions for the components `shovel`,
//! `federation-upstream` and `federation-upstream-set` (the management
//! API, `warren ctl` and the definitions import call them): validated by
//! `crate::broker::params`, kept in `broker.runtime.parameters`, durable in
//! the definitions log like policies, and announced to the link manager
//! through `Engine::param_events`.

use log::info;
use serde_json::Value;

use super::Engine;
use crate::broker::params;

impl Engine {
    /// Create or replace the parameter `name` of `component` in `vhost`.
    /// Returns whether it was created. The error is RabbitMQ's reason (one
    /// per line; see `broker::policy::validation_failed`), `no vhost 'V'`,
    /// or `component C not found` for another component. Setting the value
    /// it already has changes nothing (no log record, no event).
    pub fn set_param(
        &mut self,
        component: &str,
        vhost: &str,
        name: &str,
        value: Value,
    ) -> Result<bool, String> {
        let Some(c) = params::component(component) else {
            return Err(format!("component {component} not found"));
        };
        if self.broker.vhost(vhost.as_bytes()).is_none() {
            return Err(format!("no vhost '{vhost}'"));
        }
        params::validate(c, name, &value)?;
        let key = (c, vhost.to_string(), name.to_string());
        let old = self.broker.runtime.parameters.insert(key, value.clone());
        if old.as_ref() == Some(&value) {
            return Ok(false);
        }
        self.param_changed(c, vhost, name);
        self.param_events
            .push((c.to_string(), vhost.to_string(), name.to_string()));
        info!(
            "{} {c} '{name}' in vhost '{vhost}'",
            if old.is_none() { "set" } else { "updated" }
        );
        Ok(old.is_none())
    }

    /// Remove the parameter `name` of `component` in `vhost`. False if
    /// there was none.
    pub fn clear_param(&mut self, component: &str, vhost: &str, name: &str) -> bool {
        let Some(c) = params::component(component) else {
            return false;
        };
        let key = (c, vhost.to_string(), name.to_string());
        if self.broker.runtime.parameters.remove(&key).is_none() {
            return false;
        }
        self.param_changed(c, vhost, name);
        self.param_events
            .push((c.to_string(), vhost.to_string(), name.to_string()));
        info!("cleared {c} '{name}' in vhost '{vhost}'");
        true
    }

    /// The parameters of a vhost being deleted.
    pub(super) fn forget_vhost_params(&mut self, vhost: &str) {
        let gone: Vec<(&'static str, String)> = self
            .broker
            .runtime
            .parameters_in(None, Some(vhost))
            .map(|(c, _, n, _)| (c, n.to_string()))
            .collect();
        for (c, name) in gone {
            self.broker
                .runtime
                .parameters
                .remove(&(c, vhost.to_string(), name.clone()));
            self.param_changed(c, vhost, &name);
            self.param_events
                .push((c.to_string(), vhost.to_string(), name));
        }
    }

    /// Announce every parameter (after a restore).
    pub(super) fn announce_params(&mut self) {
        let all = self
            .broker
            .runtime
            .parameters
            .keys()
            .map(|(c, v, n)| (c.to_string(), v.clone(), n.clone()));
        self.param_events.extend(all);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::definitions::DefChange;
    use serde_json::json;

    fn ev(c: &str, v: &str, n: &str) -> (String, String, String) {
        (c.into(), v.into(), n.into())
    }

    fn shovel(queue: &str) -> Value {
        json!({"src-uri": "amqp://", "src-queue": queue, "dest-uri": "amqp://remote",
               "dest-queue": "b"})
    }

    #[test]
    fn set_clear_validate_and_tell() {
        let mut e = Engine::new(crate::Config {
            data_dir: None,
            ..crate::Config::default()
        });
        assert_eq!(e.set_param("shovel", "/", "s", shovel("a")), Ok(true));
        assert_eq!(e.set_param("shovel", "/", "s", shovel("a")), Ok(false));
        assert_eq!(e.set_param("shovel", "/", "s", shovel("c")), Ok(false));
        assert_eq!(
            e.broker.runtime.param("shovel", "/", "s"),
            Some(shovel("c"))
        );
        assert_eq!(
            e.set_param("shovel", "nope", "s", shovel("a")),
            Err("no vhost 'nope'".into())
        );
        assert_eq!(
            e.set_param("widget", "/", "s", json!({})),
            Err("component widget not found".into())
        );
        let bad = e.set_param("shovel", "/", "t", json!({"src-uri": "amqp://"}));
        assert!(bad.unwrap_err().contains("Key \"dest-uri\" not found in t"));
        assert_eq!(
            e.set_param("federation-upstream", "/", "up", json!({"uri": "amqp://x"})),
            Ok(true)
        );
        // Set, changed, set: three events (the unchanged one is none).
        assert_eq!(
            e.take_param_events(),
            vec![
                ev("shovel", "/", "s"),
                ev("shovel", "/", "s"),
                ev("federation-upstream", "/", "up")
            ]
        );
        assert!(e.clear_param("shovel", "/", "s"));
        assert!(!e.clear_param("shovel", "/", "s"));
        assert!(!e.clear_param("widget", "/", "s"));
        assert_eq!(e.take_param_events(), vec![ev("shovel", "/", "s")]);
        assert!(e.broker.runtime.param("shovel", "/", "s").is_none());
        // Each change is a definitions log record.
        let puts = e
            .broker
            .def_changes
            .iter()
            .filter(|c| matches!(c, DefChange::PutParam(p) if p.component == "shovel"))
            .count();
        let dels = e
            .broker
            .def_changes
            .iter()
            .filter(|c| matches!(c, DefChange::DelParam(c, _, _) if c == "shovel"))
            .count();
        assert_eq!((puts, dels), (2, 1));
    }

    /// Parameters are durable: set, changed, and removed with their vhost,
    /// through the log and a snapshot; each restored one is announced.
    #[test]
    fn parameters_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("warren-params-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = crate::Config {
            data_dir: Some(dir.clone()),
            ..crate::Config::default()
        };
        for snapshot in [false, true] {
            let mut e = Engine::open(cfg.clone()).unwrap();
            let now = std::time::Instant::now();
            e.add_vhost("gone");
            e.set_param("shovel", "/", "s", shovel("a")).unwrap();
            e.set_param("shovel", "/", "s", shovel("b")).unwrap();
            e.set_param("shovel", "/", "x", shovel("x")).unwrap();
            assert!(e.clear_param("shovel", "/", "x"));
            e.set_param(
                "federation-upstream-set",
                "/",
                "set",
                json!([{"upstream": "up"}]),
            )
            .unwrap();
            e.set_param("shovel", "gone", "g", shovel("g")).unwrap();
            e.take_param_events();
            e.delete_vhost("gone");
            assert_eq!(e.take_param_events(), vec![ev("shovel", "gone", "g")]);
            if snapshot {
                e.broker.def_changes.push(DefChange::All);
            }
            assert!(e.group_commit(now, true, false).1.is_ok());
            e.close_store();
            drop(e);
            let mut e = Engine::open(cfg.clone()).unwrap();
            let rt = &e.broker.runtime;
            assert_eq!(rt.param("shovel", "/", "s"), Some(shovel("b")));
            assert!(rt.param("shovel", "/", "x").is_none());
            assert!(rt.param("shovel", "gone", "g").is_none());
            assert_eq!(
                rt.param("federation-upstream-set", "/", "set"),
                Some(json!([{"upstream": "up"}]))
            );
            let mut events = e.take_param_events();
            events.sort();
            assert_eq!(
                events,
                vec![
                    ev("federation-upstream-set", "/", "set"),
                    ev("shovel", "/", "s")
                ]
            );
            drop(e);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
