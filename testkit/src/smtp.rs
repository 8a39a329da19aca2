//! A real SMTP server (Python's aiosmtpd, as a separate process) that records every
//! message it accepts, for email-channel tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{self, ServiceProcess};

/// The recorder script, embedded so tests need nothing from this source tree at run time.
const RECORDER_SCRIPT: &str = include_str!("smtp_recorder.py");

/// Overrides the interpreter probe; must name a Python 3 that can `import aiosmtpd`.
const PYTHON_ENV: &str = "STOCKPILE_TEST_PYTHON";

/// Tried in order when `STOCKPILE_TEST_PYTHON` is unset. Debian's own interpreter comes
/// first: python3-aiosmtpd installs there, while a pyenv `python3` may shadow it on PATH.
const PYTHON_CANDIDATES: &[&str] = &["/usr/bin/python3", "python3"];

/// How to configure an [`SmtpServer`] before starting it. Get one from [`SmtpServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct SmtpServerBuilder {
    auth: Option<(String, String)>,
    reject: Option<String>,
}

impl SmtpServerBuilder {
    /// Require `AUTH PLAIN`/`LOGIN` with this user and password (over plain SMTP,
    /// which aiosmtpd otherwise refuses). Unauthenticated mail is refused with 530.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Refuse every message with this reply (e.g. `"451 4.3.0 try again later"` or
    /// `"550 5.1.1 mailbox unavailable"`) until [`SmtpServer::set_reject`] says otherwise.
    pub fn reject_data(mut self, reply: &str) -> Self {
        self.reject = Some(reply.to_owned());
        self
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(self) -> SmtpServer {
        let python = python_with_aiosmtpd();
        for attempt in 1..=process::START_ATTEMPTS {
            let port = crate::free_port();
            let mut server = ServiceProcess::new("smtp", python.clone());
            let dir = server.dir().to_path_buf();
            let maildir = dir.join("mail");
            let reject_file = dir.join("reject");
            let script = dir.join("smtp_recorder.py");
            fs::create_dir_all(&maildir)
                .unwrap_or_else(|err| panic!("cannot create {}: {err}", maildir.display()));
            write_file(&script, RECORDER_SCRIPT);
            if let Some(reply) = &self.reject {
                write_file(&reject_file, reply);
            }
            let mut args = vec![
                // Unbuffered, so the log shows what happened up to a crash.
                "-u".to_owned(),
                script.display().to_string(),
                "--port".to_owned(),
                port.to_string(),
                "--dir".to_owned(),
                maildir.display().to_string(),
                "--reject-file".to_owned(),
                reject_file.display().to_string(),
            ];
            if let Some((user, password)) = &self.auth {
                args.extend([
                    "--user".to_owned(),
                    user.clone(),
                    "--password".to_owned(),
                    password.clone(),
                ]);
            }
            server.set_args(args);
            server.pipe_stdin();
            server.spawn();
            match server.wait_ready(|| process::accepts_connections(port)) {
                Ok(()) => {
                    return SmtpServer {
                        port,
                        maildir,
                        reject_file,
                        process: server,
                    };
                }
                Err(why)
                    if attempt < process::START_ATTEMPTS
                        && process::lost_port_race(&server, &why) => {}
                Err(why) => server.fail(&why, &format!("while starting on port {port}")),
            }
        }
        unreachable!("the last start attempt either returns or panics")
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}

/// The interpreter that runs the recorder, probed once per test process.
fn python_with_aiosmtpd() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(find_python)
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn find_python() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        return if imports_aiosmtpd(&python) {
            Ok(python)
        } else {
            Err(format!(
                "{PYTHON_ENV}={} cannot import aiosmtpd (pip install aiosmtpd for it, or unset {PYTHON_ENV})",
                python.display()
            ))
        };
    }
    PYTHON_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|python| imports_aiosmtpd(python))
        .ok_or_else(|| {
            format!(
                "no python3 with aiosmtpd found (tried {}) (apt-get install python3-aiosmtpd); \
                 scripts/test installs it, or set {PYTHON_ENV}",
                PYTHON_CANDIDATES.join(", ")
            )
        })
}

