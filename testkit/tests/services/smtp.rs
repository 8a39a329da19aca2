use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::SmtpServer;

use crate::port_is_open;

/// A minimal SMTP client: one message, optional AUTH PLAIN. Returns the first reply that
/// was not a success, as `Err("451 ...")`.
fn send_mail(
    port: u16,
    auth_plain: Option<&str>,
    from: &str,
    to: &[&str],
    message: &str,
) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|err| err.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let mut expect = |command: Option<String>, code: &str| -> Result<(), String> {
        if let Some(command) = command {
            writer
                .write_all(command.as_bytes())
                .map_err(|err| err.to_string())?;
        }
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|err| err.to_string())?;
            reply.push_str(&line);
            // "250-..." continues a multi-line reply, "250 ..." ends it.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        if reply.starts_with(code) {
            Ok(())
        } else {
            Err(reply.trim().to_owned())
        }
    };
    expect(None, "220")?;
    expect(Some("EHLO test.local\r\n".to_owned()), "250")?;
    if let Some(credentials) = auth_plain {
        expect(Some(format!("AUTH PLAIN {credentials}\r\n")), "235")?;
    }
    expect(Some(format!("MAIL FROM:<{from}>\r\n")), "250")?;
    for rcpt in to {
        expect(Some(format!("RCPT TO:<{rcpt}>\r\n")), "250")?;
    }
    expect(Some("DATA\r\n".to_owned()), "354")?;
    let mut data = String::new();
    for line in message.lines() {
        // Dot-stuffing: a line starting with "." gets another.
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    expect(Some(data), "250")?;
    expect(Some("QUIT\r\n".to_owned()), "221")
}

const PLAIN_ALERT: &str = "From: Stockpile <alerts@example.org>\n\
To: li.wei@example.org\n\
Subject: jingshan below target\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
Drinking water: 2.5 days left (target 3).\n\
.A line that starts with a dot.\n";

/// UTF-8 subject as an encoded word, base64 body: what lettre sends for Chinese text.
const ENCODED_ALERT: &str = "From: =?UTF-8?B?5bqU5oCl?= <alerts@example.org>\n\
To: li.wei@example.org\n\
Subject: =?UTF-8?B?W+S4pemHjV0g5pmv5bGx6KGX6YGTIOWCqOWkh+S9juS6juebruaghw==?=\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: base64\n\
\n\
5pmv5bGx6KGX6YGT77ya6aWu55So5rC05LuF5YmpIDIuNSDlpKk=\n";

#[test]
fn mail_is_recorded_with_its_envelope_and_decoded_subject_and_body() {
    let smtp = SmtpServer::start();
    assert_eq!(smtp.url(), format!("smtp://127.0.0.1:{}", smtp.port()));

    struct Case {
        to: &'static [&'static str],
        message: &'static str,
        subject: &'static str,
        body_text: &'static str,
    }
    let cases = [
        Case {
            to: &["li.wei@example.org", "duty@example.org"],
            message: PLAIN_ALERT,
            subject: "jingshan below target",
            body_text: "Drinking water: 2.5 days left (target 3).\r\n.A line that starts with a dot.\r\n",
        },
        Case {
            to: &["li.wei@example.org"],
            message: ENCODED_ALERT,
            subject: "[严重] 景山街道 储备低于目标",
            body_text: "景山街道：饮用水仅剩 2.5 天",
        },
    ];
    for case in &cases {
        send_mail(
            smtp.port(),
            None,
            "alerts@example.org",
            case.to,
            case.message,
        )
        .expect("mail accepted");
    }

    let mails = smtp.wait_for(cases.len(), Duration::from_secs(10));
    assert_eq!(mails.len(), cases.len());
    for (mail, case) in mails.iter().zip(&cases) {
        assert_eq!(mail.from, "alerts@example.org");
        assert_eq!(mail.to, case.to);
        assert_eq!(mail.subject, case.subject);
        assert_eq!(mail.body_text, case.body_text);
    }
    assert_eq!(
        mails[1].header("from").as_deref(),
        Some("=?UTF-8?B?5bqU5oCl?= <alerts@example.org>")
    );
    assert!(String::from_utf8_lossy(&mails[0].raw).contains("Subject: jingshan below target"));
}

#[test]
fn stopped_server_refuses_connections_and_start_again_keeps_port_and_mail() {
    let mut smtp = SmtpServer::start();
    let port = smtp.port();
    send_mail(
        port,
        None,
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    )
    .expect("first mail accepted");

    smtp.stop();
    assert!(!port_is_open(port), "port {port} still open after stop");
    assert!(
        send_mail(
            port,
            None,
            "alerts@example.org",
            &["a@example.org"],
            PLAIN_ALERT
        )
        .is_err()
    );

    smtp.start_again();
    assert_eq!(smtp.port(), port);
    send_mail(
        port,
        None,
        "alerts@example.org",
        &["b@example.org"],
        PLAIN_ALERT,
    )
    .expect("second mail accepted");

    let recipients: Vec<Vec<String>> = smtp
        .wait_for(2, Duration::from_secs(10))
        .into_iter()
        .map(|mail| mail.to)
        .collect();
    assert_eq!(recipients, [["a@example.org"], ["b@example.org"]]);
}

#[test]
fn refusing_server_returns_its_reply_until_told_to_accept() {
    let smtp = SmtpServer::builder()
        .reject_data("451 4.3.0 try again later")
        .start();
    let refused = send_mail(
        smtp.port(),
        None,
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    );
    assert_eq!(refused, Err("451 4.3.0 try again later".to_owned()));

    smtp.set_reject(Some("554 5.7.1 rejected"));
    let refused = send_mail(
        smtp.port(),
        None,
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    );
    assert_eq!(refused, Err("554 5.7.1 rejected".to_owned()));

    smtp.set_reject(None);
    send_mail(
        smtp.port(),
        None,
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    )
    .expect("accepted again");
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).len(), 1);
    assert_eq!(
        smtp.messages().len(),
        1,
        "refused messages must not be recorded"
    );
}

#[test]
fn auth_is_required_when_configured() {
    let smtp = SmtpServer::builder().auth("alerts", "mail-pw").start();
    // base64("\0alerts\0mail-pw") and base64("\0alerts\0wrong")
    let good = "AGFsZXJ0cwBtYWlsLXB3";
    let bad = "AGFsZXJ0cwB3cm9uZw==";

    let anonymous = send_mail(
        smtp.port(),
        None,
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    );
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|reply| reply.starts_with("530")),
        "{anonymous:?}"
    );
    let wrong = send_mail(
        smtp.port(),
        Some(bad),
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    );
    assert!(
        wrong.as_ref().is_err_and(|reply| reply.starts_with("535")),
        "{wrong:?}"
    );
    send_mail(
        smtp.port(),
        Some(good),
        "alerts@example.org",
        &["a@example.org"],
        PLAIN_ALERT,
    )
    .expect("authenticated mail accepted");

    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).len(), 1);
}
