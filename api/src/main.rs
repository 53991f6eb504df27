//! The `orrery` binary: all behaviour lives in `orrery_api::cli`.

/// mimalloc for every Rust allocation (see `orrery_api::allocator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    orrery_api::allocator::tune_for_server();
    orrery_api::cli::main()
}