fn imports_aiosmtpd(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// One message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The decoded `Subject` header (encoded words such as `=?UTF-8?B?...?=` decoded);
    /// empty when there is none.
    pub subject: String,
    /// The first text part, decoded (base64, quoted-printable, charset); derived from
    /// the HTML part when there is no text part; empty when there is neither.
    pub body_text: String,
    /// The first HTML part, decoded, if any.
    pub body_html: Option<String>,
    /// The message exactly as received after `DATA`.
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    fn parse(from: String, to: Vec<String>, raw: Vec<u8>) -> Self {
        let parsed = mail_parser::MessageParser::default().parse(&raw);
        let subject = parsed
            .as_ref()
            .and_then(|message| message.subject())
            .unwrap_or_default()
            .to_owned();
        let body_text = parsed
            .as_ref()
            .and_then(|message| message.body_text(0))
            .map(|text| text.into_owned())
            .unwrap_or_default();
        let body_html = parsed
            .as_ref()
            .and_then(|message| message.body_html(0))
            .map(|html| html.into_owned());
        Self {
            from,
            to,
            subject,
            body_text,
            body_html,
            raw,
        }
    }

    /// A header's value as written in the message, unfolded and trimmed (not decoded:
    /// `From: =?UTF-8?B?...?= <alerts@example.org>` stays as is). Case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = mail_parser::MessageParser::default().parse(&self.raw)?;
        let value = message.header_raw(name.to_owned())?;
        Some(
            value
                .replace("\r\n", "")
                .replace('\n', "")
                .trim()
                .to_owned(),
        )
    }
}

/// A running SMTP server on 127.0.0.1:PORT that accepts every message (unless told to
/// refuse) and keeps it in its temp dir. Plain SMTP, no TLS. Dropping it stops the
/// server and deletes the dir.
#[derive(Debug)]
pub struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    reject_file: PathBuf,
    process: ServiceProcess,
}

impl SmtpServer {
    /// A server without authentication that accepts every message.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> SmtpServerBuilder {
        SmtpServerBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, in arrival order, across restarts.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut envelopes: Vec<PathBuf> = fs::read_dir(&self.maildir)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", self.maildir.display()))
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        envelopes.sort();
        envelopes.iter().map(|path| read_mail(path)).collect()
    }

    /// Wait until at least `count` messages have arrived and return them all; panic
    /// after `timeout` saying how many did arrive.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected {count} mail(s) within {timeout:?}, got {}: {:?}\nlast lines of the SMTP server's log:\n{}",
                    messages.len(),
                    messages
                        .iter()
                        .map(|mail| &mail.subject)
                        .collect::<Vec<_>>(),
                    self.process.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `Some(reply)`: refuse every following message with that reply (e.g.
    /// `"451 4.3.0 try again later"`); `None`: accept again. Takes effect at once.
    pub fn set_reject(&self, reply: Option<&str>) {
        match reply {
            Some(reply) => write_file(&self.reject_file, reply),
            None => {
                if self.reject_file.exists() {
                    fs::remove_file(&self.reject_file).unwrap_or_else(|err| {
                        panic!("cannot remove {}: {err}", self.reject_file.display())
                    });
                }
            }
        }
    }

    /// Stop the server (connections are refused until [`SmtpServer::start_again`]).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Kill the server at once (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start the server again on the same port, keeping the messages received so far.
    pub fn start_again(&mut self) {
        self.process.stop();
        self.process.spawn();
        let port = self.port;
        if let Err(why) = self
            .process
            .wait_ready(|| process::accepts_connections(port))
        {
            self.process
                .fail(&why, &format!("while starting again on port {port}"));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The server's log (all runs): one line per accepted or refused message.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The temp dir holding mail/ (NNNNNN.eml and NNNNNN.json per message) and smtp.log.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }
}

fn read_mail(envelope_path: &Path) -> ReceivedMail {
    let envelope_text = fs::read_to_string(envelope_path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", envelope_path.display()));
    let envelope: serde_json::Value = serde_json::from_str(&envelope_text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", envelope_path.display()));
    let from = envelope["mail_from"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let to = envelope["rcpt_tos"]
        .as_array()
        .map(|rcpts| {
            rcpts
                .iter()
                .filter_map(|rcpt| rcpt.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let raw_path = envelope_path.with_extension("eml");
    let raw = fs::read(&raw_path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", raw_path.display()));
    ReceivedMail::parse(from, to, raw)
}
