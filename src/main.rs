//! `meshd`: the libmesh node binary.

mod cli;

/// jemalloc gives freed memory back to the system and fragments less than glibc's
/// malloc under many connections (README, "Memory").
#[cfg(all(unix, not(target_arch = "wasm32")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
