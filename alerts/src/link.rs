//! Signed acknowledgement links (docs/design.md#acknowledging-from-a-phone): a message
//! to a contact carries `{public_url}/ack/{token}`, and whoever opens it may
//! acknowledge the alerts it names as that contact, until it expires. The alert engine
//! makes links (through the renderer), the API verifies them; both hold the same key.
//!
//! A token is base64url (no padding) of
//!
//! ```text
//! expires (u32 BE, Unix seconds) | contact tag (4 bytes) | alert ids (LEB128, ascending, delta) | MAC (8 bytes)
//! ```
//!
//! MAC = HMAC-SHA256(key, "stockpile ack link v1" ‖ everything before the MAC), cut to
//! its first 8 bytes. 64 bits are plenty against guessing over HTTP (a forger would need
//! about 2⁶³ requests), and every byte saved is a character of SMS. The contact tag is
//! the first 4 bytes of SHA-256 of the contact's name: the verifier finds the contact
//! in the registry by it, and a tag that matches two contacts is refused. One alert
//! makes a token of 19 bytes, 26 characters.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

/// Shortest key accepted: the HMAC's own strength (SHA-256's output).
pub const MIN_KEY_BYTES: usize = 32;
/// Alerts one link names at most: a link is for one message, and no message of one
/// town to one contact lists more problems than this in practice. Bounds a token's
/// length (and what a forged one could make the verifier parse).
pub const MAX_LINK_ALERTS: usize = 64;
/// Path of the page under `public_url`.
pub const ACK_PATH: &str = "/ack/";
/// How long a link works when `[api] link_ttl` does not say: a week covers a long
/// weekend away from the phone, and an old link acknowledges only what is still open.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

const DOMAIN: &[u8] = b"stockpile ack link v1";
const MAC_BYTES: usize = 8;
const HEAD_BYTES: usize = 4 + 4;
/// The longest token a verifier decodes: every id at its longest varint.
const MAX_TOKEN_BYTES: usize = HEAD_BYTES + MAX_LINK_ALERTS * 10 + MAC_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key of `[api] link_key_file`. Never printed.
#[derive(Clone)]
pub struct LinkKey(SecretSlice<u8>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key is {found} bytes; at least {MIN_KEY_BYTES} are needed")]
pub struct KeyTooShort {
    pub found: usize,
}

impl LinkKey {
    /// The key as the file holds it, every byte of it.
    pub fn new(bytes: Vec<u8>) -> Result<LinkKey, KeyTooShort> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort { found: bytes.len() });
        }
        Ok(LinkKey(bytes.into()))
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(DOMAIN);
        mac
    }
}

/// What a link lets its holder do: acknowledge `alert_ids` as the contact of
/// `contact_tag`, until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckGrant {
    pub contact_tag: [u8; 4],
    pub alert_ids: Vec<i64>,
    pub expires: DateTime<Utc>,
}

impl AckGrant {
    /// Whether the grant was made for the contact whose [`contact_key`] is `name`.
    pub fn is_for(&self, name: &str) -> bool {
        contact_tag(name) == self.contact_tag
    }
}

/// Why a token is refused. Only `Expired` says anything about the grant, and only
/// because its MAC was good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is not one of ours (malformed)")]
    Malformed,
    #[error("the link is not one of ours (bad signature)")]
    Forged,
    #[error("the link expired at {}", .0.expires)]
    Expired(AckGrant),
}

/// Makes and verifies links: the key, where the page is, how long a link works.
#[derive(Debug, Clone)]
pub struct AckLinks {
    key: LinkKey,
    /// `public_url` without a trailing slash.
    base_url: String,
    ttl: Duration,
}

