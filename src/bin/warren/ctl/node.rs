//! `warren ctl await_startup` and `warren ctl stop`, as rabbitmqctl's:
//!
//! - `await_startup` waits until the broker's management API answers
//!   (`GET /api/overview`, after the check that it is warren's), up to
//!   `--timeout` seconds (default 300, as rabbitmqctl); a refused
//!   connection or an unanswered request is retried, any other failure
//!   (wrong credentials: 77, not warren: 69) ends it at once. Timing out
//!   exits 75 (EX_TEMPFAIL).
//! - `stop` asks the broker to stop gracefully (`POST /api/shutdown`,
//!   administrators only: what SIGTERM does) and waits, up to `--timeout`
//!   seconds (default 30), until its management API no longer answers.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{check, no_more, Ctl, CtlError, Result, EX_TEMPFAIL};

/// How often the API is asked again.
const POLL: Duration = Duration::from_millis(200);

/// `await_startup` without `--timeout`: rabbitmqctl's default.
const STARTUP_TIMEOUT: u64 = 300;

/// A request that gets no answer while waiting is given this long at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Ctl {
    /// `await_startup` or `stop`; None if `cmd` is neither.
    pub(super) fn node_command(
        &self,
        cmd: &str,
        rest: &[String],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Option<Result<()>> {
        match cmd {
            "await_startup" => Some(no_more(rest, 0).and_then(|()| self.await_startup(out, err))),
            "stop" => Some(no_more(rest, 0).and_then(|()| self.stop(out, err))),
            _ => None,
        }
    }

    fn await_startup(&self, _out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
        let secs = self.timeout.unwrap_or(STARTUP_TIMEOUT);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut c = self.client.clone();
        self.info(
            err,
            &format!("Waiting for the broker at {} to start ...", c.at()),
        );
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            c.timeout = left.min(REQUEST_TIMEOUT).max(Duration::from_millis(100));
            match c.call("GET", "/api/overview", None) {
                Ok(ov) => {
                    let node = ov.get("node").and_then(Value::as_str).unwrap_or("warren");
                    self.info(err, &format!("Broker {node} is running."));
                    return Ok(());
                }
                Err(e) if e.unreachable => {
                    if Instant::now() + POLL >= deadline {
                        return Err(CtlError::new(
                            EX_TEMPFAIL,
                            format!(
                                "the broker did not start within {secs} seconds (--timeout): {}",
                                e.message
                            ),
                        ));
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn stop(&self, _out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
        let c = &self.client;
        let ov = c.call("GET", "/api/overview", None)?;
        let node = ov
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or("warren")
            .to_string();
        self.info(err, &format!("Stopping and halting node {node} ..."));
        let path = "/api/shutdown";
        let r = c.request("POST", path, None, &[])?;
        check(&r, "POST", path)?;
        let secs = self.timeout.unwrap_or(30);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut probe = c.clone();
        probe.timeout = REQUEST_TIMEOUT.min(c.timeout);
        loop {
            // Gone once its management API no longer answers.
            match probe.request("GET", "/api/overview", None, &[]) {
                Err(e) if e.unreachable => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(CtlError::new(
                        EX_TEMPFAIL,
                        format!("node {node} did not stop within {secs} seconds (--timeout)"),
                    ))
                }
                _ => std::thread::sleep(POLL),
            }
        }
    }
}
