//! pipestat: CI/CD statistics from one binary and one SQLite file.
//!
//! The layers, each a folder, depend one way (ARCHITECTURE.md has the map):
//! `model` ← `ingest` ← `store` ← `http` ← `surfaces` ← `server` ← `cli`; `demo` generates
//! `model` values and writes them through `store`.

mod cli;
mod demo;
mod error;
mod http;
mod ingest;
mod metrics;
mod model;
mod server;
mod store;
mod surfaces;

pub mod hooks;

pub use cli::{exit_code, run};
pub use error::{Error, Result};
