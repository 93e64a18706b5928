//! The `consumer-app healthcheck` subcommand: one plain HTTP GET over a std `TcpStream`, with timeouts, so
//! a container healthcheck needs no curl and no async runtime. It owns only that probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long connecting, writing and reading may each take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The URL probed when none is given: `/health` on the listen port, at 127.0.0.1 when the app listens on
/// every address.
pub fn default_url(listen: SocketAddr) -> String {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{target}/health")
}

/// GETs `url` (plain `http://host:port/path`) and returns the status if it is 2xx. The error is one line.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {authority:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|error| format!("cannot send to {addr}: {error}"))?;
    // The status line is all that matters, so a small bounded read is enough.
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        match stream.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) => return Err(format!("cannot read from {addr}: {error}")),
        }
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("{url} did not answer HTTP"))?;
    if (200..300).contains(&status) { Ok(status) } else { Err(format!("{url} answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_urls() {
        assert!(probe("https://127.0.0.1:1/health", PROBE_TIMEOUT).unwrap_err().contains("http://"));
        assert!(probe("http:///health", PROBE_TIMEOUT).unwrap_err().contains("no host"));
    }

    #[test]
    fn fails_when_nothing_listens() {
        // Bind then drop a listener so the port is very likely free and the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(probe(&format!("http://127.0.0.1:{port}/health"), PROBE_TIMEOUT).is_err());
    }

    #[test]
    fn the_default_url_uses_loopback() {
        assert_eq!(default_url("0.0.0.0:8090".parse().unwrap()), "http://127.0.0.1:8090/health");
        assert_eq!(default_url("10.1.2.3:81".parse().unwrap()), "http://10.1.2.3:81/health");
    }
}
