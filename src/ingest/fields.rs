//! Reading a client's JSON object field by field: the one reader behind native ingestion
//! (`ingest`) and the webhooks (`webhooks::github`, `webhooks::gitlab`).
//!
//! Every reading checks the member's type and length and names the member's path when it
//! refuses (`field "jobs[0].status": unknown value "done"; expected one of …`). An explicit
//! `null` counts as absent everywhere. The refusal is a `FieldError`, which becomes a 400
//! (`Error::BadRequest`) or a plain message, whichever the caller returns.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::model::times;

/// Longest accepted id (run, job, rollback).
pub const MAX_ID: usize = 256;
/// Longest accepted name-like string (project, workflow, branch, job name, …).
pub const MAX_NAME: usize = 1024;
/// Longest accepted URL.
pub const MAX_URL: usize = 8192;
/// Longest accepted free text (error messages, test messages).
pub const MAX_TEXT: usize = 65_536;

/// Why a member was refused: the message, naming the member's path.
#[derive(Debug, PartialEq)]
pub struct FieldError(pub String);

impl From<FieldError> for String {
    fn from(e: FieldError) -> String {
        e.0
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Error {
        Error::BadRequest(e.0)
    }
}

type Result<T> = std::result::Result<T, FieldError>;

/// A JSON object being read, with its path for messages.
#[derive(Clone)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// The path of this object with a trailing dot (`jobs[2].`), "" for the top level.
    path: Cow<'a, str>,
}

