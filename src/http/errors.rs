//! The error shapes: each surface answers errors in the shape of the API it imitates.

use serde_json::json;

use super::Resp;
use crate::error::Error;

/// The API family a path belongs to; it decides the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Native,
    CircleCi,
    Zadig,
    CodeArts,
    Apigee,
}

impl Surface {
    pub fn of(path: &str) -> Surface {
        if path.starts_with("/api/v2/") {
            Surface::CircleCi
        } else if path.starts_with("/openapi/") {
            Surface::Zadig
        } else if path.starts_with("/v3/") {
            Surface::CodeArts
        } else if path.starts_with("/v1/") {
            Surface::Apigee
        } else {
            Surface::Native
        }
    }

    /// Renders an error in the shape of this surface's original.
    pub fn error(self, e: &Error) -> Resp {
        let status = e.status();
        let message = e.to_string();
        let body = match self {
            Surface::Native => json!({"error": {"code": e.code(), "message": message}}),
            Surface::CircleCi => json!({"message": message}),
            Surface::Zadig => json!({
                "type": "error", "message": message, "code": status,
                "description": message, "extra": {}
            }),
            Surface::CodeArts => {
                json!({"error_code": format!("PIPESTAT.{status}"), "error_msg": message})
            }
            Surface::Apigee => {
                json!({"error": {"code": status, "message": message, "status": reason(status)}})
            }
        };
        let mut resp = Resp::json(status, &body);
        match e {
            Error::MethodNotAllowed(allow) => resp.headers.push(("Allow", (*allow).to_owned())),
            Error::TooManyRequests(secs) | Error::StorageFull(secs) => {
                resp.headers.push(("Retry-After", secs.to_string()))
            }
            _ => {}
        }
        resp
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        408 => "DEADLINE_EXCEEDED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(resp: &'a Resp, name: &str) -> Option<&'a str> {
        resp.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_full_disk_is_503_with_retry_after_in_every_shape() {
        let e = Error::StorageFull(10);
        for (surface, path) in [
            (Surface::Native, "/error/code"),
            (Surface::CircleCi, "/message"),
            (Surface::Zadig, "/message"),
            (Surface::CodeArts, "/error_msg"),
            (Surface::Apigee, "/error/message"),
        ] {
            let resp = surface.error(&e);
            assert_eq!(resp.status, 503, "{surface:?}");
            assert_eq!(header(&resp, "Retry-After"), Some("10"), "{surface:?}");
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            assert!(body.pointer(path).is_some(), "{surface:?}: {body}");
        }
        let body = |s: Surface| -> serde_json::Value {
            serde_json::from_slice(&s.error(&e).body).unwrap()
        };
        assert_eq!(body(Surface::Native)["error"]["code"], "storage_full");
        assert_eq!(body(Surface::Zadig)["code"], 503);
        assert_eq!(body(Surface::CodeArts)["error_code"], "PIPESTAT.503");
        assert_eq!(body(Surface::Apigee)["error"]["status"], "UNAVAILABLE");
        assert!(body(Surface::CircleCi)["message"]
            .as_str()
            .unwrap()
            .contains("disk holding the database is full"));
    }
}
