//! Broker addresses as operators write them: `mqtt://host[:1883]` or
//! `mqtts://host[:8883]`. Shared by the service and the simulator, so both accept and
//! refuse the same URLs with the same words.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Why a broker URL was refused; the message quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokerUrlError(String);

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`. Credentials do not belong in
    /// the URL (they would end up in logs); they are separate settings.
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let err = |why: &str| BrokerUrlError(format!("broker url {url:?} {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(err("must start with mqtt:// or mqtts://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('@') {
            return Err(err(
                "carries credentials; give them as a username and password instead",
            ));
        }
        if authority.contains('/') {
            return Err(err("has a path; expected mqtt://host:port"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| err("has a bad port"))?;
                (host, port)
            }
            _ => (authority, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("has no host"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_or_say_why_not() {
        let ok: &[(&str, bool, &str, u16)] = &[
            ("mqtt://127.0.0.1:1883", false, "127.0.0.1", 1883),
            (
                "mqtt://broker.example.org",
                false,
                "broker.example.org",
                1883,
            ),
            (
                "mqtts://broker.example.org/",
                true,
                "broker.example.org",
                8883,
            ),
            ("mqtts://broker:9883", true, "broker", 9883),
            ("mqtt://[::1]:1884", false, "::1", 1884),
        ];
        for &(url, tls, host, port) in ok {
            let got = BrokerUrl::parse(url).unwrap();
            assert_eq!(
                (got.tls, got.host.as_str(), got.port),
                (tls, host, port),
                "{url}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("tcp://x:1883", "must start with mqtt://"),
            ("mqtt://", "has no host"),
            ("mqtt://x:notaport", "bad port"),
            ("mqtt://x:0", "bad port"),
            ("mqtt://gw:pw@x", "carries credentials"),
            ("mqtt://x:1883/topic", "has a path"),
        ];
        for (url, want) in bad {
            let err = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}
