//! Payloads → domain values: native JSON (`native`), the one reader of a client's JSON object
//! (`fields`), pushes and incidents, the inputs of DORA (`dora`), JUnit / xUnit XML (`junit`)
//! and GitHub's and GitLab's webhooks (`webhooks`).
//! No SQL and no HTTP here; every refusal names the item and the field.

pub mod dora;
pub mod fields;
pub mod junit;
mod native;
pub mod webhooks;

pub use native::{canonical_slug, parse_json, parse_rollbacks, parse_runs, run_from_json};
