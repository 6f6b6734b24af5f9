//! The package's build script (Cargo.toml's `build`): sets
//! `WARREN_GIT_REV`, the git revision `warren --version` and the start-up
//! line print.
//!
//! - In a git checkout of this repository: `git rev-parse --short=12 HEAD`,
//!   with `-dirty` when tracked files differ from that commit.
//! - Otherwise (a source tarball, a Docker build context without `.git`, no
//!   `git` on the machine): the `WARREN_GIT_REV` environment variable when it
//!   is set, else `unknown`.
//!
//! It runs again when HEAD moves (a commit, a checkout: HEAD, the branch's
//! ref and `packed-refs`, wherever `git rev-parse --git-path` puts them, so
//! linked worktrees work), when the library's sources (`src/` but
//! `src/bin/`) or `Cargo.toml` change, and when `WARREN_GIT_REV` does.
//! Each run rebuilds the package's library, so it watches only what
//! rebuilds the library anyway: an edit of a binary's own files or of the
//! tests alone leaves the dirty mark as it was at the last run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `git ARGS` in `dir`: its trimmed standard output if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.trim().to_string())
}

/// The revision of the checkout at `dir`, and the git files whose changes
/// move it; `None` when `dir` is not the top of a git work tree.
fn from_git(dir: &Path) -> Option<(String, Vec<PathBuf>)> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    // A tarball unpacked inside some other repository is not a checkout.
    let same = match (Path::new(&top).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return None;
    }
    let rev = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let mut watch = Vec::new();
    let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.push(r);
    }
    for p in paths {
        if let Some(f) = git(dir, &["rev-parse", "--git-path", &p]) {
            // Relative to `dir` unless git made it absolute.
            let f = dir.join(f);
            // A path that does not exist would make cargo run this script
            // on every build.
            if f.exists() {
                watch.push(f);
            }
        }
    }
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    Some((rev, watch))
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=WARREN_GIT_REV");
    // The library's sources: everything in src/ but the binaries' folder.
    if let Ok(entries) = std::fs::read_dir(dir.join("src")) {
        for e in entries.flatten() {
            if e.file_name() != "bin" {
                println!("cargo:rerun-if-changed={}", e.path().display());
            }
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("Cargo.toml").display()
    );
    let rev = match from_git(&dir) {
        Some((rev, watch)) => {
            for f in watch {
                println!("cargo:rerun-if-changed={}", f.display());
            }
            rev
        }
        None => std::env::var("WARREN_GIT_REV")
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=WARREN_GIT_REV={rev}");
}
