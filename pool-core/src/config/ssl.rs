//! The libpq TLS options that tokio-postgres does not read (`sslmode=verify-ca`,
//! `sslmode=verify-full`, `sslrootcert`): taken out of a URL or key-value string before
//! the driver parses the rest, and kept for the builder's TLS choice.

use std::borrow::Cow;
use std::path::PathBuf;

use super::Builder;
use crate::conn::ConnConfig;
use crate::error::{Error, Result};

pub use crate::conn::SslMode;

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (the driver cannot fall back from plain to TLS); use sslmode=prefer"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not a TLS mode; use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    /// Whether a connection in this mode must use TLS.
    pub(crate) fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }

    /// What the driver is told: it knows no verification modes, the connector verifies.
    pub(crate) fn for_driver(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self {
            SslMode::Disable => Driver::Disable,
            SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        }
    }

    pub(crate) fn from_driver(mode: tokio_postgres::config::SslMode) -> SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match mode {
            Driver::Disable => SslMode::Disable,
            Driver::Require => SslMode::Require,
            _ => SslMode::Prefer,
        }
    }
}

/// The TLS options found in a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SslOptions {
    pub(crate) mode: Option<SslMode>,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `s` (a `postgres://` URL or key-value
/// string): the rest for the driver, and what was taken.
pub(crate) fn take_ssl_options(s: &str) -> Result<(Cow<'_, str>, SslOptions), String> {
    let mut found = SslOptions::default();
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => found.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => found.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        url_without(s, &mut take)?
    } else {
        key_values_without(s, &mut take)?
    };
    Ok((rest, found))
}

type Take<'a> = dyn FnMut(&str, &str) -> Result<bool, String> + 'a;

/// The URL without the query parameters `take` accepts.
fn url_without<'s>(s: &'s str, take: &mut Take<'_>) -> Result<Cow<'s, str>, String> {
    let Some((base, query)) = s.split_once('?') else {
        return Ok(Cow::Borrowed(s));
    };
    let mut kept = Vec::new();
    let mut changed = false;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if take(&percent_decode(key)?, &percent_decode(value)?)? {
            changed = true;
        } else {
            kept.push(pair);
        }
    }
    if !changed {
        return Ok(Cow::Borrowed(s));
    }
    Ok(Cow::Owned(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{s}` has a `%` not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

/// The key-value string without the pairs `take` accepts (libpq's grammar: `key = value`,
/// the value bare or in single quotes, `\` escaping the next character).
fn key_values_without<'s>(s: &'s str, take: &mut Take<'_>) -> Result<Cow<'s, str>, String> {
    let mut kept = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        kept.push_str(&rest[..rest.len() - trimmed.len()]);
        if trimmed.is_empty() {
            break;
        }
        let (key, after_key) = trimmed.split_at(
            trimmed
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(trimmed.len()),
        );
        let after_eq = after_key
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| format!("`{key}` is not followed by `=` and a value"))?
            .trim_start();
        let (value, consumed) = kv_value(after_eq)?;
        let end = trimmed.len() - after_eq.len() + consumed;
        if take(key, &value)? {
            changed = true;
        } else {
            kept.push_str(&trimmed[..end]);
        }
        rest = &trimmed[end..];
    }
    Ok(if changed {
        Cow::Owned(kept)
    } else {
        Cow::Borrowed(s)
    })
}

/// One value and the bytes it took.
fn kv_value(s: &str) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    let quoted = s.starts_with('\'');
    if quoted {
        chars.next();
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => return Err("a value ends with a lone `\\`".to_owned()),
            },
            '\'' if quoted => return Ok((value, i + 1)),
            c if !quoted && c.is_whitespace() => return Ok((value, i)),
            c => value.push(c),
        }
    }
    if quoted {
        return Err("a quoted value has no closing `'`".to_owned());
    }
    Ok((value, s.len()))
}

/// Which TLS connector the builder was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum TlsChoice {
    /// None: `NoTls`.
    #[default]
    None,
    /// The application's own, through `Builder::tls`.
    Custom,
    /// Built by the pool from the TLS options (feature `rustls`).
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    Rustls,
}

