//! The credential a client presents: the four ways a token may arrive in a request's headers.

use base64::Engine;

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
}
