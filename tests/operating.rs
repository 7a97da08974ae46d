//! What an operator meets: `meshd --version` with the git revision, the version in
//! `meshd status`, shell completions and manual pages that name every subcommand, and
//! the systemd unit in `deploy/` as `systemd-analyze verify` reads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::path::Path;
use std::process::Command;

use meshd::{LOCAL, Meshd, bin};

fn meshd_out(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "meshd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `meshd --help` lists (its "Commands:" section), `help` left out.
fn subcommands() -> Vec<String> {
    let help = meshd_out(&["--help"]);
    let section = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .expect("a Commands section");
    let names: Vec<String> = section
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| n != "help")
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    names
}

fn git_rev() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_git_revision_and_status_shows_it() {
    let version = meshd_out(&["--version"]);
    let version = version.trim().strip_prefix("meshd ").unwrap().to_owned();
    assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
    match git_rev() {
        Some(rev) => assert_eq!(
            version,
            format!("{} (git {rev})", env!("CARGO_PKG_VERSION"))
        ),
        None => eprintln!("not a git checkout: version {version}"),
    }
    // Run on an empty configuration file, as the systemd unit's first start does.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshd.toml");
    std::fs::write(&config, "").unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(LOCAL);
    let node = Meshd::start(&dir.path().join("n"), &args);
    let status = node.cli_ok(&["status"]);
    assert_eq!(status["version"], version.as_str(), "{status}");
}

#[test]
fn completions_and_man_pages_name_every_subcommand() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = meshd_out(&["completions", shell]);
        for s in &subs {
            assert!(script.contains(s.as_str()), "{shell} completion lacks {s}");
        }
    }
    let page = meshd_out(&["man"]);
    assert!(
        page.contains(".TH meshd 1"),
        "not a roff page: {}",
        &page[..200]
    );
    for s in &subs {
        // clap_mangen lists each subcommand as `meshd-NAME(1)` (roff escapes the dash).
        assert!(
            page.contains(&format!("meshd\\-{}(1)", s.replace('-', "\\-"))),
            "meshd(1) lacks {s}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let report: serde_json::Value = serde_json::from_str(&meshd_out(&[
        "man",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]))
    .unwrap();
    let pages: Vec<&str> = report["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(pages.contains(&"meshd.1"), "{pages:?}");
    for s in &subs {
        let page = format!("meshd-{s}.1");
        assert!(pages.contains(&page.as_str()), "no {page} in {pages:?}");
        assert!(dir.path().join(&page).metadata().unwrap().len() > 100);
    }
}

const UNIT: &str = include_str!("../deploy/meshd.service");

fn systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("MESH_REQUIRE_SYSTEMD").is_some() {
        panic!("MESH_REQUIRE_SYSTEMD is set but systemd-analyze is not installed");
    }
    found
}

/// `systemd-analyze verify` of `unit` (its `ExecStart` binary pointed at the built one):
/// its exit status and what it printed.
fn verify(dir: &Path, name: &str, unit: &str) -> (bool, String) {
    let unit = unit.replace("/usr/local/bin/meshd", bin());
    let path = dir.join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    if !systemd_analyze() {
        eprintln!("systemd-analyze not installed: skipped (set MESH_REQUIRE_SYSTEMD to fail)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = verify(dir.path(), "meshd.service", UNIT);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    // The check sees mistakes: an unknown key and a bad value are reported.
    let broken = UNIT.replace("ProtectHome=yes", "ProtectHome=maybe\nRestartEvery=1");
    let (_, text) = verify(dir.path(), "broken.service", &broken);
    assert!(
        text.contains("ProtectHome") || text.contains("protect home"),
        "{text}"
    );
    assert!(text.contains("RestartEvery"), "{text}");
    for key in [
        "DynamicUser=yes",
        "StateDirectory=meshd",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(key)),
            "the unit lacks {key}"
        );
    }
}
