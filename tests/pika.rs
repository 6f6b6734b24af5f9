//! Runs the pika suite in `tests/python/` against an embedded broker. The
//! first run creates a venv under `target/pyvenv` and installs
//! `tests/python/requirements.txt` into it (re-installed when that file
//! changes); nothing but python3 needs to be on the machine.

mod common;

use std::path::{Path, PathBuf};
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
pub fn venv_python() -> PathBuf {
    let venv = root().join("target").join("pyvenv");
    let python = venv.join("bin").join("python");
    let reqs = root().join("tests/python/requirements.txt");
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
    let python = venv_python();
    let broker = common::start();
    pytest(&python, broker.addr.port(), &[]);
}
