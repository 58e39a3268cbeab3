//! Secrets: access tokens and passwords that must never reach a log line, an error message or
//! `Debug` output.
//!
//! [`Secret`] wraps a value and prints as `***`; the only way to read it is
//! [`Secret::expose`], which makes every use greppable. [`mask_url`] prints a URL with its
//! password replaced, for logs and errors that need to say *where* a connection goes.
use std::fmt;

use serde::{Deserialize, Deserializer};

/// A value that prints as `***` in `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret value itself; call this only where the value is handed to the peer that
    /// needs it (an HTTP signer, a connection string).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl Secret<String> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A connection URL (AMQP, Redis, database) that carries a password: `Display` and `Debug`
/// show it with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included, for the connection call only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password masked: what logs and errors show.
    pub fn masked(&self) -> String {
        mask_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.masked())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`. Strings that are not
/// URLs, or carry no password, come back unchanged.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn url_password_is_masked() {
        assert_eq!(
            mask_url("amqps://user:pa:ss@pulse.example.com:5671/vhost"),
            "amqps://user:***@pulse.example.com:5671/vhost"
        );
        assert_eq!(
            mask_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            mask_url("mysql://root@localhost/db"),
            "mysql://root@localhost/db"
        );
        assert_eq!(mask_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        let u = SecretUrl::new("mysql://bbb:s3cret@db/bbb");
        assert!(!format!("{u:?} {u}").contains("s3cret"));
    }
}
