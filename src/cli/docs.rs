//! `meshd completions SHELL` and `meshd man`: shell completions and manual pages made
//! from the command-line definitions, so they never drift from the binary. These two
//! print their text as it is (a script, roff), not JSON.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use std::process::ExitCode;

use serde_json::json;

use super::{Cli, print_json};

/// `meshd completions` arguments.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// `meshd man` arguments.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write meshd.1 and one page per subcommand (meshd-run.1, …) into DIR instead of
    /// printing meshd(1).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "meshd", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints meshd(1), or writes every page into `--out-dir` (and says which).
pub(crate) fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match &args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&page)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.ends_with(".1"))
                .collect();
            pages.sort();
            print_json(&json!({"dir": dir.display().to_string(), "pages": pages}));
            Ok(ExitCode::SUCCESS)
        }
    }
}
