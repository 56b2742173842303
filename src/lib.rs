//! pipestat: CI/CD statistics from one binary and one SQLite file.
//!
//! See ARCHITECTURE.md for the map of these modules.

pub mod apigee;
pub mod auth;
pub mod circleci;
pub mod codearts;
pub mod commands;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod fields;
pub mod filter;
pub mod http;
pub mod ingest;
pub mod junit;
pub mod model;
pub mod native;
pub mod store;
pub mod times;
pub mod webhooks;
pub mod writer;
pub mod zadig;

use config::Command;
use error::{Error, Result};

/// Runs one command line; `main` maps the result to an exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> Result<()> {
    match config::parse(args, |name| std::env::var(name).ok())? {
        Command::Help => print!("{}", config::USAGE),
        Command::Version => println!("pipestat {}", env!("CARGO_PKG_VERSION")),
        Command::Serve(cfg) => http::serve(cfg)?,
        Command::TokenCreate { db, name, scopes } => commands::token_create(&db, &name, &scopes)?,
        Command::TokenList { db } => commands::token_list(&db)?,
        Command::TokenRevoke { db, name } => commands::token_revoke(&db, &name)?,
        Command::Import { db, file } => commands::import(&db, &file)?,
        Command::Demo(d) => commands::fill_demo(
            &d.db,
            d.runs,
            d.days,
            d.seed,
            d.now.unwrap_or_else(times::now_ms),
        )?,
        Command::Backup { db, dest } => commands::backup(&db, &dest)?,
        Command::Check { db } => commands::check(&db)?,
    }
    Ok(())
}

/// The process exit code for an error: 2 for usage errors, 1 for anything else.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Usage(_) => 2,
        _ => 1,
    }
}
