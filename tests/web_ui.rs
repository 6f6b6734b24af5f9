//! The management web UI in real browsers: `tests/python_ui/` drives
//! Debian's Chromium and Firefox ESR (both headless) through Selenium
//! against an embedded broker, with pika clients beside it. The first run
//! creates a venv under `target/pyvenv-ui` with
//! `tests/python_ui/requirements.txt`; it installs `chromium`,
//! `chromium-driver` and `firefox-esr` with apt-get when they are missing,
//! and geckodriver (which Debian does not package) with `cargo install`
//! from crates.io. Where a browser cannot be installed its test says so
//! and is skipped. Screenshots of every page go to
//! `target/ui-screenshots/<browser>/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{root, run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const FIREFOX: &str = "/usr/bin/firefox-esr";
const GECKODRIVER_VERSION: &str = "0.37.1";

/// One browser suite at a time: two browsers and two brokers on a small
/// machine at once only make both slower.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// `packages` installed with apt-get unless every one of `files` exists;
/// false (with the reason printed) when that is not possible here.
fn apt_installed(files: &[&str], packages: &[&str]) -> bool {
    if files.iter().all(|f| Path::new(f).exists()) {
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
    let ok = apt(&["update", "-q"]) && apt(&[&["install", "-y", "-q"], packages].concat());
    if !ok || !files.iter().all(|f| Path::new(f).exists()) {
        eprintln!(
            "SKIPPED: the web UI tests need Debian's {}, and apt-get could not install it here",
            packages.join(", ")
        );
        return false;
    }
    true
}

/// geckodriver: the one on PATH or in cargo's bin folder, else built
/// there with `cargo install` (once per machine, about a minute).
fn geckodriver() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let installed = cargo_home.join("bin").join("geckodriver");
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("geckodriver"))
            .find(|f| f.exists())
    });
    if let Some(found) = on_path.or_else(|| installed.exists().then(|| installed.clone())) {
        return Some(found);
    }
    let ok = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["install", "--locked", "--quiet", "geckodriver", "--version"])
        .arg(GECKODRIVER_VERSION)
        .arg("--root")
        .arg(&cargo_home)
        .status()
        .is_ok_and(|s| s.success());
    if ok && installed.exists() {
        Some(installed)
    } else {
        eprintln!("SKIPPED: `cargo install geckodriver` failed, so Firefox cannot be driven");
        None
    }
}

/// The whole browser suite against a fresh broker, `env` naming the
/// browser and its driver; screenshots under `target/ui-screenshots/<name>`.
fn suite(name: &str, env: &[(&str, &Path)]) {
    let python = common::venv_python("pyvenv-ui", "tests/python_ui/requirements.txt");
    let broker = common::start_with(|cfg| {
        cfg.management_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let mgmt = broker.mgmt_addr.expect("management listener");
    let shots = root().join("target").join("ui-screenshots").join(name);
    let _ = std::fs::remove_dir_all(&shots);
    let mut cmd = Command::new(&python);
    cmd.current_dir(root().join("tests/python_ui"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "."])
        .env("WARREN_BROWSER", name)
        .env("WARREN_MGMT_HOST", mgmt.ip().to_string())
        .env("WARREN_MGMT_PORT", mgmt.port().to_string())
        .env("WARREN_AMQP_PORT", broker.addr.port().to_string())
        .env("WARREN_SCREENSHOTS", &shots);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd);
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(taken >= 12, "{taken} screenshots in {}", shots.display());
}

#[test]
fn web_ui_in_chromium() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    if !apt_installed(&[CHROMIUM, CHROMEDRIVER], &["chromium", "chromium-driver"]) {
        return;
    }
    suite(
        "chromium",
        &[
            ("WARREN_CHROMIUM", Path::new(CHROMIUM)),
            ("WARREN_CHROMEDRIVER", Path::new(CHROMEDRIVER)),
        ],
    );
}

#[test]
fn web_ui_in_firefox() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    if !apt_installed(&[FIREFOX], &["firefox-esr"]) {
        return;
    }
    let Some(driver) = geckodriver() else {
        return;
    };
    suite(
        "firefox",
        &[
            ("WARREN_FIREFOX", Path::new(FIREFOX)),
            ("WARREN_GECKODRIVER", &driver),
        ],
    );
}