impl Builder {
    /// How connections use TLS, over the URL's `sslmode` (default: the URL's, else
    /// `prefer`). See [`SslMode`].
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl.mode = Some(mode);
        self
    }

    /// The PEM file of the certificate authorities the server's certificate must be
    /// signed by, over the URL's `sslrootcert` (`system`: the operating system's roots).
    /// Read by the connector `rustls()` builds; without `sslrootcert`, `verify-ca` and
    /// `verify-full` read `~/.postgresql/root.crt`, as libpq does.
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl.root_cert = Some(path.into());
        self
    }

    /// TLS through rustls, as the URL's `sslmode` and `sslrootcert` say (libpq's
    /// meaning, `verify-ca` and `verify-full` included); cancel requests go over TLS too.
    /// The one line a TLS setup needs (with the `rustls` feature of `pool-core`):
    ///
    /// ```no_run
    /// # fn f() -> Result<(), pool_core::Error> {
    /// let pool = pool_core::Pool::builder(
    ///     "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
    /// )
    /// .rustls()
    /// .build()?;
    /// # Ok(()) }
    /// ```
    ///
    /// A certificate that fails the check is a connect error saying why (unknown CA,
    /// wrong host name), reported at once rather than retried until `acquire_timeout`.
    #[cfg(feature = "rustls")]
    pub fn rustls(mut self) -> Self {
        self.tls = TlsChoice::Rustls;
        self
    }

    /// Settles the TLS mode (the builder's over the URL's over the driver config's),
    /// tells the driver, and builds the connector `rustls()` asked for.
    pub(super) fn settle_tls(
        ssl: SslOptions,
        from_url: SslOptions,
        choice: TlsChoice,
        pg: &mut tokio_postgres::Config,
        conn: &mut ConnConfig,
    ) -> Result<()> {
        let mode = ssl
            .mode
            .or(from_url.mode)
            .unwrap_or_else(|| SslMode::from_driver(pg.get_ssl_mode()));
        let root_cert = ssl.root_cert.or(from_url.root_cert);
        pg.ssl_mode(mode.for_driver());
        match choice {
            TlsChoice::None if mode.requires_tls() => Err(Error::config(
                "sslmode",
                format!(
                    "is {}, but the pool has no TLS connector; enable pool-core's `rustls` feature and \
                     call `.rustls()` on the builder, or pass a connector with `.tls(..)`",
                    mode.as_str()
                ),
            )),
            TlsChoice::None | TlsChoice::Custom if root_cert.is_some() => Err(Error::config(
                "sslrootcert",
                "is only read by the connector `.rustls()` builds (feature `rustls`); use it, or give \
                 your own connector (`.tls(..)`) its roots and drop sslrootcert",
            )),
            TlsChoice::None | TlsChoice::Custom => Ok(()),
            TlsChoice::Rustls => {
                #[cfg(feature = "rustls")]
                {
                    let roots = match root_cert {
                        Some(path) => Some(path),
                        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                            Some(default_root_cert(mode)?)
                        }
                        None => None,
                    };
                    let tls = crate::conn::rustls_connector(mode, roots.as_deref())
                        .map_err(|problem| Error::config("sslrootcert", problem))?;
                    conn.connector = crate::conn::Connector::new(tls);
                }
                #[cfg(not(feature = "rustls"))]
                let _ = conn;
                Ok(())
            }
        }
    }
}

/// libpq's default root certificate file, which must exist for the verifying modes.
#[cfg(feature = "rustls")]
fn default_root_cert(mode: SslMode) -> Result<PathBuf> {
    let path = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
        .filter(|path| path.exists());
    path.ok_or_else(|| {
        Error::config(
            "sslrootcert",
            format!(
                "is not set and ~/.postgresql/root.crt does not exist; sslmode={} needs the certificate \
                 authority that signed the server's certificate: add sslrootcert=/path/to/ca.pem to the \
                 URL (or sslrootcert=system for the operating system's roots)",
                mode.as_str()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn take(s: &str) -> (String, SslOptions) {
        let (rest, found) = take_ssl_options(s).unwrap();
        (rest.into_owned(), found)
    }

    #[test]
    fn urls_lose_only_the_tls_options() {
        let (rest, found) = take(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%20x.pem",
        );
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(found.mode, Some(SslMode::VerifyFull));
        assert_eq!(found.root_cert, Some(PathBuf::from("/tmp/ca x.pem")));
        let (rest, found) = take("postgresql://u@h/db?sslmode=require");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(found.mode, Some(SslMode::Require));
        let (rest, found) = take("postgres://u@h/db?connect_timeout=3");
        assert_eq!(rest, "postgres://u@h/db?connect_timeout=3");
        assert_eq!(found, SslOptions::default());
    }

    #[test]
    fn key_values_lose_only_the_tls_options() {
        let (rest, found) =
            take("host=h sslmode = verify-ca user=u sslrootcert='/a b/c\\'s.pem' dbname=d");
        assert_eq!(rest, "host=h  user=u  dbname=d");
        assert_eq!(found.mode, Some(SslMode::VerifyCa));
        assert_eq!(found.root_cert, Some(PathBuf::from("/a b/c's.pem")));
        let (rest, _) = take("host=h password='a b'");
        assert_eq!(rest, "host=h password='a b'");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let err = take_ssl_options("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(err.contains("verify-full"), "{err}");
        let err = take_ssl_options("host=h sslmode=allow").unwrap_err();
        assert!(err.contains("use sslmode=prefer"), "{err}");
        let err = take_ssl_options("host=h sslrootcert='/x").unwrap_err();
        assert!(err.contains("closing"), "{err}");
    }
}
