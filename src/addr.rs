//! Node addresses as people write them: `IP:PORT`, or `localhost:PORT`.
//!
//! One parser for every place an address comes from (config files, flags, `CLUSTER
//! ADD-LEARNER`), so they all accept and refuse the same strings.

use std::net::SocketAddr;

/// Parses `IP:PORT` (or `localhost:PORT`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("bad address '{s}': expected IP:PORT, such as 127.0.0.1:7001");
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ip_and_port_or_localhost() {
        assert_eq!(parse_addr("127.0.0.1:7001").unwrap().port(), 7001);
        assert_eq!(parse_addr("localhost:7002").unwrap(), "127.0.0.1:7002".parse().unwrap());
        assert_eq!(parse_addr("[::1]:7003").unwrap().port(), 7003);
        for bad in ["", "nowhere", "127.0.0.1", "127.0.0.1:99999", "localhost:x", "example.org:80"] {
            assert!(parse_addr(bad).unwrap_err().starts_with("bad address"), "{bad}");
        }
    }
}
