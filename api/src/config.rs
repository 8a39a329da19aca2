//! `[api]`: the HTTP API, the wall board and the acknowledgement links
//! (docs/design.md#cli-and-configuration). The `server` crate deserialises the section
//! straight into [`ApiConfig`], checks it, and reads the files it names (only the
//! server reads files): token files into `tokens[].token`, the link key file into
//! [`ApiConfig::link_key`].

use std::path::PathBuf;
use std::time::Duration;

use alerts::link::{AckLinks, DEFAULT_LINK_TTL, LinkKey};
use secrecy::SecretString;
use serde::Deserialize;

use crate::auth::Role;
use crate::districts::DistrictOutlines;

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Reads without a token, for wall displays.
    pub public_read: bool,
    pub tokens: Vec<ApiToken>,
    /// The address officers reach the service at (`https://stockpile.example.org`),
    /// behind whatever proxy: messages quote it, never the listen address, and the SMS
    /// webhook's signature is checked against it. Unset: messages quote the listen
    /// address, as an API call.
    pub public_url: Option<String>,
    /// A file holding the HMAC key of signed acknowledgement links (at least 32 bytes,
    /// used as they are). With `public_url`, every email and SMS carries a link.
    pub link_key_file: Option<PathBuf>,
    /// How long a link works.
    #[serde(deserialize_with = "reserve::duration::deserialize")]
    pub link_ttl: Duration,
    /// The key read from `link_key_file`, by the server. Never printed.
    #[serde(skip)]
    pub link_key: Option<LinkKey>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            public_read: false,
            tokens: Vec::new(),
            public_url: None,
            link_key_file: None,
            link_ttl: DEFAULT_LINK_TTL,
            link_key: None,
        }
    }
}

impl ApiConfig {
    /// The base URL messages quote: `public_url`, or else the listen address.
    pub fn message_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// Signed links, when both `public_url` and a key are configured.
    pub fn ack_links(&self) -> Option<AckLinks> {
        let (url, key) = (self.public_url.as_deref()?, self.link_key.clone()?);
        Some(AckLinks::new(key, url, self.link_ttl))
    }
}

/// `[board]`: what the wall board and the map show beyond the registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardConfig {
    /// A GeoJSON FeatureCollection of district outlines (Polygons, MultiPolygons) the
    /// map draws under the towns; relative to the config file. Read and checked at
    /// start-up: a missing or invalid file stops the service with a located error.
    pub districts_geojson: Option<PathBuf>,
    /// The outlines read from `districts_geojson`, by the server.
    #[serde(skip)]
    pub districts: Option<DistrictOutlines>,
}

/// One bearer token of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it; shown in acknowledgements and logs instead of the token.
    pub name: String,
    pub role: Role,
    /// After loading, also holds the token read from `token_file`. Exposed only to the
    /// API's token table.
    #[serde(default)]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Officer tokens: the towns whose alerts the holder may acknowledge.
    #[serde(default)]
    pub towns: Vec<String>,
}
