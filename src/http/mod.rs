//! HTTP as the surfaces see it: a request already authenticated and read (`Req`), an answer
//! (`Resp`), the error shapes of every surface (`errors`), and the credentials a request
//! presents. No server here: only `server` knows tiny_http.

pub mod credentials;
pub mod errors;

use std::cell::{Ref, RefCell};

use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::store::tokens::TokenInfo;

pub use errors::Surface;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    Other,
}

/// A request after the checks every route shares: authenticated, within quota, body read.
pub struct Req {
    pub method: Method,
    /// Path segments, percent-decoded (so `gh%2Facme%2Fapi` is one segment `gh/acme/api`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// Read through `body()`; `drop_body` frees it once parsed.
    pub(crate) body: RefCell<Vec<u8>>,
    /// Request headers as sent (names in their original case; compare them ignoring case).
    pub headers: Vec<(String, String)>,
    /// The token presented, or None in open mode.
    pub token: Option<TokenInfo>,
}

impl Req {
    /// A GET with only a query string (decoded as the daemon decodes one), for calling a
    /// statistics query in-process: `apigee::explain` in the tests and benches.
    pub fn with_query(query: &str) -> Req {
        Req {
            method: Method::Get,
            segments: Vec::new(),
            query: parse_query(query),
            content_type: None,
            body: RefCell::default(),
            headers: Vec::new(),
            token: None,
        }
    }

    /// The request body (empty after `drop_body`).
    pub fn body(&self) -> Ref<'_, Vec<u8>> {
        self.body.borrow()
    }

    /// Frees the body once it has been parsed, so that a large one is not held in memory while
    /// its write waits for the writer.
    pub fn drop_body(&self) {
        self.body.take();
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a header, its name compared ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lowercased, without parameters such as charset.
    pub fn media_type(&self) -> Option<String> {
        self.content_type.as_deref().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// An answer: status, content type, extra headers, body.
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, value: &Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).expect("a Value serializes"),
        }
    }
}

/// A boolean query parameter's value as clients send it: `true` or `false` in any case (Python
/// clients send `True`), or `1` or `0`; anything else is None.
pub fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

/// Splits and percent-decodes a query string (`+` is a space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("a=1&b=x%20y+z&flag&c=%2F");
        assert_eq!(
            q,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("flag".into(), "".into()),
                ("c".into(), "/".into())
            ]
        );
    }
}
