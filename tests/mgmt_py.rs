//! Runs the management API suite in `tests/python_mgmt/` (requests and the
//! classic rabbitmqadmin) against an embedded broker with its management
//! listener on an ephemeral port. The first run creates a venv under
//! `target/pyvenv-mgmt` and installs `tests/python_mgmt/requirements.txt`
//! into it (re-installed when that file changes); rabbitmqadmin is the one
//! Debian's `rabbitmq-server` package ships (installed when missing). The
//! broker serves the API over HTTPS too, with certificates made by the
//! openssl CLI (`test_https.py`). A second broker with a short global
//! consumer timeout serves `test_policies.py`'s test of it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{root, run};
use std::process::Command;

#[test]
fn management_api_python_suite() {
    let python = common::venv_python("pyvenv-mgmt", "tests/python_mgmt/requirements.txt");
    let admin = common::rabbitmq::rabbitmqadmin();
    // HTTPS beside HTTP, for test_https.py.
    let certs = common::tls_certs();
    let broker = common::start_with(|cfg| {
        cfg.management_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.management_tls_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.management_tls.cert = Some(certs.cert.clone());
        cfg.management_tls.key = Some(certs.key.clone());
    });
    // A second broker with a short global consumer timeout
    // (test_policies.py::test_global_consumer_timeout).
    let timeouts = common::start_with(|cfg| {
        cfg.consumer_timeout = Some(std::time::Duration::from_millis(1500));
    });
    let mgmt = broker.mgmt_addr.expect("management listener");
    let https = broker.https_addr.expect("HTTPS management listener");
    run(Command::new(&python)
        .current_dir(root())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python_mgmt",
        ])
        .env("WARREN_MGMT_HOST", mgmt.ip().to_string())
        .env("WARREN_MGMT_PORT", mgmt.port().to_string())
        .env("WARREN_AMQP_PORT", broker.addr.port().to_string())
        .env("WARREN_RABBITMQADMIN", admin)
        .env("WARREN_HTTPS_PORT", https.port().to_string())
        .env("WARREN_TLS_CA", &certs.ca)
        .env("WARREN_TIMEOUT_AMQP_PORT", timeouts.addr.port().to_string()));
}
