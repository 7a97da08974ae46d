//! The command line as others spell it.

use clap::Parser;

use super::{Cli, Command};

#[test]
fn the_systemd_units_exec_start_parses_as_meshd_arguments() {
    let unit = include_str!("../../deploy/meshd.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    // What systemd substitutes for the directories it makes.
    let line = line
        .replace("${STATE_DIRECTORY}", "/var/lib/meshd")
        .replace("${CONFIGURATION_DIRECTORY}", "/etc/meshd");
    let args: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/meshd");
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_eq!(cli.data_dir, Some("/var/lib/meshd".into()));
    let Command::Run(run) = cli.command else {
        panic!("ExecStart runs something else than `meshd run`: {line}")
    };
    assert!(
        format!("{run:?}").contains("\"/etc/meshd/meshd.toml\""),
        "{run:?}"
    );
}