impl<'a> Obj<'a> {
    /// The object `v` found at `path` (with a trailing dot; "" for the top level).
    pub fn new(v: &'a Value, path: impl Into<Cow<'a, str>>) -> Result<Obj<'a>> {
        let path = path.into();
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            _ if path.is_empty() => Err(FieldError("expected a JSON object".to_owned())),
            _ => Err(FieldError(format!(
                "field \"{}\": expected an object",
                path.trim_end_matches('.')
            ))),
        }
    }

    /// The path of member `key`, as messages name it (`jobs[2].status`).
    pub fn field_path(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    /// The refusal of member `key`.
    pub fn err(&self, key: &str, msg: &str) -> FieldError {
        FieldError(format!("field \"{}\": {msg}", self.field_path(key)))
    }

    /// The member `key`, an explicit `null` counting as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The array member `key` of at most `max` items.
    pub fn array(&self, key: &str, max: usize) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= max => Ok(Some(items)),
            Some(Value::Array(_)) => Err(self.err(key, &format!("more than {max} items"))),
            Some(_) => Err(self.err(key, "expected an array")),
        }
    }

    /// The object member `key`.
    pub fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>> {
        self.get(key)
            .map(|v| Obj::new(v, format!("{}{key}.", self.path)))
            .transpose()
    }

    pub fn obj(&self, key: &str) -> Result<Obj<'a>> {
        self.opt_obj(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    /// The objects of the array member `key` of at most `max` items, each with its path
    /// (`jobs[2].`).
    pub fn opt_objects(&self, key: &str, max: usize) -> Result<Option<Vec<Obj<'a>>>> {
        self.array(key, max)?
            .map(|items| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Obj::new(v, format!("{}{key}[{i}].", self.path)))
                    .collect()
            })
            .transpose()
    }

    /// The objects of the array member `key` (none when absent).
    pub fn objects(&self, key: &str) -> Result<Vec<Obj<'a>>> {
        Ok(self.opt_objects(key, usize::MAX)?.unwrap_or_default())
    }

    /// The object member `key` as JSON text.
    pub fn opt_object_text(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
            Some(_) => Err(self.err(key, "expected an object")),
        }
    }

    /// A string of at most `max` bytes; an empty one is kept. Ids, names and URLs (`max`
    /// below `MAX_TEXT`) must not hold a NUL character: C strings, file names and log lines
    /// end at one, so it would make one name look like another. Free text may.
    pub fn opt_str(&self, key: &str, max: usize) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() > max => {
                Err(self.err(key, &format!("longer than {max} bytes")))
            }
            Some(Value::String(s)) if max < MAX_TEXT && s.contains('\0') => Err(self.nul(key)),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(key, "expected a string")),
        }
    }

    pub fn req_str_allow_empty(&self, key: &str, max: usize) -> Result<String> {
        self.opt_str(key, max)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    pub fn req_str(&self, key: &str, max: usize) -> Result<String> {
        let s = self.req_str_allow_empty(key, max)?;
        if s.is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        Ok(s)
    }

    /// A name-like string of a CI system's payload, where an empty string means none.
    pub fn opt_name(&self, key: &str) -> Result<Option<String>> {
        Ok(self.opt_str(key, MAX_NAME)?.filter(|s| !s.is_empty()))
    }

    pub fn req_name(&self, key: &str) -> Result<String> {
        self.opt_name(key)?
            .ok_or_else(|| self.err(key, "is required (a non-empty string)"))
    }

    /// A URL of a CI system's payload, where an empty string means none.
    pub fn opt_url(&self, key: &str) -> Result<Option<String>> {
        Ok(self.opt_str(key, MAX_URL)?.filter(|s| !s.is_empty()))
    }

    /// Free text of a CI system's payload (a message), where an empty string means none.
    pub fn opt_text(&self, key: &str) -> Result<Option<String>> {
        Ok(self.opt_str(key, MAX_TEXT)?.filter(|s| !s.is_empty()))
    }

    /// A name one level down, such as a user's `login`.
    pub fn nested_name(&self, key: &str, inner: &str) -> Result<Option<String>> {
        match self.opt_obj(key)? {
            Some(o) => o.opt_name(inner),
            None => Ok(None),
        }
    }

    /// An id of a CI system's payload: a JSON integer >= 0 or a non-empty string, as text.
    pub fn opt_id(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(Some(n.to_string())),
            Some(Value::String(s)) if s.len() > MAX_ID => {
                Err(self.err(key, &format!("longer than {MAX_ID} bytes")))
            }
            Some(Value::String(s)) if s.contains('\0') => Err(self.nul(key)),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.err(key, "expected an id (an integer or a non-empty string)")),
        }
    }

    pub fn req_id(&self, key: &str) -> Result<String> {
        self.opt_id(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    pub fn opt_int(&self, key: &str, min: i64) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) if i >= min => Ok(Some(i)),
                _ => Err(self.err(key, &format!("expected an integer >= {min}"))),
            },
            Some(_) => Err(self.err(key, "expected an integer")),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(key, "expected true or false")),
        }
    }

    /// A time of the native API: RFC 3339 text or integer Unix seconds.
    pub fn opt_time(&self, key: &str) -> Result<Option<i64>> {
        let parsed = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => times::parse_rfc3339(s),
            Some(Value::Number(n)) => n.as_i64().and_then(times::from_unix_seconds),
            Some(_) => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.err(key, "expected an RFC 3339 time (e.g. \"2026-01-31T12:00:00Z\") or integer Unix seconds, 1970..9999")
        })
    }

    pub fn req_time(&self, key: &str) -> Result<i64> {
        self.opt_time(key)?
            .ok_or_else(|| self.err(key, "is required"))
    }

    /// A time of a CI system's payload, read by `parse` (RFC 3339 for GitHub, GitLab's forms
    /// too for GitLab); an empty string means none.
    pub fn opt_time_by(&self, key: &str, parse: fn(&str) -> Option<i64>) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => parse(s)
                .map(Some)
                .ok_or_else(|| self.err(key, "expected a time such as \"2026-01-31T12:00:00Z\"")),
            Some(_) => Err(self.err(key, "expected a time string")),
        }
    }

    /// One of a closed set of words, read by `parse`; `names` lists them for the message.
    pub fn opt_enum<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse(s)
                .map(Some)
                .ok_or_else(|| self.unknown(key, s, &names.join(", "))),
            Some(_) => Err(self.err(
                key,
                &format!("expected a string, one of {}", names.join(", ")),
            )),
        }
    }

    /// One of a CI system's words, each given with what it means in `table`; an empty string
    /// counts as absent.
    pub fn req_word<T: Copy>(&self, key: &str, table: &[(&str, T)]) -> Result<T> {
        let names = || {
            let words: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
            words.join(", ")
        };
        match self.get(key) {
            None => Err(self.err(key, "is required")),
            Some(Value::String(s)) if s.is_empty() => Err(self.err(key, "is required")),
            Some(Value::String(s)) => table
                .iter()
                .find(|(w, _)| w == s)
                .map(|(_, t)| *t)
                .ok_or_else(|| self.unknown(key, s, &names())),
            Some(_) => Err(self.err(key, &format!("expected a string, one of {}", names()))),
        }
    }

    /// The refusal of a NUL character in member `key`.
    fn nul(&self, key: &str) -> FieldError {
        self.err(key, "must not contain a NUL character (\\u0000)")
    }

    /// The refusal of `word`, quoted back clipped, as a value of member `key`.
    fn unknown(&self, key: &str, word: &str, names: &str) -> FieldError {
        let shown = clip(word, 64);
        self.err(
            key,
            &format!("unknown value {shown:?}; expected one of {names}"),
        )
    }

    pub fn req_enum<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
        names: &[&str],
    ) -> Result<T> {
        self.opt_enum(key, parse, names)?
            .ok_or_else(|| self.err(key, "is required"))
    }
}

