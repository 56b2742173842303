//! The per-token request quota: fixed one-minute windows, answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Fixed one-minute windows of requests per token.
pub struct Quota {
    per_minute: u32,
    windows: Mutex<HashMap<i64, (i64, u32)>>,
}

impl Quota {
    pub fn new(per_minute: u32) -> Quota {
        Quota {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `token_id` at `now_ms`; over quota, the seconds until the window ends.
    pub fn check(&self, token_id: i64, now_ms: i64) -> Result<()> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let minute = now_ms.div_euclid(60_000);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(token_id).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            let retry = ((minute + 1) * 60_000 - now_ms + 999) / 1000;
            return Err(Error::TooManyRequests(retry.max(1) as u64));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_resets_each_minute() {
        let q = Quota::new(2);
        assert!(q.check(1, 60_000).is_ok());
        assert!(q.check(1, 61_000).is_ok());
        // Third request 30 s before the window ends.
        match q.check(1, 90_000) {
            Err(Error::TooManyRequests(s)) => assert_eq!(s, 30),
            other => panic!("{other:?}"),
        }
        assert!(q.check(2, 90_000).is_ok());
        assert!(q.check(1, 120_000).is_ok());
    }
}
