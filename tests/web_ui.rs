//! The management web UI in a real browser: `tests/python_ui/` drives
//! Debian's Chromium (headless) through Selenium and chromedriver against
//! an embedded broker, with pika clients beside it. The first run creates
//! a venv under `target/pyvenv-ui` with `tests/python_ui/requirements.txt`,
//! and installs `chromium` and `chromium-driver` with apt-get when they
//! are missing; where they cannot be installed the test says so and is
//! skipped. Screenshots of every page go to `target/ui-screenshots/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{root, run};
use std::path::Path;
use std::process::{Command, Stdio};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// Chromium and its driver, installed with apt-get if missing; false
/// (with the reason printed) when that is not possible here.
fn chromium_installed() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(DRIVER).exists() {
        return true;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "chromium", "chromium-driver"]);
    if !ok || !Path::new(CHROMIUM).exists() || !Path::new(DRIVER).exists() {
        eprintln!(
            "SKIPPED: the web UI tests need Debian's chromium and chromium-driver, and apt-get could not install them here"
        );
        return false;
    }
    true
}

#[test]
fn web_ui_in_chromium() {
    if !chromium_installed() {
        return;
    }
    let python = common::venv_python("pyvenv-ui", "tests/python_ui/requirements.txt");
    let broker = common::start_with(|cfg| {
        cfg.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let mgmt = broker.mgmt_addr.expect("management listener");
    let shots = root().join("target").join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    run(Command::new(&python)
        .current_dir(root().join("tests/python_ui"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "."])
        .env("WARREN_MGMT_HOST", mgmt.ip().to_string())
        .env("WARREN_MGMT_PORT", mgmt.port().to_string())
        .env("WARREN_AMQP_PORT", broker.addr.port().to_string())
        .env("WARREN_CHROMIUM", CHROMIUM)
        .env("WARREN_CHROMEDRIVER", DRIVER)
        .env("WARREN_SCREENSHOTS", &shots));
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(taken >= 12, "{taken} screenshots in {}", shots.display());
}
