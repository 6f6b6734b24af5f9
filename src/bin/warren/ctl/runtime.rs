//! `warren ctl` commands for policies, operator policies and limits, with
//! `rabbitmqctl`'s argument order:
//!
//! ```text
//! set_policy [-p VHOST] [--priority N] [--apply-to WHAT] NAME PATTERN DEFINITION
//! clear_policy [-p VHOST] NAME
//! list_policies [-p VHOST]
//! set_operator_policy / clear_operator_policy / list_operator_policies   (the same)
//! set_vhost_limits [-p VHOST] DEFINITION      ('{"max-connections": 64}')
//! clear_vhost_limits [-p VHOST]
//! list_vhost_limits [-p VHOST] [--global]
//! set_user_limits USER DEFINITION             ('{"max-channels": 16}')
//! clear_user_limits USER NAME|all
//! list_user_limits [USER]
//! set_parameter [-p VHOST] COMPONENT NAME VALUE   (VALUE: JSON)
//! clear_parameter [-p VHOST] COMPONENT NAME
//! list_parameters [-p VHOST]
//! ```

use std::io::Write;

use serde_json::{json, Value};

use super::{arg, check, encode_segment, no_more, Ctl, CtlError, Result, EX_SOFTWARE, EX_USAGE};

fn json_arg(text: &str, what: &str) -> Result<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(CtlError::new(
            EX_USAGE,
            format!("{what} must be a JSON object, got '{text}'"),
        )),
    }
}

/// The broker's refusal as rabbitmqctl prints it (the reason alone).
fn refused(r: &super::Response, method: &str, path: &str) -> Result<()> {
    if r.status == 400 {
        return Err(CtlError::new(
            EX_SOFTWARE,
            r.error_text().trim_end().to_string(),
        ));
    }
    check(r, method, path)
}

