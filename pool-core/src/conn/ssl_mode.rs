//! `SslMode`: how a connection uses TLS (read from the URL by `config/ssl.rs`, applied
//! by the connector in `tls.rs`).

/// How a connection uses TLS: libpq's `sslmode`, read from the URL (`?sslmode=…`) or
/// set with [`Builder::ssl_mode`](crate::Builder::ssl_mode).
///
/// `VerifyCa` and `VerifyFull` are honoured by the connector `Builder::rustls` builds
/// (feature `rustls`); with a connector of your own ([`Builder::tls`](crate::Builder::tls))
/// they mean `Require`, and what is verified is that connector's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked
    /// (the default, as in libpq).
    Prefer,
    /// TLS or no connection. The certificate is not checked unless `sslrootcert` is
    /// given, in which case it must be signed by that CA (as in libpq).
    Require,
    /// TLS, with a certificate signed by a CA in `sslrootcert`; any host name.
    VerifyCa,
    /// TLS, with a certificate signed by a CA in `sslrootcert` and issued for the host
    /// connected to.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives it in `sslmode=…`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}
