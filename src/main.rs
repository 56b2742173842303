//! The `pipestat` binary: logging set-up, then `pipestat::run`, then an exit code.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    if let Err(e) = pipestat::run(std::env::args_os().skip(1).collect()) {
        eprintln!("pipestat: {e}");
        std::process::exit(pipestat::exit_code(&e));
    }
}
