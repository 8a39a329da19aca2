//! Email through SMTP with lettre: plain for a local relay (`smtp://`), STARTTLS
//! (`smtp://…?tls=required`) or TLS from the first byte (`smtps://`), with optional
//! authentication. Text and HTML bodies as `multipart/alternative`.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Channel, ChannelError, ChannelKind, DeliveryError, Notification};
use crate::config::SmtpConfig;

pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The whole attempt, connect to QUIT: lettre's own timeout is per socket operation.
    timeout: Duration,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    pub fn new(config: &SmtpConfig) -> Result<EmailChannel, ChannelError> {
        let url = config.url.as_str();
        if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
            return Err(ChannelError::SmtpUrl(format!(
                "expected smtp://host:port, smtp://host:port?tls=required or smtps://host:port, got {url:?}"
            )));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| ChannelError::SmtpUrl(format!("{url:?}: {e}")))?
            .timeout(Some(config.timeout));
        if let Some(user) = &config.username {
            let password = config.password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| ChannelError::SmtpFrom(format!("{:?}: {e}", config.from)))?;
        Ok(EmailChannel {
            transport: builder.build(),
            from,
            timeout: config.timeout * 2,
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, DeliveryError> {
        let address: Address = n.recipient.parse().map_err(|e| {
            DeliveryError::Permanent(format!("bad email address {:?}: {e}", n.recipient))
        })?;
        let to = Mailbox::new(Some(n.contact.clone()), address);
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone());
        let built = match &n.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                n.body.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(n.body.clone())),
        };
        built.map_err(|e| DeliveryError::Permanent(format!("cannot build the message: {e}")))
    }
}

impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let message = self.message(n)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(DeliveryError::Transient(format!(
                "no answer from the SMTP server within {:?}",
                self.timeout
            ))),
            Ok(Ok(_)) => Ok(()),
            // 5xx: the server will not take it, however often we ask. Everything else
            // (4xx, connection refused, TLS, timeouts) may pass.
            Ok(Err(e)) if e.is_permanent() => Err(DeliveryError::Permanent(format!("smtp: {e}"))),
            Ok(Err(e)) => Err(DeliveryError::Transient(format!("smtp: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_checked_when_the_channel_is_built() {
        let ok = [
            "smtp://127.0.0.1:2525",
            "smtp://relay.example.org:587?tls=required",
            "smtps://smtp.example.org:465",
            "smtp://user:pass@relay.example.org",
        ];
        for url in ok {
            assert!(
                EmailChannel::new(&SmtpConfig::new(url, "Stockpile <alerts@example.org>")).is_ok(),
                "{url}"
            );
        }
        let bad = [
            ("http://relay:25", "expected smtp://"),
            ("smtp://relay:25?tls=sometimes", "smtp.url"),
            ("smtp://", "smtp.url"),
        ];
        for (url, want) in bad {
            let err = EmailChannel::new(&SmtpConfig::new(url, "alerts@example.org")).unwrap_err();
            assert!(err.to_string().contains(want), "{url}: {err}");
        }
        let err =
            EmailChannel::new(&SmtpConfig::new("smtp://relay:25", "not an address")).unwrap_err();
        assert!(err.to_string().starts_with("smtp.from"), "{err}");
    }
}
