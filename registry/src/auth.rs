//! The shared token: checking that a request that changes the topology carries it, and finding the token a
//! request presents (which `identities` checks against each node's own).
//!
//! This module owns how a token is found (header or body field) and compared. It does not know which
//! endpoints need one; the handlers in `api` ask.

use axum::http::{HeaderMap, header};

use crate::error::RequestError;

/// Checks the token when one is configured: `Authorization: Bearer <token>` or, for clients that cannot set
/// headers, the body's `token` field.
pub fn check_token(
    expected: Option<&str>,
    headers: &HeaderMap,
    body_token: Option<&str>,
) -> Result<(), RequestError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = presented_token(headers, body_token).ok_or(RequestError::Unauthorized)?;
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(RequestError::Unauthorized)
    }
}

/// The token a request presents: `Authorization: Bearer <token>`, else the body's `token` field.
pub(crate) fn presented_token<'a>(headers: &'a HeaderMap, body_token: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .or(body_token)
}

/// Compares without stopping at the first difference, so that response time does not reveal how much of a
/// guessed token is right.
pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter().zip(right).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_come_from_the_header_or_the_body() {
        let mut headers = HeaderMap::new();
        assert!(check_token(None, &headers, None).is_ok());
        assert!(matches!(check_token(Some("s3cret"), &headers, None), Err(RequestError::Unauthorized)));
        assert!(check_token(Some("s3cret"), &headers, Some("s3cret")).is_ok());
        assert!(check_token(Some("s3cret"), &headers, Some("s3cre")).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(check_token(Some("s3cret"), &headers, None).is_ok());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong!"));
        assert!(check_token(Some("s3cret"), &headers, Some("s3cret")).is_err());
    }
}
