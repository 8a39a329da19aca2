//! The SMTP session behind the email channel: lettre's protocol
//! (`AsyncSmtpConnection`: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA) over a socket opened
//! here, so that it has `TCP_NODELAY`.
//!
//! lettre's own transport opens its socket with Nagle's algorithm on and writes a
//! message and its final `.` line in two writes: the second then waits for the server's
//! delayed ACK, about 40 ms on Linux, for every message (BENCHMARKS.md, "Alerts"). lettre
//! has no setting for the socket, but takes one already connected
//! (`connect_with_transport`), which is all this module adds. TLS stays lettre's
//! (`TlsParameters`, its root store), for STARTTLS and from the first byte alike.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)] // lettre's name for its stream, deprecated for outside use only
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT};
use reqwest::Url;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};

use super::DeliveryError;
use crate::redact::redact_url;

/// One SMTP server and how to talk to it, from `[smtp] url` and the credentials.
pub(super) struct SmtpRelay {
    host: String,
    port: u16,
    security: Security,
    /// Sent in EHLO: the URL's path if it has one, else this machine's name (as lettre).
    hello: ClientId,
    credentials: Option<(String, SecretString)>,
    /// Connecting only; the channel bounds the whole attempt.
    connect_timeout: Duration,
}

/// Host and port only: the credentials never print.
impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// How the session is protected.
enum Security {
    /// `smtp://`: a local relay.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, or no message at all.
    StartTls(TlsParameters),
    /// `smtp://…?tls=opportunistic`: STARTTLS when the server offers it.
    StartTlsIfOffered(TlsParameters),
    /// `smtps://`: TLS from the first byte.
    Tls(TlsParameters),
}

impl SmtpRelay {
    /// Reads an `smtp://` or `smtps://` URL; `username` and `password`, when given, take
    /// the place of credentials in the URL. Errors show the URL redacted.
    pub(super) fn from_url(
        url: &str,
        username: Option<&str>,
        password: Option<&SecretString>,
        connect_timeout: Duration,
    ) -> Result<SmtpRelay, String> {
        let shown = || format!("{:?}", redact_url(url));
        let parsed = Url::parse(url).map_err(|e| format!("{}: {e}", shown()))?;
        let host = match parsed.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => return Err(format!("{}: no SMTP host", shown())),
        };
        let tls_mode = parsed
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let tls = || TlsParameters::new(host.clone()).map_err(|e| format!("{}: {e}", shown()));
        let (security, default_port) = match (parsed.scheme(), tls_mode.as_deref()) {
            ("smtp", None) => (Security::Plain, SMTP_PORT),
            ("smtp", Some("required")) => (Security::StartTls(tls()?), SUBMISSION_PORT),
            ("smtp", Some("opportunistic")) => {
                (Security::StartTlsIfOffered(tls()?), SUBMISSION_PORT)
            }
            ("smtps", None) => (Security::Tls(tls()?), SUBMISSIONS_PORT),
            (scheme, mode) => {
                return Err(format!(
                    "{}: unknown scheme {scheme:?} or tls={mode:?} (smtp://, smtp://…?tls=required, smtp://…?tls=opportunistic or smtps://)",
                    shown()
                ));
            }
        };
        let path = parsed.path().trim_matches('/');
        let hello = if path.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(path.to_owned())
        };
        let credentials = match (username, password) {
            (Some(user), password) => {
                Some((user.to_owned(), password.cloned().unwrap_or_default()))
            }
            (None, _) if !parsed.username().is_empty() => Some((
                percent_decoded(parsed.username()),
                SecretString::from(percent_decoded(parsed.password().unwrap_or_default())),
            )),
            (None, _) => None,
        };
        Ok(SmtpRelay {
            port: parsed.port().unwrap_or(default_port),
            host,
            security,
            hello,
            credentials,
            connect_timeout,
        })
    }

    /// One session: connect, protect, authenticate, send one message, QUIT.
    pub(super) async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        let mut session = self.connect().await?;
        if let Some((user, password)) = &self.credentials {
            let credentials = Credentials::new(user.clone(), password.expose_secret().to_owned());
            session
                .auth(DEFAULT_MECHANISMS, &credentials)
                .await
                .map_err(smtp_failure)?;
        }
        let sent = session.send(envelope, message).await.map_err(smtp_failure);
        // The message is the server's once DATA is answered: a QUIT that fails changes
        // nothing, as in lettre's own transport.
        session.abort().await;
        sent.map(drop)
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let socket = self.open_socket().await?;
        let mut session = match &self.security {
            Security::Tls(tls) => {
                #[allow(deprecated)]
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(socket));
                stream
                    .upgrade_tls(tls.clone())
                    .await
                    .map_err(smtp_failure)?;
                let stream = Box::new(TlsSocket(stream.compat()));
                AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(socket), &self.hello).await,
        }
        .map_err(smtp_failure)?;
        match &self.security {
            Security::StartTls(tls) => session.starttls(tls.clone(), &self.hello).await,
            Security::StartTlsIfOffered(tls) if session.can_starttls() => {
                session.starttls(tls.clone(), &self.hello).await
            }
            _ => Ok(()),
        }
        .map_err(smtp_failure)?;
        Ok(session)
    }

    /// A connected socket with `TCP_NODELAY`: every write leaves at once.
    async fn open_socket(&self) -> Result<TcpStream, DeliveryError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let socket = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                return Err(DeliveryError::Transient(format!(
                    "smtp: cannot connect to {}:{}: {e}",
                    self.host, self.port
                )));
            }
            Err(_) => {
                return Err(DeliveryError::Transient(format!(
                    "smtp: no connection to {}:{} within {:?}",
                    self.host, self.port, self.connect_timeout
                )));
            }
        };
        socket
            .set_nodelay(true)
            .map_err(|e| DeliveryError::Transient(format!("smtp: cannot set TCP_NODELAY: {e}")))?;
        Ok(socket)
    }
}

