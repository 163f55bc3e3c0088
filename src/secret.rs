//! Secrets (the `ovi_live_*` API key, keymanager tokens).
//!
//! Owns the only type that holds a secret's bytes. It never prints them:
//! `Debug` and `Display` redact, it does not implement `Serialize`, and
//! [`Secret::scrub`] removes the secret from any text that came back from a
//! remote party before that text reaches a log line or an error.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("ovi_live_abcdef123456");
        assert!(!format!("{s:?} {s}").contains("abcdef"));
        assert_eq!(s.scrub("x ovi_live_abcdef123456 y"), "x [redacted] y");
    }
}
