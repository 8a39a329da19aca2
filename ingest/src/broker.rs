//! The rumqttc options built from the config: session, acks, credentials, TLS.

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use secrecy::ExposeSecret;

use crate::{IngestConfig, IngestError, MAX_PACKET_BYTES};

/// The options ingest connects with; also for the server's other connections to the
/// same broker (a cluster instance's alert state), which set their own client id.
pub fn mqtt_options(config: &IngestConfig) -> Result<MqttOptions, IngestError> {
    let mut options = MqttOptions::new(
        config.mqtt.client_id.clone(),
        config.broker.host.clone(),
        config.broker.port,
    );
    options
        .set_keep_alive(config.keep_alive)
        // A persistent session: the broker queues QoS 1 readings while we are down.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some(user) = &config.mqtt.username {
        let password = config
            .mqtt
            .password
            .as_ref()
            .map(ExposeSecret::expose_secret);
        options.set_credentials(user.clone(), password.unwrap_or_default());
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
