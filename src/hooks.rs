//! What the integration tests and the benches reach inside pipestat, in one place. Not an API:
//! everything else in the crate is private, and these names may change with it.

pub use crate::http::Req;
pub use crate::ingest::{parse_json, run_from_json};
pub use crate::model::times::{format_rfc3339, parse_rfc3339};
pub use crate::model::Run;
pub use crate::store::bulk::write_batch;
pub use crate::store::db::{open_bulk, BULK_CACHE_KIB};
pub use crate::store::default_pipeline_id;
pub use crate::store::functions::register as register_functions;
pub use crate::surfaces::apigee::explain;

/// Every rollup family's rebuild, by name, which the tests compare with its upkeep.
pub use crate::store::rollups::REBUILDS;

/// The CircleCI surface's figures by both paths (rollups and window functions), and the
/// statements its bench times.
pub mod circleci {
    pub use crate::surfaces::circleci::rollup::{Figures, BENCHED, BENCHED_JOBS};
    pub use crate::surfaces::circleci::sql::{
        flaky, job_metrics, Agg, Branches, Scope, BENCHED as BENCHED_SQL,
    };
    pub use crate::surfaces::circleci::{job_figures, workflow_figures, workflow_figures_exact};
}

/// Every path the routing table serves, as OpenAPI path templates (the `route` label of the
/// request metrics).
pub use crate::server::TEMPLATES as ROUTE_TEMPLATES;
