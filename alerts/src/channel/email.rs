//! Email through SMTP with lettre: plain for a local relay (`smtp://`), STARTTLS
//! (`smtp://…?tls=required`) or TLS from the first byte (`smtps://`), with optional
//! authentication. Text and HTML bodies as `multipart/alternative`. The session runs on
//! a socket of our own with `TCP_NODELAY` (`smtp_relay`).
//!
//! Or into a directory (`file:///var/spool/stockpile-mail`): each message is written
//! there as an `.eml` file instead of being sent, for a mail relay's drop directory and
//! for the demo's mailbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

use super::smtp_relay::SmtpRelay;
use super::{Channel, ChannelError, ChannelKind, DeliveryError, Notification};
use crate::config::SmtpConfig;

pub struct EmailChannel {
    transport: Transport,
    from: Mailbox,
    /// The whole attempt, connect to QUIT: the relay's own timeout is for connecting.
    timeout: Duration,
}

/// A file sent with an email (the stress test's XLSX report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// A MIME type, e.g. `application/vnd.openxmlformats-officedocument.spreadsheetml.sheet`.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Where messages go.
enum Transport {
    Smtp(SmtpRelay),
    /// One `<uuid>.eml` file per message in `dir`.
    Directory {
        dir: PathBuf,
        files: AsyncFileTransport<Tokio1Executor>,
    },
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("EmailChannel");
        debug.field("from", &self.from.to_string());
        // Not the SMTP transport: its URL may hold a password.
        if let Some(dir) = self.mail_dir() {
            debug.field("dir", &dir);
        }
        debug.finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Builds the channel `config.url` describes. A `file://` directory is created if
    /// it does not exist, so a path that cannot be written fails here, at start.
    pub fn new(config: &SmtpConfig) -> Result<EmailChannel, ChannelError> {
        let url = config.url.as_str();
        let transport = if let Some(path) = url.strip_prefix("file://") {
            let dir = mail_dir(url, path)?;
            Transport::Directory {
                files: AsyncFileTransport::new(&dir),
                dir,
            }
        } else if url.starts_with("smtp://") || url.starts_with("smtps://") {
            Transport::Smtp(
                SmtpRelay::from_url(
                    url,
                    config.username.as_deref(),
                    config.password.as_ref(),
                    config.timeout,
                )
                .map_err(ChannelError::SmtpUrl)?,
            )
        } else {
            return Err(ChannelError::SmtpUrl(format!(
                "expected smtp://host:port, smtp://host:port?tls=required, smtps://host:port or file:///directory, got {url:?}"
            )));
        };
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| ChannelError::SmtpFrom(format!("{:?}: {e}", config.from)))?;
        Ok(EmailChannel {
            transport,
            from,
            timeout: config.timeout * 2,
        })
    }

    /// The directory messages are written to (a `file://` URL); `None` when they go
    /// through SMTP.
    pub fn mail_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Directory { dir, .. } => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// Sends `n` with `attachment` now, outside the outbox (whose rows hold text only):
    /// the caller keeps what it needs to try again.
    pub async fn send_with_attachment(
        &self,
        n: &Notification,
        attachment: &Attachment,
    ) -> Result<(), DeliveryError> {
        let message = self.message(n, Some(attachment))?;
        self.deliver(message).await
    }

    fn message(
        &self,
        n: &Notification,
        attachment: Option<&Attachment>,
    ) -> Result<Message, DeliveryError> {
        let address: Address = n.recipient.parse().map_err(|e| {
            DeliveryError::Permanent(format!("bad email address {:?}: {e}", n.recipient))
        })?;
        let to = Mailbox::new(Some(n.contact.clone()), address);
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone());
        let built = match (&n.html, attachment) {
            (Some(html), None) => builder.multipart(MultiPart::alternative_plain_html(
                n.body.clone(),
                html.clone(),
            )),
            (None, None) => builder.singlepart(SinglePart::plain(n.body.clone())),
            (html, Some(file)) => {
                let content_type = ContentType::parse(&file.content_type).map_err(|e| {
                    DeliveryError::Permanent(format!(
                        "bad content type {:?}: {e}",
                        file.content_type
                    ))
                })?;
                let body = match html {
                    Some(html) => MultiPart::alternative_plain_html(n.body.clone(), html.clone()),
                    None => MultiPart::mixed().singlepart(SinglePart::plain(n.body.clone())),
                };
                let part = lettre::message::Attachment::new(file.filename.clone())
                    .body(file.bytes.clone(), content_type);
                builder.multipart(MultiPart::mixed().multipart(body).singlepart(part))
            }
        };
        built.map_err(|e| DeliveryError::Permanent(format!("cannot build the message: {e}")))
    }

    async fn send_smtp(&self, smtp: &SmtpRelay, message: Message) -> Result<(), DeliveryError> {
        let bytes = message.formatted();
        match tokio::time::timeout(self.timeout, smtp.send(message.envelope(), &bytes)).await {
            Err(_) => Err(DeliveryError::Transient(format!(
                "no answer from the SMTP server within {:?}",
                self.timeout
            ))),
            Ok(outcome) => outcome,
        }
    }
}

/// The directory of `file:///dir` (`path` is what follows `file://`), created if
/// missing. Only local absolute paths: `file://host/…` names another machine. Taken
/// literally, without percent-decoding.
fn mail_dir(url: &str, path: &str) -> Result<PathBuf, ChannelError> {
    if !path.starts_with('/') {
        return Err(ChannelError::SmtpUrl(format!(
            "expected file:///absolute/directory, got {url:?}"
        )));
    }
    let dir = PathBuf::from(path);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ChannelError::SmtpUrl(format!("{url:?}: cannot create the directory: {e}")))?;
    Ok(dir)
}

impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let message = self.message(n, None)?;
        self.deliver(message).await
    }
}

impl EmailChannel {
    async fn deliver(&self, message: Message) -> Result<(), DeliveryError> {
        match &self.transport {
            Transport::Smtp(smtp) => self.send_smtp(smtp, message).await,
            // A full disk or a directory gone may be put right while the outbox retries.
            Transport::Directory { dir, files } => {
                files.send(message).await.map(drop).map_err(|e| {
                    DeliveryError::Transient(format!("cannot write to {}: {e}", dir.display()))
                })
            }
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

    #[test]
    fn a_file_url_names_a_local_directory_made_at_start() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool").join("mail");
        let url = format!("file://{}", dir.display());
        let channel = EmailChannel::new(&SmtpConfig::new(url, "alerts@example.org")).unwrap();
        assert_eq!(channel.mail_dir(), Some(dir.as_path()));
        assert!(dir.is_dir());

        for url in ["file://relay.example.org/spool", "file://spool/mail"] {
            let err = EmailChannel::new(&SmtpConfig::new(url, "alerts@example.org")).unwrap_err();
            assert!(err.to_string().contains("file:///absolute"), "{url}: {err}");
        }
        let smtp = EmailChannel::new(&SmtpConfig::new("smtp://127.0.0.1:2525", "a@example.org"));
        assert_eq!(smtp.unwrap().mail_dir(), None);
    }
}
