//! Email into a directory (`smtp.url = "file:///dir"`): each message lands as an `.eml`
//! file that a mail relay can pick up and forward as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alerts::{Channel, DeliveryError, EmailChannel, Notification, NotificationFilter, SmtpConfig};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use testkit::{ReceivedMail, SmtpServer};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(10);
const FROM: &str = "Stockpile <alerts@example.org>";

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// What a relay watching the directory does with a file: sends it on unchanged. The
/// SMTP server parses what it gets, so this also shows the file is a well-formed mail.
async fn relay(eml: &Path, to: &str) -> ReceivedMail {
    let smtp = SmtpServer::start();
    let raw = std::fs::read(eml).expect("read the .eml file");
    let envelope = Envelope::new(
        Some("alerts@example.org".parse().unwrap()),
        vec![to.parse().unwrap()],
    )
    .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url())
        .unwrap()
        .build()
        .send_raw(&envelope, &raw)
        .await
        .expect("the relay forwards the file");
    smtp.wait_for(1, WAIT).remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_below_target_writes_its_officer_a_mail_file() {
    let world = World::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mail");
    let url = format!("file://{}", dir.display());
    world.stock("js-wh1", liters(5.0));
    let service = Service::start(&world, quick_config(), Some(&url), None).await;
    world.stock("js-wh1", liters(2.0));

    let handle = service.handle.clone();
    wait_until("the notification is sent", WAIT, async || {
        handle.counts().await.unwrap().notifications_sent == 1
    })
    .await;
    let sent = &handle
        .list_notifications(&NotificationFilter::default())
        .await
        .unwrap()[0];
    assert_eq!(
        (sent.channel.as_str(), sent.state.as_str(), sent.attempts),
        ("email", "sent", 1)
    );
    let files = eml_files(&dir);
    assert_eq!(files.len(), 1, "one file per message: {files:?}");

    let mail = relay(&files[0], OFFICER).await;
    assert_eq!(mail.subject, sent.subject);
    assert!(
        mail.subject
            .starts_with("[Stockpile] 严重：景山街道 饮用水仅剩 2 天"),
        "{}",
        mail.subject
    );
    let to = mail.header("To").expect("a To header");
    assert!(
        to.contains("Li Wei") && to.contains("<li.wei@example.org>"),
        "{to}"
    );
    assert!(
        mail.header("From")
            .unwrap()
            .contains("<alerts@example.org>")
    );
    assert!(mail.body_text.contains("景山街道"), "{}", mail.body_text);
    assert!(mail.body_html.is_some(), "both bodies");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_directory_that_went_away_is_a_failure_to_retry() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mail");
    let channel =
        EmailChannel::new(&SmtpConfig::new(format!("file://{}", dir.display()), FROM)).unwrap();
    let message = Notification {
        id: 1,
        contact: "Li Wei".into(),
        recipient: OFFICER.into(),
        subject: "[Stockpile] Critical: Jingshan has 2 days of drinking water".into(),
        body: "text body".into(),
        html: None,
    };
    std::fs::remove_dir(&dir).unwrap();
    let outcome = channel.send(&message).await;
    assert!(
        matches!(&outcome, Err(DeliveryError::Transient(e)) if e.contains(&dir.display().to_string())),
        "{outcome:?}"
    );

    std::fs::create_dir(&dir).unwrap();
    channel
        .send(&message)
        .await
        .expect("written once the directory is back");
    let files = eml_files(&dir);
    assert_eq!(files.len(), 1);
    let mail = relay(&files[0], OFFICER).await;
    assert_eq!(mail.subject, message.subject);
    assert_eq!(mail.body_text.trim(), "text body");
}