impl Ctl {
    /// A policy, operator policy or limits command; None if `cmd` is not one.
    pub(super) fn runtime_command(
        &self,
        cmd: &str,
        rest: &[String],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Option<Result<()>> {
        let (kind, what) = match cmd {
            "set_policy" | "clear_policy" | "list_policies" => ("policies", "policy"),
            "set_operator_policy" | "clear_operator_policy" | "list_operator_policies" => {
                ("operator-policies", "operator policy")
            }
            _ => return self.limits_command(cmd, rest, out, err),
        };
        let vhost = &self.vhost;
        let c = &self.client;
        Some((|| match cmd.split('_').next() {
            Some("set") => {
                let name = arg(rest, 0, "NAME")?;
                let pattern = arg(rest, 1, "PATTERN")?;
                let def = json_arg(arg(rest, 2, "DEFINITION")?, "DEFINITION")?;
                no_more(rest, 3)?;
                let priority = match &self.priority {
                    None => 0,
                    Some(p) => p
                        .parse::<i64>()
                        .map_err(|_| CtlError::usage(format!("bad --priority '{p}'")))?,
                };
                let apply_to = self.apply_to.as_deref().unwrap_or("all");
                self.info(
                    err,
                    &format!(
                        "Setting {what} \"{name}\" for pattern \"{pattern}\" to \"{def}\" with priority \"{priority}\" for vhost \"{vhost}\" ..."
                    ),
                );
                let path = format!("/api/{kind}/{}/{}", self.vh(), encode_segment(name));
                let body = json!({"pattern": pattern, "definition": def,
                                  "priority": priority, "apply-to": apply_to});
                let r = c.request("PUT", &path, Some(body.to_string().as_bytes()), &[])?;
                refused(&r, "PUT", &path)
            }
            Some("clear") => {
                let name = arg(rest, 0, "NAME")?;
                no_more(rest, 1)?;
                self.info(
                    err,
                    &format!("Clearing {what} \"{name}\" on vhost \"{vhost}\" ..."),
                );
                let path = format!("/api/{kind}/{}/{}", self.vh(), encode_segment(name));
                let r = c.request("DELETE", &path, None, &[])?;
                if r.status == 404 {
                    return Err(CtlError::new(
                        EX_SOFTWARE,
                        "Parameter does not exist".to_string(),
                    ));
                }
                check(&r, "DELETE", &path)
            }
            _ => {
                no_more(rest, 0)?;
                self.info(err, &format!("Listing {kind} for vhost \"{vhost}\" ..."));
                let path = format!("/api/{kind}/{}", self.vh());
                let cols = [
                    "vhost",
                    "name",
                    "pattern",
                    "apply-to",
                    "definition",
                    "priority",
                ];
                self.list(out, kind, &path, &[], &cols, true)
            }
        })())
    }

    fn limits_command(
        &self,
        cmd: &str,
        rest: &[String],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Option<Result<()>> {
        if cmd.ends_with("_parameter") || cmd == "list_parameters" {
            return self.parameter_command(cmd, rest, out, err);
        }
        let vhost = &self.vhost;
        let run = || -> Result<()> {
            match cmd {
                "set_vhost_limits" => {
                    let def = json_arg(arg(rest, 0, "DEFINITION")?, "DEFINITION")?;
                    no_more(rest, 1)?;
                    self.info(
                        err,
                        &format!("Applying limits \"{def}\" to vhost \"{vhost}\" ..."),
                    );
                    // All at once: limits not given are removed.
                    self.replace_limits("vhost-limits", &self.vh(), &def)
                }
                "clear_vhost_limits" => {
                    no_more(rest, 0)?;
                    self.info(err, &format!("Clearing vhost \"{vhost}\" limits ..."));
                    self.replace_limits("vhost-limits", &self.vh(), &json!({}))
                }
                "list_vhost_limits" => {
                    no_more(rest, 0)?;
                    let path = if self.global {
                        "/api/vhost-limits".to_string()
                    } else {
                        format!("/api/vhost-limits/{}", self.vh())
                    };
                    self.info(err, &format!("Listing limits for vhost \"{vhost}\" ..."));
                    self.list(out, "vhost-limits", &path, &[], &["vhost", "value"], true)
                }
                "set_user_limits" => {
                    let user = arg(rest, 0, "USER")?;
                    let def = json_arg(arg(rest, 1, "DEFINITION")?, "DEFINITION")?;
                    no_more(rest, 2)?;
                    self.info(
                        err,
                        &format!("Setting user limits to \"{def}\" for user \"{user}\" ..."),
                    );
                    self.get_user(user)?;
                    let mut all = self.current_limits("user-limits", &encode_segment(user))?;
                    if let (Some(m), Some(d)) = (all.as_object_mut(), def.as_object()) {
                        m.extend(d.clone());
                    }
                    self.replace_limits("user-limits", &encode_segment(user), &all)
                }
                "clear_user_limits" => {
                    let user = arg(rest, 0, "USER")?;
                    let name = arg(rest, 1, "NAME (or all)")?;
                    no_more(rest, 2)?;
                    self.info(
                        err,
                        &format!("Clearing \"{name}\" limit for user \"{user}\" ..."),
                    );
                    self.get_user(user)?;
                    let seg = encode_segment(user);
                    let mut all = self.current_limits("user-limits", &seg)?;
                    match (name, all.as_object_mut()) {
                        ("all", _) => all = json!({}),
                        (n, Some(m)) => {
                            m.remove(n);
                        }
                        _ => {}
                    }
                    self.replace_limits("user-limits", &seg, &all)
                }
                "list_user_limits" => {
                    let user = rest.first();
                    no_more(rest, 1)?;
                    let path = match user {
                        Some(u) => {
                            self.get_user(u)?;
                            format!("/api/user-limits/{}", encode_segment(u))
                        }
                        None => "/api/user-limits".to_string(),
                    };
                    self.info(err, "Listing user limits ...");
                    self.list(out, "user-limits", &path, &[], &["user", "value"], false)
                }
                _ => Err(CtlError::usage(format!("unknown command '{cmd}'"))),
            }
        };
        let known = matches!(
            cmd,
            "set_vhost_limits"
                | "clear_vhost_limits"
                | "list_vhost_limits"
                | "set_user_limits"
                | "clear_user_limits"
                | "list_user_limits"
        );
        known.then(run)
    }

    /// `set_parameter`, `clear_parameter`, `list_parameters` (runtime
    /// parameters: shovels, federation upstreams, ...), through
    /// `/api/parameters`; None if `cmd` is not one.
    fn parameter_command(
        &self,
        cmd: &str,
        rest: &[String],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Option<Result<()>> {
        let vhost = &self.vhost;
        let c = &self.client;
        let no_vhost = || {
            CtlError::new(
                super::EX_UNAVAILABLE,
                format!("virtual host '{vhost}' does not exist"),
            )
        };
        let run = || -> Result<()> {
            match cmd {
                "set_parameter" => {
                    let component = arg(rest, 0, "COMPONENT")?;
                    let name = arg(rest, 1, "NAME")?;
                    let text = arg(rest, 2, "VALUE")?;
                    no_more(rest, 3)?;
                    let value: Value = serde_json::from_str(text).map_err(|e| {
                        CtlError::new(EX_USAGE, format!("VALUE must be JSON, got '{text}': {e}"))
                    })?;
                    self.info(
                        err,
                        &format!(
                            "Setting runtime parameter \"{name}\" for component \"{component}\" to \"{text}\" in vhost \"{vhost}\" ..."
                        ),
                    );
                    let path = format!(
                        "/api/parameters/{}/{}/{}",
                        encode_segment(component),
                        self.vh(),
                        encode_segment(name)
                    );
                    let body = json!({"component": component, "vhost": vhost, "name": name,
                                      "value": value});
                    let r = c.request("PUT", &path, Some(body.to_string().as_bytes()), &[])?;
                    if r.status == 404 {
                        return Err(no_vhost());
                    }
                    refused(&r, "PUT", &path)
                }
                "clear_parameter" => {
                    let component = arg(rest, 0, "COMPONENT")?;
                    let name = arg(rest, 1, "NAME")?;
                    no_more(rest, 2)?;
                    self.info(
                        err,
                        &format!(
                            "Clearing runtime parameter \"{name}\" for component \"{component}\" on vhost \"{vhost}\" ..."
                        ),
                    );
                    self.require_vhost()?;
                    let path = format!(
                        "/api/parameters/{}/{}/{}",
                        encode_segment(component),
                        self.vh(),
                        encode_segment(name)
                    );
                    let r = c.request("DELETE", &path, None, &[])?;
                    if r.status == 404 {
                        return Err(CtlError::new(
                            EX_SOFTWARE,
                            "Parameter does not exist".to_string(),
                        ));
                    }
                    refused(&r, "DELETE", &path)
                }
                _ => {
                    no_more(rest, 0)?;
                    self.info(
                        err,
                        &format!("Listing runtime parameters for vhost \"{vhost}\" ..."),
                    );
                    // The API lists one vhost's parameters per component
                    // only: all of them, this vhost's kept.
                    self.require_vhost()?;
                    let path = "/api/parameters";
                    let r = c.request("GET", path, None, &[])?;
                    check(&r, "GET", path)?;
                    let items: Vec<Value> = match r.json() {
                        Value::Array(a) => a
                            .into_iter()
                            .filter(|p| p.get("vhost").and_then(Value::as_str) == Some(vhost))
                            .collect(),
                        other => {
                            return Err(CtlError::new(
                                EX_SOFTWARE,
                                format!("GET {path}: expected a JSON list, got {other}"),
                            ))
                        }
                    };
                    self.table(out, "parameters", &items, &["component", "name", "value"])
                }
            }
        };
        matches!(cmd, "set_parameter" | "clear_parameter" | "list_parameters").then(run)
    }

    /// The limits of a vhost or user (`kind` = `vhost-limits` or
    /// `user-limits`) as one JSON object.
    fn current_limits(&self, kind: &str, owner: &str) -> Result<Value> {
        let path = format!("/api/{kind}/{owner}");
        let r = self.client.request("GET", &path, None, &[])?;
        check(&r, "GET", &path)?;
        Ok(r.json()
            .get(0)
            .and_then(|x| x.get("value"))
            .cloned()
            .unwrap_or_else(|| json!({})))
    }

    /// Make the limits of a vhost or user exactly `want`, one API call per
    /// limit set or removed.
    fn replace_limits(&self, kind: &str, owner: &str, want: &Value) -> Result<()> {
        let have = self.current_limits(kind, owner)?;
        let empty = serde_json::Map::new();
        let (have, want) = (
            have.as_object().unwrap_or(&empty),
            want.as_object().unwrap_or(&empty),
        );
        for name in have.keys().filter(|k| !want.contains_key(*k)) {
            let path = format!("/api/{kind}/{owner}/{}", encode_segment(name));
            let r = self.client.request("DELETE", &path, None, &[])?;
            refused(&r, "DELETE", &path)?;
        }
        for (name, value) in want {
            let path = format!("/api/{kind}/{owner}/{}", encode_segment(name));
            let body = json!({ "value": value }).to_string();
            let r = self
                .client
                .request("PUT", &path, Some(body.as_bytes()), &[])?;
            refused(&r, "PUT", &path)?;
        }
        Ok(())
    }
}