/// 5xx: the server will not take it, however often we ask. Everything else (4xx,
/// connection lost, TLS) may pass.
fn smtp_failure(e: lettre::transport::smtp::Error) -> DeliveryError {
    if e.is_permanent() {
        DeliveryError::Permanent(format!("smtp: {e}"))
    } else {
        DeliveryError::Transient(format!("smtp: {e}"))
    }
}

/// `%XX` escapes of a URL's user or password, decoded (as lettre reads them).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if bytes[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TLS session lettre set up on our socket, handed back to lettre as a plain stream:
/// `connect_with_transport` takes tokio's traits, lettre's stream has the futures ones.
#[derive(Debug)]
struct TlsSocket(#[allow(deprecated)] Compat<AsyncNetworkStream>);

impl AsyncTokioStream for TlsSocket {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_percent_decoded() {
        assert_eq!(percent_decoded("p%40ss%2Fw0rd"), "p@ss/w0rd");
        assert_eq!(percent_decoded("plain"), "plain");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz"), "%zz");
    }

    #[test]
    fn the_url_says_host_port_and_protection() {
        let relay = |url: &str| SmtpRelay::from_url(url, None, None, Duration::from_secs(1));
        let cases = [
            ("smtp://relay.example.org", 25, "plain"),
            ("smtp://relay.example.org:2525", 2525, "plain"),
            ("smtp://relay.example.org?tls=required", 587, "starttls"),
            (
                "smtp://relay.example.org?tls=opportunistic",
                587,
                "starttls if offered",
            ),
            ("smtps://relay.example.org", 465, "tls"),
        ];
        for (url, port, security) in cases {
            let relay = relay(url).unwrap();
            let shown = match relay.security {
                Security::Plain => "plain",
                Security::StartTls(_) => "starttls",
                Security::StartTlsIfOffered(_) => "starttls if offered",
                Security::Tls(_) => "tls",
            };
            assert_eq!(
                (relay.host.as_str(), relay.port, shown),
                ("relay.example.org", port, security),
                "{url}"
            );
        }
        let with_user = relay("smtp://user:p%40ss@relay.example.org").unwrap();
        let (user, password) = with_user.credentials.unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("user", "p@ss"));

        let err = relay("smtp://user:hunter2@relay?tls=sometimes").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
