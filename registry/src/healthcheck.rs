//! `registry healthcheck`: a blocking HTTP/1.1 GET over a plain `std` TCP stream, so that a container
//! healthcheck needs neither an async runtime nor a `curl` in the image.
//!
//! This module owns only that tiny client. It speaks plain `http://` and reads at most a few KiB of the answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::Error;

/// The most bytes read from the answer; the status line is all that matters.
const MAX_RESPONSE_BYTES: u64 = 8 * 1024;

/// The parts of an `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host and port to connect to.
    pub authority: String,
    /// The path and query to request.
    pub path: String,
}

/// Splits an `http://` URL. The port defaults to 80 and the path to `/`.
pub fn parse_url(url: &str) -> Result<Target, Error> {
    let bad = |reason| Error::BadUrl { url: url.to_owned(), reason };
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("the host is missing"));
    }
    if authority.contains('@') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("credentials, spaces and control characters are not supported"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && (!host.contains(':') || host.ends_with(']'))
    });
    let authority = if has_port { authority.to_owned() } else { format!("{authority}:80") };
    Ok(Target { authority, path: path.to_owned() })
}

/// GETs `url` and succeeds only on a `200` status, each step bounded by `timeout`.
pub fn check(url: &str, timeout: Duration) -> Result<(), Error> {
    let target = parse_url(url)?;
    let io_error = |source| Error::HealthcheckIo { url: url.to_owned(), source };
    let address = target
        .authority
        .to_socket_addrs()
        .map_err(io_error)?
        .next()
        .ok_or_else(|| Error::BadUrl { url: url.to_owned(), reason: "the host does not resolve" })?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(io_error)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.path, target.authority);
    stream.write_all(request.as_bytes()).map_err(io_error)?;
    let mut answer = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut answer).map_err(io_error)?;
    let status_line = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1);
    if status_line.starts_with("HTTP/1.") && status == Some("200") {
        Ok(())
    } else {
        Err(Error::Unhealthy { url: url.to_owned(), status_line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_with_defaults() {
        let target = parse_url("http://127.0.0.1:8500/health").unwrap();
        assert_eq!(target, Target { authority: "127.0.0.1:8500".into(), path: "/health".into() });
        let target = parse_url("http://registry").unwrap();
        assert_eq!(target, Target { authority: "registry:80".into(), path: "/".into() });
        let target = parse_url("http://[::1]:9/ready?x=1").unwrap();
        assert_eq!(target, Target { authority: "[::1]:9".into(), path: "/ready?x=1".into() });
        assert!(parse_url("https://x/health").is_err());
        assert!(parse_url("http:///health").is_err());
        assert!(parse_url("http://u:p@x/").is_err());
    }

    #[test]
    fn a_closed_port_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let result = check(&format!("http://{address}/health"), Duration::from_secs(2));
        assert!(matches!(result, Err(Error::HealthcheckIo { .. })), "{result:?}");
    }
}
