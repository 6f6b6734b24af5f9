//! Runs the management API suite in `tests/python_mgmt/` (requests and the
//! classic rabbitmqadmin) against an embedded broker with its management
//! listener on an ephemeral port. The first run creates a venv under
//! `target/pyvenv-mgmt` and installs `tests/python_mgmt/requirements.txt`
//! into it (re-installed when that file changes); rabbitmqadmin is the one
//! Debian's `rabbitmq-server` package ships (installed when missing).

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
    let broker =
        common::start_with(|cfg| cfg.management_listen = Some("127.0.0.1:0".parse().unwrap()));
    let mgmt = broker.mgmt_addr.expect("management listener");
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
        .env("WARREN_RABBITMQADMIN", admin));
}
