//! Integration tests: the real `pipestat` binary, a real SQLite file in a temp dir, real HTTP.

mod auth;
mod common;
mod ingest;
mod ops;
