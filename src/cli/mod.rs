//! The command line: parsing (`args`) and the commands besides `serve` (`commands`).

pub mod args;
pub mod commands;

use crate::demo;
use crate::error::{Error, Result};
use crate::model::times;
use crate::server;
use args::Command;

/// Runs one command line; `main` maps the result to an exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> Result<()> {
    let (command, checkpoints) = args::parse(args, |name| std::env::var(name).ok())?;
    crate::store::db::set_checkpoints(checkpoints);
    match command {
        Command::Help(text) => print!("{text}"),
        Command::Version => println!("pipestat {}", env!("CARGO_PKG_VERSION")),
        Command::Serve(cfg) => server::serve(cfg)?,
        Command::TokenCreate { db, name, scopes } => commands::token_create(&db, &name, &scopes)?,
        Command::TokenList { db } => commands::token_list(&db)?,
        Command::TokenRevoke { db, name } => commands::token_revoke(&db, &name)?,
        Command::Import { db, file } => commands::import(&db, &file)?,
        Command::Demo(d) => demo::fill(
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
