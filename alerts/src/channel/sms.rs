//! SMS through an HTTP gateway: a generic request templated from the configuration, or
//! a preset for a well-known gateway (Twilio's Messages API).

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};

use super::http::{classify, no_answer};
use super::{Channel, ChannelError, ChannelKind, DeliveryError, Notification};
use crate::config::{SmsConfig, SmsPreset};
use crate::redact::redact_url;

pub struct SmsChannel {
    client: reqwest::Client,
    url: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
    from: Option<String>,
    /// Basic auth: user and password.
    auth: Option<(String, SecretString)>,
    timeout: Duration,
}

impl std::fmt::Debug for SmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsChannel")
            // The URL may carry the gateway's API key.
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// What the request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// `{"to": …, "text": …}`.
    DefaultJson,
    /// The configured template; placeholders escaped as `escape` says.
    Template { template: String, escape: Escape },
    /// Twilio: form `To`, `From`, `Body`.
    TwilioForm,
    /// GET: everything is in the URL.
    None,
}

/// How a value is escaped into a template, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Json,
    Form,
    Raw,
}

impl SmsChannel {
    pub fn new(config: &SmsConfig, client: reqwest::Client) -> Result<SmsChannel, ChannelError> {
        let url = config.url.clone();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ChannelError::Sms(format!(
                "url: expected an http:// or https:// URL, got {:?}",
                redact_url(&url)
            )));
        }
        let method = match &config.method {
            None => Method::POST,
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| ChannelError::Sms(format!("method: {m:?} is not an HTTP method")))?,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ChannelError::Sms(format!("headers: bad header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value.expose_secret())
                .map_err(|_| ChannelError::Sms(format!("headers: bad value for header {name}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = match (config.preset, &config.body, &method) {
            (Some(SmsPreset::Twilio), _, _) => Body::TwilioForm,
            (None, _, &Method::GET) => Body::None,
            (None, None, _) => Body::DefaultJson,
            (None, Some(template), _) => Body::Template {
                template: template.clone(),
                escape: if content_type.contains("json") {
                    Escape::Json
                } else if content_type.contains("x-www-form-urlencoded") {
                    Escape::Form
                } else {
                    Escape::Raw
                },
            },
        };
        if config.preset == Some(SmsPreset::Twilio)
            && (config.username.is_none() || config.password.is_none() || config.from.is_none())
        {
            return Err(ChannelError::Sms(
                "preset twilio needs username (account SID), password (auth token) and from".into(),
            ));
        }
        let auth = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        };
        Ok(SmsChannel {
            client,
            url,
            method: if config.preset.is_some() {
                Method::POST
            } else {
                method
            },
            headers,
            body,
            from: config.from.clone(),
            auth,
            timeout: config.timeout,
        })
    }

    fn request(&self, n: &Notification) -> reqwest::RequestBuilder {
        let values = [
            ("to", n.recipient.as_str()),
            ("text", n.body.as_str()),
            ("from", self.from.as_deref().unwrap_or("")),
        ];
        let url = if self.body == Body::TwilioForm {
            self.url.clone()
        } else {
            fill(&self.url, &values, Escape::Form)
        };
        let mut request = self
            .client
            .request(self.method.clone(), url)
            .timeout(self.timeout)
            .headers(self.headers.clone());
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        match &self.body {
            Body::None => request,
            Body::DefaultJson => {
                request.json(&serde_json::json!({"to": n.recipient, "text": n.body}))
            }
            Body::TwilioForm => {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("To", &n.recipient)
                    .append_pair("From", self.from.as_deref().unwrap_or(""))
                    .append_pair("Body", &n.body)
                    .finish();
                request
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
            }
            Body::Template { template, escape } => request.body(fill(template, &values, *escape)),
        }
    }
}

impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let response = self.request(n).send().await.map_err(no_answer)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        classify(status, &body)
    }
}

/// Fills `{to}`, `{text}`, `{from}` in one pass (a value containing `{text}` is not
/// filled again), escaping each value for where it goes.
fn fill(template: &str, values: &[(&str, &str)], escape: Escape) -> String {
    let mut out = String::with_capacity(template.len() + 200);
    let mut rest = template;
    'scan: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        for (name, value) in values {
            if let Some(tail) = after
                .strip_prefix(name)
                .and_then(|tail| tail.strip_prefix('}'))
            {
                out.push_str(&escaped(value, escape));
                rest = tail;
                continue 'scan;
            }
        }
        out.push('{');
        rest = after;
    }
    out.push_str(rest);
    out
}

fn escaped(value: &str, escape: Escape) -> String {
    match escape {
        Escape::Raw => value.to_owned(),
        // The template holds the quotes: `"text": "{text}"`.
        Escape::Json => {
            let quoted = serde_json::Value::from(value).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        // Spaces as %20, which both query strings and form bodies read as a space.
        Escape::Form => form_urlencoded::byte_serialize(value.as_bytes())
            .collect::<String>()
            .replace('+', "%20"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_escaped_for_where_they_go() {
        let values = [
            ("to", "+8613800000000"),
            ("text", "严重 \"景山\" & 2.1天\n{to}"),
        ];
        let cases = [
            (
                r#"{"phone":"{to}","msg":"{text}"}"#,
                Escape::Json,
                r#"{"phone":"+8613800000000","msg":"严重 \"景山\" & 2.1天\n{to}"}"#,
            ),
            (
                "to={to}&msg={text}",
                Escape::Form,
                "to=%2B8613800000000&msg=%E4%B8%A5%E9%87%8D%20%22%E6%99%AF%E5%B1%B1%22%20%26%202.1%E5%A4%A9%0A%7Bto%7D",
            ),
            (
                "{to}: {text} {unknown} {",
                Escape::Raw,
                "+8613800000000: 严重 \"景山\" & 2.1天\n{to} {unknown} {",
            ),
        ];
        for (template, escape, want) in cases {
            assert_eq!(fill(template, &values, escape), want, "{template}");
        }
        // The JSON result parses back to the text as written.
        let json = fill(r#"{"msg":"{text}"}"#, &values, Escape::Json);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["msg"], values[1].1);
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let client = reqwest::Client::new();
        let mut twilio =
            SmsConfig::new("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json");
        twilio.preset = Some(SmsPreset::Twilio);
        let mut bad_method = SmsConfig::new("http://gw/send");
        bad_method.method = Some("SE ND".into());
        let cases = [
            (SmsConfig::new("ftp://gw/send"), "expected an http"),
            (twilio, "needs username"),
            (bad_method, "not an HTTP method"),
        ];
        for (config, want) in cases {
            let err = SmsChannel::new(&config, client.clone()).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
