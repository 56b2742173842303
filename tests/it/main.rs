//! Integration tests: the real `pipestat` binary, a real SQLite file in a temp dir, real HTTP.

mod apigee;
mod apigee_rollup;
mod auth;
mod checkpoints;
mod circleci;
mod circleci_flaky;
mod circleci_rollup;
mod cli;
mod codearts;
mod common;
mod dashboard;
mod diskfull;
mod dora;
mod dora_inputs;
mod hardening;
mod history;
mod ingest;
mod layers;
mod metrics;
mod openapi;
mod ops;
mod sweep;
mod webhooks;
mod zadig;
