//! Tokens: making and hashing secrets, scopes, and the `tokens` table. A token's secret is
//! shown once, when it is made; only its SHA-256 is stored.

use std::io::Read;

use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension, Row};
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
/// A stored token, without its secret.
#[derive(Debug)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
}

const INSERT_TOKEN: &str =
    "INSERT INTO tokens (name, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (name) DO NOTHING";
const SELECT_TOKENS: &str = "SELECT id, name, scopes, created_at FROM tokens ORDER BY name";
const SELECT_TOKEN_BY_HASH: &str =
    "SELECT id, name, scopes, created_at FROM tokens WHERE hash = ?1";
const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE name = ?1";
const ANY_TOKEN: &str = "SELECT EXISTS (SELECT 1 FROM tokens)";

fn token_from_row(r: &Row) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        scopes: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// Stores a token's hash; a name already in use is refused.
pub fn create_token(
    conn: &Connection,
    name: &str,
    hash: &str,
    scopes: &str,
    now: i64,
) -> Result<()> {
    let inserted = conn
        .prepare_cached(INSERT_TOKEN)?
        .execute(params![name, hash, scopes, now])?;
    if inserted == 0 {
        return Err(Error::bad(format!("a token named {name:?} already exists")));
    }
    Ok(())
}

pub fn list_tokens(conn: &Connection) -> Result<Vec<TokenInfo>> {
    let mut stmt = conn.prepare_cached(SELECT_TOKENS)?;
    let rows = stmt
        .query_map([], token_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn find_token(conn: &Connection, hash: &str) -> Result<Option<TokenInfo>> {
    Ok(conn
        .prepare_cached(SELECT_TOKEN_BY_HASH)?
        .query_row([hash], token_from_row)
        .optional()?)
}

/// Deletes the named token; false when there was none.
pub fn revoke_token(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.prepare_cached(DELETE_TOKEN)?.execute([name])? > 0)
}

pub fn any_token(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached(ANY_TOKEN)?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_normalize() {
        assert_eq!(parse_scopes("admin, read,read").unwrap(), "read,admin");
        assert!(parse_scopes("write").is_err());
        assert!(has_scope("read,ingest", Scope::Ingest));
        assert!(!has_scope("read", Scope::Admin));
    }
}
