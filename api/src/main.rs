//! The `orrery` binary: all behaviour lives in `orrery_api::cli`.

fn main() -> std::process::ExitCode {
    orrery_api::allocator::tune_for_server();
    orrery_api::cli::main()
}
