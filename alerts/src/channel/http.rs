//! The HTTP client of the SMS and webhook channels: rustls with the ring provider (the
//! one crypto provider of the project) and the system's trust roots.

use std::sync::Arc;

use super::ChannelError;

pub(super) fn client() -> Result<reqwest::Client, ChannelError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate must not stop notifications to everyone else.
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ChannelError::HttpClient(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("stockpile/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ChannelError::HttpClient(e.to_string()))
}

/// Delivery outcome of an HTTP status: 2xx delivered; 408, 429 and 5xx may pass; any
/// other status will not.
pub(super) fn classify(
    status: reqwest::StatusCode,
    body: &str,
) -> Result<(), super::DeliveryError> {
    use super::DeliveryError::{Permanent, Transient};
    let detail = |what: &str| {
        let body: String = body.chars().take(200).collect();
        format!("{what} {status}: {body}")
    };
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(Transient(detail("answered")))
    } else {
        Err(Permanent(detail("refused with")))
    }
}

/// A request that got no answer (connection refused, timeout, TLS): may pass.
pub(super) fn no_answer(error: reqwest::Error) -> super::DeliveryError {
    // The URL may carry a key (WeCom robots do): say where without the query.
    let error = error.without_url();
    super::DeliveryError::Transient(format!("no answer: {error}"))
}
