//! Runs the pika suite in `tests/python/` against an embedded broker. The
//! first run creates a venv under `target/pyvenv` and installs
//! `tests/python/requirements.txt` into it (re-installed when that file
//! changes); nothing but python3 needs to be on the machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;

use common::{root, run};
use std::process::Command;

fn pytest(python: &Path, port: u16, args: &[&str]) {
    let mut cmd = Command::new(python);
    cmd.current_dir(root())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .args(args)
        .env("WARREN_AMQP_PORT", port.to_string());
    run(&mut cmd);
}

#[test]
fn pika_suite() {
    let python = common::venv_python("pyvenv", "tests/python/requirements.txt");
    let broker = common::start();
    pytest(&python, broker.addr.port(), &[]);
}
