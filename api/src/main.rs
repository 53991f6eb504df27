//! The `orrery` binary: all behaviour lives in `orrery_api::cli`.

fn main() -> std::process::ExitCode {
    orrery_api::cli::main()
}
