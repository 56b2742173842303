//! The `pipestat` binary: logging set-up, then `pipestat::run`, then an exit code.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let command = pipestat::config::parse(args.clone(), |name| std::env::var(name).ok());
    if matches!(command, Ok(pipestat::config::Command::Serve(_))) {
        one_malloc_arena();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    if let Err(e) = pipestat::run(args) {
        eprintln!("pipestat: {e}");
        std::process::exit(pipestat::exit_code(&e));
    }
}

/// glibc gives each thread that contends for the allocator an arena of its own and keeps what
/// a thread freed in its arena. With a worker pool, a large request handled once by each worker
/// would then stay resident once per worker (measured: 136 MB after 1,000-run array POSTs with
/// the default, 55 MB with one arena). The daemon's threads spend their time in SQLite and I/O,
/// not in malloc; the ingest bench shows no loss beyond its noise. Only `serve` has a pool:
/// `import` and `demo` parse on one thread while another writes, both allocating all the
/// time, and one arena made `import` about a sixth slower (measured with `MALLOC_ARENA_MAX`
/// 1 and 2, alternating). `MALLOC_ARENA_MAX` in the environment is left to win: the call is
/// skipped when that variable is set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