impl AckLinks {
    pub fn new(key: LinkKey, public_url: &str, ttl: Duration) -> AckLinks {
        AckLinks {
            key,
            base_url: public_url.trim_end_matches('/').to_owned(),
            ttl,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The link for `contact` to acknowledge `alert_ids` (the first
    /// [`MAX_LINK_ALERTS`] of them), valid for the configured time from `now`.
    pub fn url(&self, contact: &str, alert_ids: &[i64], now: DateTime<Utc>) -> String {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let grant = AckGrant {
            contact_tag: contact_tag(contact),
            alert_ids: alert_ids.to_vec(),
            expires: now
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        };
        format!("{}{ACK_PATH}{}", self.base_url, self.token(&grant))
    }

    /// The token of `grant`.
    pub fn token(&self, grant: &AckGrant) -> String {
        let mut payload = Vec::with_capacity(HEAD_BYTES + 3 * grant.alert_ids.len() + MAC_BYTES);
        let expires = u32::try_from(grant.expires.timestamp().max(0)).unwrap_or(u32::MAX);
        payload.extend_from_slice(&expires.to_be_bytes());
        payload.extend_from_slice(&grant.contact_tag);
        let mut ids: Vec<u64> = grant
            .alert_ids
            .iter()
            .filter_map(|&id| u64::try_from(id).ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_LINK_ALERTS);
        let mut previous = 0;
        for id in ids {
            write_varint(&mut payload, id - previous);
            previous = id;
        }
        let mut mac = self.key.mac();
        mac.update(&payload);
        payload.extend_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The grant of `token` if it is ours, whole and not expired at `now`. The MAC is
    /// checked (in constant time) before anything in the payload is believed.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AckGrant, LinkError> {
        if token.len() > MAX_TOKEN_BYTES * 4 / 3 + 4 {
            return Err(LinkError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| LinkError::Malformed)?;
        if bytes.len() < HEAD_BYTES + 1 + MAC_BYTES {
            return Err(LinkError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut mac = self.key.mac();
        mac.update(payload);
        mac.verify_truncated_left(tag)
            .map_err(|_| LinkError::Forged)?;
        let grant = decode_payload(payload).ok_or(LinkError::Malformed)?;
        if grant.expires <= now {
            return Err(LinkError::Expired(grant));
        }
        Ok(grant)
    }
}

/// The payload of a token whose MAC was good (so this only fails on a key shared with
/// a build that wrote something else).
fn decode_payload(payload: &[u8]) -> Option<AckGrant> {
    let expires = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?);
    let contact_tag: [u8; 4] = payload.get(4..8)?.try_into().ok()?;
    let mut rest = &payload[HEAD_BYTES..];
    let mut alert_ids = Vec::new();
    let mut previous: u64 = 0;
    while !rest.is_empty() {
        if alert_ids.len() == MAX_LINK_ALERTS {
            return None;
        }
        let delta = read_varint(&mut rest)?;
        previous = previous.checked_add(delta)?;
        alert_ids.push(i64::try_from(previous).ok()?);
    }
    Some(AckGrant {
        contact_tag,
        alert_ids,
        expires: DateTime::from_timestamp(i64::from(expires), 0)?,
    })
}

/// What a link names its contact by: the name with the addresses messages go to.
/// Names repeat in a city's registry (the demo's 490 contacts share 130 names: 赵磊
/// six times), so a tag of the name alone could not say which 赵磊 acknowledged; two
/// entries with the same name, email and phone are the same person.
pub fn contact_key(contact: &reserve::registry::Contact) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}",
        contact.name,
        contact.email.as_deref().unwrap_or(""),
        contact.phone.as_deref().unwrap_or("")
    )
}

/// The tag a link carries for the contact whose [`contact_key`] is `name`.
pub fn contact_tag(name: &str) -> [u8; 4] {
    let digest = Sha256::digest(name.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn links(key: &[u8]) -> AckLinks {
        AckLinks::new(
            LinkKey::new(key.to_vec()).unwrap(),
            "https://sp.example.org/",
            DEFAULT_LINK_TTL,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap()
    }

    fn token_of(url: &str) -> &str {
        url.strip_prefix("https://sp.example.org/ack/").unwrap()
    }

    #[test]
    fn a_link_grants_what_it_was_made_for_until_it_expires() {
        let links = links(&[7; 32]);
        let url = links.url("李伟", &[1_234_567, 12, 13, 12], now());
        let grant = links.verify(token_of(&url), now()).unwrap();
        assert_eq!(grant.alert_ids, vec![12, 13, 1_234_567]);
        assert!(grant.is_for("李伟") && !grant.is_for("Li Wei"));
        assert_eq!(grant.expires, now() + chrono::Duration::days(7));
        let later = now() + chrono::Duration::days(7);
        assert_eq!(
            links.verify(token_of(&url), later),
            Err(LinkError::Expired(grant))
        );
    }

    #[test]
    fn one_alert_makes_a_short_link() {
        let url = links(&[7; 32]).url("Li Wei", &[123_456], now());
        assert_eq!(token_of(&url).len(), 26, "{url}");
    }

    #[test]
    fn tampered_truncated_and_foreign_tokens_are_refused() {
        let ours = links(&[7; 32]);
        let theirs = links(&[8; 32]);
        let token = token_of(&ours.url("Li Wei", &[42], now())).to_owned();
        let mut flipped = token.clone().into_bytes();
        // Flip a character of the payload (the alert id).
        flipped[12] = if flipped[12] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let long = ours.url("Li Wei", &[42, 1_000_000], now());
        let mut bytes = URL_SAFE_NO_PAD.decode(token_of(&long)).unwrap();
        bytes.pop();
        let truncated = URL_SAFE_NO_PAD.encode(bytes);
        let cases: &[(&str, LinkError)] = &[
            (&flipped, LinkError::Forged),
            (&truncated, LinkError::Forged),
            (&token[..10], LinkError::Malformed),
            ("not base64!", LinkError::Malformed),
            ("", LinkError::Malformed),
            (&"A".repeat(4000), LinkError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(ours.verify(token, now()).as_ref(), Err(want), "{token}");
        }
        assert_eq!(theirs.verify(&token, now()), Err(LinkError::Forged));
    }

    #[test]
    fn keys_shorter_than_the_hash_are_refused_and_never_printed() {
        assert_eq!(
            LinkKey::new(vec![1; 31]).unwrap_err(),
            KeyTooShort { found: 31 }
        );
        let key = LinkKey::new(b"super-secret-key-material-0123456789".to_vec()).unwrap();
        let printed = format!(
            "{key:?} {:?}",
            AckLinks::new(key.clone(), "https://x", DEFAULT_LINK_TTL)
        );
        assert!(!printed.contains("super-secret"), "{printed}");
    }

    #[test]
    fn varints_round_trip() {
        for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            let mut input = &out[..];
            assert_eq!(read_varint(&mut input), Some(value));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn namesakes_get_links_of_their_own() {
        use reserve::registry::{Contact, ContactScope};
        let zhao = |email: &str| Contact {
            name: "赵磊".into(),
            email: Some(email.into()),
            phone: None,
            webhook: None,
            lang: reserve::registry::Lang::Zh,
            scope: ContactScope::City,
            channels: Vec::new(),
        };
        let (first, second) = (zhao("lei.zhao@example.org"), zhao("lei.zhao2@example.org"));
        let links = links(&[7; 32]);
        let url = links.url(&contact_key(&first), &[1], now());
        let grant = links
            .verify(url.rsplit('/').next().unwrap(), now())
            .unwrap();
        assert!(grant.is_for(&contact_key(&first)));
        assert!(!grant.is_for(&contact_key(&second)));
        assert!(!grant.is_for("赵磊"));
    }
}
