//! The rollup families: tables kept equal to a recount of the runs, jobs and tests on every
//! write, so the statistics routes read a window's rows instead of the whole history.

pub mod apigee;
pub mod circleci;
pub mod durations;
pub mod flaky;
