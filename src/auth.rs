//! Tokens (contract §2): making and hashing secrets, reading the credential a client presents,
//! scopes, and the per-token request quota. No SQL and no HTTP types here.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Ingest,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }
}

/// Validates a comma list of scopes and returns it normalized (deduplicated, in fixed order).
pub fn parse_scopes(list: &str) -> Result<String> {
    let mut wanted = [false; 3];
    for word in list.split(',').map(str::trim) {
        match word {
            "read" => wanted[0] = true,
            "ingest" => wanted[1] = true,
            "admin" => wanted[2] = true,
            other => {
                return Err(Error::bad(format!(
                    "unknown scope {other:?}; expected a comma list of read, ingest, admin"
                )))
            }
        }
    }
    let names = ["read", "ingest", "admin"];
    Ok(names
        .iter()
        .zip(wanted)
        .filter(|(_, w)| *w)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(","))
}

pub fn has_scope(scopes: &str, scope: Scope) -> bool {
    scopes.split(',').any(|s| s == scope.as_str())
}

/// A new secret: 32 bytes from the operating system's random source, URL-safe base64, prefixed.
pub fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "ps_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The stored form of a secret. Secrets carry 256 random bits, so a plain SHA-256 suffices.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token a request presents, from the first of: `Authorization: Bearer T`,
/// `X-Auth-Token: T`, `Circle-Token: T`, or HTTP Basic with the token as user name.
pub fn presented_token(header: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(auth) = header("Authorization") {
        let auth = auth.trim();
        if let Some((scheme, rest)) = auth.split_once(' ') {
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
                return Some(rest.to_owned());
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
                return (!user.is_empty()).then(|| user.to_owned());
            }
        }
    }
    ["X-Auth-Token", "Circle-Token"].into_iter().find_map(|h| {
        header(h)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

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

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn four_ways_to_present_a_token() {
        assert_eq!(
            presented_token(headers(&[("Authorization", "Bearer abc")])),
            Some("abc".into())
        );
        assert_eq!(
            presented_token(headers(&[("X-Auth-Token", "abc")])),
            Some("abc".into())
        );
        assert_eq!(
            presented_token(headers(&[("Circle-Token", "abc")])),
            Some("abc".into())
        );
        // "abc:" in base64 is "YWJjOg==".
        assert_eq!(
            presented_token(headers(&[("Authorization", "Basic YWJjOg==")])),
            Some("abc".into())
        );
        assert_eq!(presented_token(headers(&[])), None);
        assert_eq!(
            presented_token(headers(&[("Authorization", "Basic !!")])),
            None
        );
    }

    #[test]
    fn scopes_normalize() {
        assert_eq!(parse_scopes("admin, read,read").unwrap(), "read,admin");
        assert!(parse_scopes("write").is_err());
        assert!(has_scope("read,ingest", Scope::Ingest));
        assert!(!has_scope("read", Scope::Admin));
    }

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
