//! URLs as they may be shown: channel URLs carry secrets (`smtp://user:password@relay`,
//! a DingTalk robot's `?access_token=…`, a WeCom robot's `?key=…`, an SMS gateway's API
//! key), and anyone who reads one can post into a duty group or send mail as us. So a
//! URL is never printed, logged or served as configured; one of these is.
//!
//! Plain string surgery, no URL parser: a URL that a parser would refuse must not be
//! printed whole because it failed to parse.

/// `scheme://host[:port]` of `url`, without credentials, path, query or fragment: where
/// a message goes, for the notification list and the console. A string without `://`
/// is shown as `***`.
pub fn url_origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (authority, _) = split_authority(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// `url` with its secrets replaced by `***`: the password of `user:password@` (a user
/// alone may be a token, so it goes too), every query value (`?key=***`), and the
/// fragment dropped. Scheme, user, host, port and path stay, so `check-config` still
/// shows what is configured. A URL without secrets comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL; a password would be after an `@` or in a query all the same.
        return if url.contains(['@', '?']) {
            "***".to_owned()
        } else {
            url.to_owned()
        };
    };
    let (authority, tail) = split_authority(rest);
    let mut out = format!("{scheme}://");
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str("***@"),
            }
            host
        }
        None => authority,
    };
    out.push_str(host);
    let tail = tail.split('#').next().unwrap_or_default();
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    out.push_str(path);
    if !query.is_empty() {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _value)) => format!("{key}=***"),
                None => "***".to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&masked.join("&"));
    }
    out
}

/// `host…` of what follows `scheme://`: the authority, and the rest from the first
/// `/`, `?` or `#`.
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        // (configured, redact_url, url_origin)
        let cases = [
            (
                "smtp://alerts:s3cret@relay.example.org:587",
                "smtp://alerts:***@relay.example.org:587",
                "smtp://relay.example.org:587",
            ),
            (
                "smtps://alerts:p%40ss@relay:465?tls=required",
                "smtps://alerts:***@relay:465?tls=***",
                "smtps://relay:465",
            ),
            (
                "https://oapi.dingtalk.com/robot/send?access_token=abc123",
                "https://oapi.dingtalk.com/robot/send?access_token=***",
                "https://oapi.dingtalk.com",
            ),
            (
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1&debug=1#top",
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***&debug=***",
                "https://qyapi.weixin.qq.com",
            ),
            (
                "https://apitoken@hooks.example.org/x?secret",
                "https://***@hooks.example.org/x?***",
                "https://hooks.example.org",
            ),
            (
                "mqtt://127.0.0.1:1883",
                "mqtt://127.0.0.1:1883",
                "mqtt://127.0.0.1:1883",
            ),
            (
                "http://127.0.0.1:9/stockpile",
                "http://127.0.0.1:9/stockpile",
                "http://127.0.0.1:9",
            ),
            ("file:///var/mail", "file:///var/mail", "file://"),
            ("user:pass@host", "***", "***"),
            ("relay", "relay", "***"),
            ("", "", "***"),
        ];
        for (url, redacted, origin) in cases {
            assert_eq!(redact_url(url), redacted, "redact_url({url:?})");
            assert_eq!(url_origin(url), origin, "url_origin({url:?})");
        }
    }
}
