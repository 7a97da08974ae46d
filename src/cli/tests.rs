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

#[test]
fn directory_refusals_are_read_in_both_conventions() {
    use hyper::StatusCode;
    use mesh_core::{ErrorCode, MeshError};
    use serde_json::json;
    let code = |body: serde_json::Value| {
        super::advert::refusal(StatusCode::CONFLICT, &body)
            .downcast::<MeshError>()
            .map(|e| e.code)
    };
    // A libmesh directory: the frozen code.
    let ours = json!({"status": "conflict", "reason": "stale-sequence",
        "error/code": "E_ADV_STALE_SEQ", "error/class": "advertisement/stale-sequence",
        "detail": "sequence 16 is not above 17"});
    assert_eq!(code(ours).unwrap(), ErrorCode::AdvStaleSeq);
    // A directory that answers with the memo's keys only (its put-409 example).
    let memo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            mesh_testkit::shared_dir().join("orbiplex-schemas/seed-directory-http/put-409.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let e = super::advert::refusal(StatusCode::CONFLICT, &memo)
        .downcast::<MeshError>()
        .unwrap();
    assert_eq!(e.code, ErrorCode::AdvStaleSeq);
    assert!(e.to_string().contains("16 is not above 17"), "{e}");
    // Neither: the status and the body.
    assert!(code(json!({"oops": 1})).is_err());
}