/// At most `max` characters of a client's value, to quote it back in a message; `…` marks a cut.
pub fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected a refusal"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn refusals_name_the_path() {
        let v = json!({"a": {"b": [{"n": 7}, {"n": "x"}]}, "s": "", "t": null});
        let root = Obj::new(&v, "").unwrap();
        let items = root.obj("a").unwrap().objects("b").unwrap();
        assert_eq!(items[0].opt_int("n", 0), Ok(Some(7)));
        assert_eq!(
            msg(items[0].opt_int("n", 8)),
            "field \"a.b[0].n\": expected an integer >= 8"
        );
        assert_eq!(
            msg(items[1].opt_int("n", 0)),
            "field \"a.b[1].n\": expected an integer"
        );
        assert_eq!(msg(root.obj("s")), "field \"s\": expected an object");
        assert_eq!(msg(root.obj("t")), "field \"t\": is required");
        assert_eq!(msg(Obj::new(&json!([1]), "")), "expected a JSON object");
    }

    #[test]
    fn empty_strings() {
        let v = json!({"s": "", "id": 0, "bad_id": -1});
        let o = Obj::new(&v, "").unwrap();
        // The native API keeps an empty string; payload readings treat it as none.
        assert_eq!(o.opt_str("s", 10), Ok(Some(String::new())));
        assert_eq!(o.opt_name("s"), Ok(None));
        assert_eq!(msg(o.req_str("s", 10)), "field \"s\": must not be empty");
        assert_eq!(
            msg(o.req_name("s")),
            "field \"s\": is required (a non-empty string)"
        );
        assert_eq!(o.opt_id("id"), Ok(Some("0".to_owned())));
        assert!(o.opt_id("bad_id").is_err());
    }

    #[test]
    fn lengths_and_sizes() {
        let v = json!({"s": "abcd", "a": [1, 2, 3]});
        let o = Obj::new(&v, "x.").unwrap();
        assert_eq!(msg(o.opt_str("s", 3)), "field \"x.s\": longer than 3 bytes");
        assert_eq!(o.array("a", 3).unwrap().map(Vec::len), Some(3));
        assert_eq!(msg(o.array("a", 2)), "field \"x.a\": more than 2 items");
        assert_eq!(msg(o.array("s", 2)), "field \"x.s\": expected an array");
        assert_eq!(
            msg(o.opt_objects("a", 2)),
            "field \"x.a\": more than 2 items"
        );
        assert_eq!(
            msg(o.opt_objects("a", 3)),
            "field \"x.a[0]\": expected an object"
        );
        let long = json!({"id": "i".repeat(MAX_ID + 1)});
        assert_eq!(
            msg(Obj::new(&long, "").unwrap().opt_id("id")),
            format!("field \"id\": longer than {MAX_ID} bytes")
        );
    }

    #[test]
    fn words() {
        const TABLE: &[(&str, u8)] = &[("a", 1), ("b", 2)];
        let v = json!({"w": "b", "e": "", "n": 3, "u": "zz"});
        let o = Obj::new(&v, "").unwrap();
        assert_eq!(o.req_word("w", TABLE), Ok(2));
        assert_eq!(msg(o.req_word("e", TABLE)), "field \"e\": is required");
        assert_eq!(msg(o.req_word("x", TABLE)), "field \"x\": is required");
        assert_eq!(
            msg(o.req_word("n", TABLE)),
            "field \"n\": expected a string, one of a, b"
        );
        assert_eq!(
            msg(o.req_word("u", TABLE)),
            "field \"u\": unknown value \"zz\"; expected one of a, b"
        );
    }

    #[test]
    fn nul_characters_in_ids_and_names_are_refused_and_kept_in_text() {
        let v = json!({"id": "a\u{0}b", "name": "x\u{0}", "msg": "line\u{0}"});
        let o = Obj::new(&v, "jobs[1].").unwrap();
        assert_eq!(
            msg(o.opt_id("id")),
            "field \"jobs[1].id\": must not contain a NUL character (\\u0000)"
        );
        assert_eq!(
            msg(o.opt_str("id", MAX_ID)),
            "field \"jobs[1].id\": must not contain a NUL character (\\u0000)"
        );
        assert!(o.opt_name("name").is_err());
        assert!(o.opt_url("name").is_err());
        assert_eq!(o.opt_text("msg"), Ok(Some("line\u{0}".to_owned())));
    }

    #[test]
    fn clipping() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("ééé", 2), "éé…");
    }
}
