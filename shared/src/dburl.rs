//! Database URLs as the original bridge wrote them (SQLAlchemy style) and as sqlx wants them.
//!
//! Accepted: `postgres://` / `postgresql://` (and `postgresql+driver://`), `mysql://` (and
//! `mysql+driver://`, e.g. `mysql+pymysql://`), `sqlite://` with SQLAlchemy's three or four
//! slashes (`sqlite:///relative.db`, `sqlite:////absolute.db`), `sqlite::memory:`.
use std::fmt;

use crate::secret::mask_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MySql,
    Sqlite,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
            Engine::Sqlite => "sqlite",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported database URL {masked}: {reason}")]
pub struct DbUrlError {
    pub masked: String,
    pub reason: &'static str,
}

/// A parsed database URL. `Display`/`Debug` mask the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    engine: Engine,
    /// The URL in the form sqlx accepts.
    sqlx: String,
}

impl DbUrl {
    pub fn parse(raw: &str) -> Result<Self, DbUrlError> {
        let raw = raw.trim();
        let err = |reason| DbUrlError {
            masked: mask_url(raw),
            reason,
        };
        let Some((scheme, rest)) = raw.split_once(':') else {
            return Err(err(
                "no scheme (expected postgres://, mysql:// or sqlite://)",
            ));
        };
        // SQLAlchemy's dialect+driver form: keep the dialect.
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or(scheme)
            .to_ascii_lowercase();
        let (engine, sqlx) = match dialect.as_str() {
            "postgres" | "postgresql" => (Engine::Postgres, format!("postgres:{rest}")),
            "mysql" | "mariadb" => (Engine::MySql, format!("mysql:{rest}")),
            "sqlite" => (
                Engine::Sqlite,
                sqlite_url(rest).ok_or_else(|| err("bad sqlite path"))?,
            ),
            _ => {
                return Err(err(
                    "unknown scheme (expected postgres://, mysql:// or sqlite://)",
                ));
            }
        };
        Ok(Self { engine, sqlx })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL for `sqlx` connect calls, password included: hand it to sqlx only.
    pub fn expose(&self) -> &str {
        &self.sqlx
    }

    pub fn masked(&self) -> String {
        mask_url(&self.sqlx)
    }
}

/// `rest` is what follows `sqlite:`. SQLAlchemy: `///rel.db` is relative, `////abs.db` absolute.
fn sqlite_url(rest: &str) -> Option<String> {
    if rest == ":memory:" || rest == "//:memory:" || rest == "///:memory:" || rest.is_empty() {
        return Some("sqlite::memory:".to_owned());
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = if let Some(p) = path.strip_prefix("///") {
        p // "///rel" -> "rel", "////abs" -> "/abs"
    } else if let Some(p) = path.strip_prefix("//") {
        p // sqlx's own form "sqlite://rel.db"
    } else {
        path
    };
    if path.is_empty() {
        return None;
    }
    // Create the file when missing, as SQLAlchemy does.
    let query = query.map_or_else(|| "mode=rwc".to_owned(), str::to_owned);
    Some(format!("sqlite://{path}?{query}"))
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.masked())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl<'de> serde::Deserialize<'de> for DbUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DbUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_forms_are_accepted() {
        let u = DbUrl::parse("sqlite:///bbb.db").unwrap();
        assert_eq!(
            (u.engine(), u.expose()),
            (Engine::Sqlite, "sqlite://bbb.db?mode=rwc")
        );
        let u = DbUrl::parse("sqlite:////builds/master/state.sqlite").unwrap();
        assert_eq!(u.expose(), "sqlite:///builds/master/state.sqlite?mode=rwc");
        let u = DbUrl::parse("mysql+pymysql://bbb:pw@db.example.com/bbb").unwrap();
        assert_eq!(
            (u.engine(), u.expose()),
            (Engine::MySql, "mysql://bbb:pw@db.example.com/bbb")
        );
        assert_eq!(u.to_string(), "mysql://bbb:***@db.example.com/bbb");
        let u = DbUrl::parse("postgresql://u@h/d").unwrap();
        assert_eq!(
            (u.engine(), u.expose()),
            (Engine::Postgres, "postgres://u@h/d")
        );
        assert_eq!(
            DbUrl::parse("sqlite::memory:").unwrap().expose(),
            "sqlite::memory:"
        );
    }

    #[test]
    fn unknown_scheme_is_a_clear_error_without_the_password() {
        let e = DbUrl::parse("oracle://u:secret@h/d").unwrap_err();
        assert!(e.to_string().contains("unknown scheme"));
        assert!(!e.to_string().contains("secret"));
    }
}
