//! Open mode's guards. With no token stored, a daemon on loopback serves anyone who reaches
//! it, and a web page in the user's browser reaches it too: by DNS rebinding (a name of the
//! attacker's that resolves to 127.0.0.1, so the `Host` is not a loopback name) or by a
//! cross-site request (its `Origin` or `Sec-Fetch-Site` says so). Both are refused here.

use crate::error::{Error, Result};

/// The answer to `POST /api/v1/tokens` in open mode.
pub(super) const TOKEN_CREATION: &str =
    "creating a token over HTTP needs an admin token, also in open mode; \
     make the first one with `pipestat token create --name NAME --scope admin`";

/// Accepts a loopback `Host` (localhost, 127.0.0.0/8, [::1], any port); a request without one
/// only on HTTP/1.0, which does not require it.
pub(super) fn loopback_host(host: Option<&str>, version: &tiny_http::HTTPVersion) -> Result<()> {
    let Some(host) = host else {
        if *version <= (1, 0) {
            return Ok(());
        }
        return Err(Error::bad("the Host header is required"));
    };
    if is_loopback_authority(host) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "Host {:?} is not a loopback name: without tokens pipestat answers only \
             localhost, 127.0.0.1 and [::1] (create a token to serve other names)",
            clip(host)
        )))
    }
}

/// Refuses a state-changing request that a browser marks as coming from another site: an
/// `Origin` other than the request's own `Host`, or `Sec-Fetch-Site: cross-site` / `same-site`.
/// Clients that are not browsers (curl, CI systems, GitHub's webhooks) send neither.
pub(super) fn same_origin(header: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    if let Some(site) = header("Sec-Fetch-Site") {
        let site = site.trim();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(Error::Forbidden(format!(
                "refusing a {site} request from a web page (Sec-Fetch-Site)"
            )));
        }
    }
    let Some(origin) = header("Origin") else {
        return Ok(());
    };
    let host = header("Host").unwrap_or_default();
    if same_authority(origin.trim(), host.trim()) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "refusing a request from the web page of another origin ({:?})",
            clip(&origin)
        )))
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as `host`.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null", or not an origin at all
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let normal = |a: &str| {
        let (name, port) = split_port(a);
        (
            name.to_ascii_lowercase(),
            port.unwrap_or(default_port).to_owned(),
        )
    };
    !host.is_empty() && normal(authority) == normal(host)
}

/// Splits `name[:port]`, with `[v6]` names kept whole.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, tail)) => (name, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (authority, None),
    }
}

fn is_loopback_authority(host: &str) -> bool {
    let (name, port) = split_port(host.trim());
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if host.trim().starts_with('[') {
        return name
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.:1",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.255.0.9:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "128.0.0.1",
            "0.0.0.0:8080",
            "[::2]:8080",
            "::1",
            "127.0.0.1:80x",
            "127.0.0.1:",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(same_authority("http://localhost:8080", "localhost:8080"));
        assert!(same_authority("http://LocalHost", "localhost:80"));
        assert!(same_authority("http://[::1]:9", "[::1]:9"));
        assert!(!same_authority("http://localhost:8081", "localhost:8080"));
        assert!(!same_authority("https://localhost:8080", "127.0.0.1:8080"));
        assert!(!same_authority("http://evil.example", "localhost:80"));
        assert!(!same_authority("null", "localhost:8080"));
        assert!(!same_authority("http://localhost:8080", ""));
    }
}
