//! Transport safety of the configured URLs: a URL that carries the API key
//! is https, or plain http to loopback only; no URL embeds credentials
//! (`user:pass@`), and every one has a scheme and a host. Errors name the
//! setting and show the URL with any userinfo redacted.

use url::Url;

use super::layers::Origin;
use super::{cfg_err, ConfigError};

/// Parses a URL that will carry the API key: https, or http to loopback.
pub(super) fn secret_url(raw: &str, origin: &Origin) -> Result<Url, ConfigError> {
    let url = plain_url(raw, origin)?;
    if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) {
        Ok(url)
    } else {
        Err(cfg_err(origin, format!(
            "must use https:// (got {}): the API key travels on every call; plain http is allowed only to loopback (localhost, 127.0.0.0/8, ::1)",
            redact_url(raw)
        )))
    }
}

/// Parses any URL: scheme and host required, http(s) only, no userinfo.
pub(super) fn plain_url(raw: &str, origin: &Origin) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    if !raw.contains("://") {
        return Err(cfg_err(
            origin,
            format!(
                "must include a scheme, e.g. https:// (got {:?})",
                redact_url(raw)
            ),
        ));
    }
    let url = Url::parse(raw)
        .map_err(|e| cfg_err(origin, format!("not a URL ({e}): {:?}", redact_url(raw))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(cfg_err(origin, "must not embed credentials (user:pass@host); the API key is the only credential keysync sends"));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(cfg_err(
            origin,
            format!(
                "must be an http:// or https:// URL (got scheme {:?})",
                url.scheme()
            ),
        ));
    }
    if url.host().is_none() {
        return Err(cfg_err(
            origin,
            format!("must include a host (got {:?})", redact_url(raw)),
        ));
    }
    Ok(url)
}

/// Whether `host` is loopback: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL for error messages, with any userinfo removed.
fn redact_url(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &raw[..s], &raw[at + 1..]),
        _ => raw.to_string(),
    }
}
