use crate::model::{Rollback, Run};
pub struct Spec {
    pub runs: Option<u64>,
    pub days: u32,
    pub seed: u64,
    pub now_ms: i64,
}
pub fn generate<E>(
    _spec: &Spec,
    _batch: usize,
    _sink: impl FnMut(Vec<Run>) -> Result<(), E>,
) -> Result<Vec<Rollback>, E> {
    Ok(Vec::new())
}
