//! The harness error type.

use std::fmt;

/// What can go wrong while providing a PostgreSQL server to a test.
///
/// Messages are lowercase and always name the URL, command or directory
/// involved, so a failing test explains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HarnessError {
    /// `DATABASE_URL` is not a valid connection string.
    InvalidUrl {
        /// The offending URL.
        url: String,
        /// The parse error.
        message: String,
    },
    /// A server answered at `url` but the connection or a statement failed
    /// (authentication failure, missing database, ...).
    Server {
        /// The URL that was used.
        url: String,
        /// What was being done.
        context: String,
        /// The error, including its causes.
        message: String,
    },
    /// No server answered at `url` and no PostgreSQL binaries were found to
    /// start a private cluster instead.
    NoServer {
        /// The URL that was tried.
        url: String,
        /// Why connecting to `url` failed.
        connect_error: String,
        /// Every location searched for the PostgreSQL binaries.
        searched: Vec<String>,
    },
    /// No PostgreSQL binaries were found (when starting a [`PrivateCluster`]
    /// explicitly).
    ///
    /// [`PrivateCluster`]: super::PrivateCluster
    BinariesNotFound {
        /// Every location searched for the PostgreSQL binaries.
        searched: Vec<String>,
    },
    /// No server answered at `url`, and starting the private fallback
    /// cluster failed.
    Fallback {
        /// The URL that was tried.
        url: String,
        /// Why connecting to `url` failed.
        connect_error: String,
        /// Why the private cluster could not be started.
        cause: Box<HarnessError>,
    },
    /// A private cluster failed (to start, stop, ...).
    Cluster {
        /// The cluster's data directory.
        data_dir: String,
        /// What went wrong.
        message: String,
        /// The last lines of the server log, if any.
        log_tail: String,
    },
    /// A helper command or a file system operation failed.
    Io {
        /// What was being done (usually the command line or path).
        context: String,
        /// The error.
        message: String,
    },
}

pub(crate) const INSTALL_HINT: &str = "install PostgreSQL >= 13 (e.g. `apt-get install postgresql`, \
     or point POOL_CORE_PG_BINDIR at its bin directory) or set DATABASE_URL to a reachable server";

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, error: impl fmt::Display) -> Self {
        Self::Io {
            context: context.into(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl { url, message } => {
                write!(f, "invalid DATABASE_URL {url:?}: {message}")
            }
            Self::Server {
                url,
                context,
                message,
            } => write!(f, "postgres server at {url}: {context} failed: {message}"),
            Self::NoServer {
                url,
                connect_error,
                searched,
            } => write!(
                f,
                "no postgres server answered at {url} ({connect_error}) and no PostgreSQL \
                 binaries (initdb, postgres) were found to start a private one; searched: {}; \
                 {INSTALL_HINT}",
                searched.join("; ")
            ),
            Self::BinariesNotFound { searched } => write!(
                f,
                "no PostgreSQL binaries (initdb, postgres) found; searched: {}; {INSTALL_HINT}",
                searched.join("; ")
            ),
            Self::Fallback {
                url,
                connect_error,
                cause,
            } => write!(
                f,
                "no postgres server answered at {url} ({connect_error}) and starting a private \
                 cluster failed: {cause}"
            ),
            Self::Cluster {
                data_dir,
                message,
                log_tail,
            } => {
                write!(f, "private postgres cluster {data_dir}: {message}")?;
                if !log_tail.trim().is_empty() {
                    write!(f, "\n--- server log (tail) ---\n{}", log_tail.trim_end())?;
                }
                Ok(())
            }
            Self::Io { context, message } => write!(f, "{context}: {message}"),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Fallback { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}
