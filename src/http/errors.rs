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
            Error::TooManyRequests(secs) => resp.headers.push(("Retry-After", secs.to_string())),
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
        _ => "INTERNAL",
    }
}
