//! Runs the management API suite in `tests/python_mgmt/` (requests and the
//! classic rabbitmqadmin) against an embedded broker with its management
//! listener on an ephemeral port. The first run creates a venv under
//! `target/pyvenv-mgmt` and installs `tests/python_mgmt/requirements.txt`
//! into it (re-installed when that file changes); nothing but python3 needs
//! to be on the machine.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The venv's python, created and provisioned on first use.
fn venv_python() -> PathBuf {
    let venv = root().join("target").join("pyvenv-mgmt");
    let python = venv.join("bin").join("python");
    let reqs = root().join("tests/python_mgmt/requirements.txt");
    let wanted = std::fs::read_to_string(&reqs).expect("requirements.txt");
    let stamp = venv.join("installed-requirements.txt");
    let installed = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    if installed != wanted {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs));
        std::fs::write(&stamp, wanted).expect("write stamp");
    }
    python
}

#[test]
fn management_api_python_suite() {
    let python = venv_python();
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
        .env("WARREN_AMQP_PORT", broker.addr.port().to_string()));
}
