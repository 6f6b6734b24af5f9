//! `warren manpage` and `warren completions`: generated from the option
//! table the binaries parse with (`warren::cli`), so the man page lists
//! every option, `man` renders it without warnings, and the completion
//! scripts are valid and complete (bash for real; zsh and fish are
//! syntax-checked where those shells are installed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use warren::cli::{Program, CTL_COMMANDS, OPTIONS};

fn warren(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .output()
        .expect("run warren");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-manpage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The page's option names, parsed back from its `.TP` paragraphs.
fn options_in(page: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut lines = page.lines();
    while let Some(l) = lines.next() {
        if l == ".TP" {
            let head = lines.next().unwrap_or("");
            for part in head.split("\\fB").skip(1) {
                let name = part.split("\\fR").next().unwrap_or("").replace("\\-", "-");
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn the_man_pages_list_every_option_and_render_cleanly() {
    let (code, page, err) = warren(&["manpage"]);
    assert_eq!(code, 0, "{err}");
    let (code, perf, err) = warren(&["manpage", "warren-perf"]);
    assert_eq!(code, 0, "{err}");
    let (in_page, in_perf) = (options_in(&page), options_in(&perf));
    for d in OPTIONS {
        let long = format!("--{}", d.long);
        let ours = d.programs & (Program::Warren.bit() | Program::Ctl.bit()) != 0;
        let names = if ours { &in_page } else { &in_perf };
        assert!(names.contains(&long), "{long} missing from the man page");
        if !d.short.is_empty() {
            assert!(names.contains(&format!("-{}", d.short)), "-{}", d.short);
        }
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "\"CTL OPTIONS\"",
        "\"CTL COMMANDS\"",
        "FILES",
        "ENVIRONMENT",
        "\"SEE ALSO\"",
    ] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    for c in CTL_COMMANDS {
        assert!(page.contains(&c.replace('-', "\\-")), "ctl {c}");
    }
    assert_eq!(warren(&["manpage", "nope"]).0, 2);
    if !have("man") || !have("groff") {
        eprintln!("SKIPPED: man or groff not installed, the pages are not rendered");
        return;
    }
    for (name, text) in [("warren.1", &page), ("warren-perf.1", &perf)] {
        let f = tmp(name, text);
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&f)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.trim().is_empty(), "{name}: warnings: {stderr}");
        assert!(stdout.contains("--consumer-timeout") || stdout.contains("--tls-ca"));
    }
}

#[test]
fn bash_completes_options_and_commands() {
    let (code, script, err) = warren(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let f = tmp("warren.bash", &script);
    let check = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let complete = |func: &str, words: &str| {
        let n = words.split(' ').count() - 1;
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -p warren warren-perf >&2; COMP_WORDS=({words}); \
                 COMP_CWORD={n}; {func}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                f.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(complete("_warren", "warren --li"), ["--listen"]);
    assert_eq!(complete("_warren", "warren man"), ["manpage"]);
    assert_eq!(complete("_warren", "warren ctl list_q"), ["list_queues"]);
    assert_eq!(complete("_warren", "warren ctl --any"), ["--any-broker"]);
    assert_eq!(complete("_warren", "warren completions f"), ["fish"]);
    assert_eq!(
        complete("_warren_perf", "warren-perf mqtt --sce"),
        ["--scenario"]
    );
    assert_eq!(complete("_warren_perf", "warren-perf foo"), ["footprint"]);
}

#[test]
fn zsh_and_fish_scripts_are_valid() {
    assert_eq!(warren(&["completions", "tcsh"]).0, 2);
    assert_eq!(warren(&["completions"]).0, 2);
    for (shell, name) in [("zsh", "_warren"), ("fish", "warren.fish")] {
        let (code, script, err) = warren(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(
            script.contains("listen") && script.contains("list_queues"),
            "{shell}"
        );
        if !have(shell) {
            eprintln!("SKIPPED: {shell} not installed, its script is not checked");
            continue;
        }
        let f = tmp(name, &script);
        let out = Command::new(shell).arg("-n").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if have("fish") {
        let f = tmp("warren2.fish", &warren(&["completions", "fish"]).1);
        let out = Command::new("fish")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C'warren --li'",
                f.display()
            ))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("--listen"));
    }
}
