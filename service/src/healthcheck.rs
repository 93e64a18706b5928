//! The `healthcheck` subcommand of every binary: one plain HTTP/1.1 GET over a std `TcpStream`, so a
//! container healthcheck needs no curl in the image and no async runtime. It owns only that probe.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long connecting, writing and reading may each take when the caller has no opinion.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The URL probed when none is given: `/health` on the listen port, at 127.0.0.1 when the service listens
/// on every address.
pub fn default_url(listen: SocketAddr) -> String {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{target}/health")
}

/// Most response bytes read: the status line is all that matters.
const MAX_RESPONSE_BYTES: usize = 4096;

/// GETs `url` (plain `http://host:port/path`) and succeeds on a 2xx status. The error is one line.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {authority}: {error}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|error| error.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|error| format!("cannot send the request: {error}"))?;
    let mut response = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !response.windows(2).any(|pair| pair == b"\r\n") && response.len() < MAX_RESPONSE_BYTES {
        let n = stream.read(&mut chunk).map_err(|error| format!("cannot read the answer: {error}"))?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let status_line = String::from_utf8_lossy(&response);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP".to_string())?;
    if (200..300).contains(&status) { Ok(status) } else { Err(format!("{url} answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_uses_loopback() {
        assert_eq!(default_url("0.0.0.0:8090".parse().unwrap()), "http://127.0.0.1:8090/health");
        assert_eq!(default_url("10.1.2.3:81".parse().unwrap()), "http://10.1.2.3:81/health");
    }

    #[test]
    fn refuses_bad_urls() {
        assert!(probe("https://example.invalid/", Duration::from_millis(100)).is_err());
        assert!(probe("http:///health", Duration::from_millis(100)).is_err());
    }

    #[test]
    fn reads_the_status() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Service Unavailable\r\n\r\n"] {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let n = socket.read(&mut request).unwrap();
                assert!(request[..n].starts_with(b"GET /health HTTP/1.1\r\n"));
                socket.write_all(answer.as_bytes()).unwrap();
            }
        });
        let url = format!("http://{addr}/health");
        assert_eq!(probe(&url, Duration::from_secs(5)), Ok(200));
        assert!(probe(&url, Duration::from_secs(5)).unwrap_err().contains("503"));
        server.join().unwrap();
    }
}
