//! The alerting service against real parts: an SMTP server process, HTTP receivers for
//! the SMS gateway and webhooks, a real SQLite file, and (end to end) a real Mosquitto
//! with ingest in front. One binary for all scenarios.

mod channels;
mod channels_file;
mod count_due;
mod digests;
mod drills;
mod end_to_end;
mod helpers;
mod scenarios;
mod transfers;
mod trust;
mod vulnerable_messages;
