//! Broker URLs (`mqtt://host:port`, `mqtts://host:port`) and the rumqttc options built
//! from them.

use std::fmt;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::{IngestConfig, IngestError, MAX_PACKET_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    #[error("broker url {0:?} must start with mqtt:// or mqtts://")]
    Scheme(String),
    #[error("broker url {0:?} has no host")]
    NoHost(String),
    #[error("broker url {0:?} has a bad port")]
    BadPort(String),
}

impl BrokerUrl {
    /// Parses `mqtt://host[:1883]` or `mqtts://host[:8883]`. Credentials do not belong
    /// in the URL (they would end up in logs); they have their own config keys.
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(BrokerUrlError::Scheme(url.into()));
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('@') || authority.contains('/') {
            return Err(BrokerUrlError::NoHost(url.into()));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| BrokerUrlError::BadPort(url.into()))?,
            ),
            _ => (authority, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(BrokerUrlError::NoHost(url.into()));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
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

pub(crate) fn mqtt_options(config: &IngestConfig) -> Result<MqttOptions, IngestError> {
    let mut options = MqttOptions::new(
        config.client_id.clone(),
        config.broker.host.clone(),
        config.broker.port,
    );
    options
        .set_keep_alive(config.keep_alive)
        // A persistent session: the broker queues QoS 1 readings while we are down.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    if config.broker.tls {
        options.set_transport(Transport::Tls(tls_configuration(config)?));
    }
    Ok(options)
}

fn tls_configuration(config: &IngestConfig) -> Result<TlsConfiguration, IngestError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate must not stop us; the broker's own CA may be
        // configured explicitly below.
        let _ = roots.add(cert);
    }
    if let Some(pem) = &config.ca_pem {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| IngestError::Options(format!("ca certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| IngestError::Options(format!("ca certificate: {e}")))?;
        }
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(std::sync::Arc::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse() {
        let ok: &[(&str, bool, &str, u16)] = &[
            ("mqtt://127.0.0.1:1883", false, "127.0.0.1", 1883),
            (
                "mqtt://broker.example.org",
                false,
                "broker.example.org",
                1883,
            ),
            (
                "mqtts://broker.example.org",
                true,
                "broker.example.org",
                8883,
            ),
            ("mqtts://broker:9883/", true, "broker", 9883),
            ("mqtt://[::1]:1884", false, "::1", 1884),
        ];
        for (url, tls, host, port) in ok {
            let got = BrokerUrl::parse(url).unwrap();
            assert_eq!(
                (got.tls, got.host.as_str(), got.port),
                (*tls, *host, *port),
                "{url}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("tcp://x:1883", "must start with mqtt://"),
            ("mqtt://", "has no host"),
            ("mqtt://x:notaport", "bad port"),
            ("mqtt://x:0", "bad port"),
            ("mqtt://user:pw@x:1883", "has no host"),
        ];
        for (url, want) in bad {
            let err = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }
}
