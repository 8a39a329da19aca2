//! Rejected messages as the reject log keeps them: bounded in number and in size, so a
//! gateway flooding garbage cannot grow the file without limit.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::row::{Columns, FromRow, Millis, RowError};

/// Bytes of a rejected payload kept, enough to see what a gateway sent.
pub const MAX_REJECT_PAYLOAD: usize = 1024;
/// Bytes of a rejected message's topic kept (ours are well under this).
pub const MAX_REJECT_TOPIC: usize = 256;
/// Bytes of a rejection's detail kept.
pub const MAX_REJECT_DETAIL: usize = 1024;

/// A rejected message as the reject log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectRecord {
    /// Received at, by our clock.
    pub at: DateTime<Utc>,
    pub topic: String,
    /// Stable snake_case id (`unknown_town`, `not_json`, …): what counts are kept by.
    pub reason: String,
    pub detail: String,
    /// The payload's first [`MAX_REJECT_PAYLOAD`] bytes as text, cut on a character
    /// boundary, invalid UTF-8 replaced by U+FFFD.
    pub payload: String,
    /// Bytes received: more than `payload` holds when it was cut.
    pub payload_len: usize,
}

impl RejectRecord {
    /// Builds a record from a raw MQTT payload, keeping only its head: the payload may be
    /// the size limit's worth of bytes, and only [`MAX_REJECT_PAYLOAD`] of them are kept.
    pub fn new(
        at: DateTime<Utc>,
        topic: &str,
        reason: &str,
        detail: &str,
        payload: &[u8],
    ) -> RejectRecord {
        RejectRecord {
            at,
            topic: head(topic.as_bytes(), MAX_REJECT_TOPIC),
            reason: reason.to_owned(),
            detail: head(detail.as_bytes(), MAX_REJECT_DETAIL),
            payload: head(payload, MAX_REJECT_PAYLOAD),
            payload_len: payload.len(),
        }
    }
}

impl FromRow for RejectRecord {
    const TABLE: &'static str = "rejects";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(RejectRecord {
            at: row.get::<Millis>("at")?.0,
            topic: row.get("topic")?,
            reason: row.get("reason")?,
            detail: row.get("detail")?,
            payload: row.get("payload")?,
            payload_len: {
                let n: i64 = row.get("payload_len")?;
                usize::try_from(n)
                    .map_err(|_| RowError::Corrupt(format!("bad payload length {n}")))?
            },
        })
    }
}

/// The longest prefix of `bytes`, decoded lossily, that fits in `max` bytes of UTF-8
/// without splitting a character. Reads only about `max` bytes of the input.
pub(super) fn head(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(max.min(bytes.len()));
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let room = max - out.len();
        if valid.len() > room {
            let mut cut = room;
            while !valid.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&valid[..cut]);
            return out;
        }
        out.push_str(valid);
        if !chunk.invalid().is_empty() {
            if max - out.len() < char::REPLACEMENT_CHARACTER.len_utf8() {
                return out;
            }
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::head;

    #[test]
    fn head_keeps_whole_characters_and_replaces_invalid_bytes() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"hello", 10, "hello"),
            (b"hello", 3, "hel"),
            (b"", 3, ""),
            ("水位".as_bytes(), 4, "水"), // 3 + 3 bytes: the second does not fit
            ("水位".as_bytes(), 6, "水位"),
            (b"ab\xffcd", 10, "ab\u{fffd}cd"),
            (b"ab\xffcd", 4, "ab"), // the replacement takes 3 bytes and would not fit
            (b"\xe6\xb0", 10, "\u{fffd}"), // a character cut short by the sender
        ];
        for &(input, max, want) in cases {
            assert_eq!(head(input, max), want, "input {input:?}, max {max}");
        }
    }
}
