//! `meshd`: the libmesh node binary.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
