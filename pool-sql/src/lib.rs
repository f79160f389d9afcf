//! The SQL statement classifier shared by `pool-core` (run time) and
//! `pool-macros` (compile time, through `sql!("...")`).
//!
//! [`classify()`] decides where a statement text may run on a connection pool:
//!
//! * [`Kind::Plain`]: on any pooled connection; every statement may go to a
//!   different connection (`SELECT`, `INSERT`, DDL, `NOTIFY`, `CALL`, ...).
//! * [`Kind::Session`]: its effect only matters on the same connection and it
//!   leaves session state behind (`SET`, `LISTEN`, session advisory locks,
//!   temp tables, `PREPARE`, `WITH HOLD` cursors, `currval`, ...). The
//!   [`Touches`] say which state, so the pool can reset exactly that.
//! * [`Kind::TxOnly`]: only meaningful inside a transaction (`LOCK`,
//!   `SET LOCAL`, transaction advisory locks, `SELECT ... FOR UPDATE`, ...).
//! * Transaction control (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...) is refused
//!   with a [`Refusal`].
//!
//! A `COPY ... FROM STDIN` or `COPY ... TO STDOUT` also sets
//! [`Classification::copy`]: it streams data through the client, so it needs the
//! copy protocol (a `COPY` from or to a server file is an ordinary statement).
//!
//! Classification is a single forward pass over the bytes, allocates nothing
//! unless it refuses, and never panics.
//!
//! ```
//! use pool_sql::{Kind, Touches, classify};
//!
//! # fn main() -> Result<(), pool_sql::Refusal> {
//! assert_eq!(classify("SELECT * FROM t WHERE id = $1")?.kind, Kind::Plain);
//! let c = classify("SET search_path = app; LISTEN jobs")?;
//! assert_eq!(c.kind, Kind::Session);
//! assert_eq!(c.touches, Touches::GUC | Touches::LISTEN);
//! assert_eq!(classify("SELECT * FROM t FOR UPDATE")?.kind, Kind::TxOnly);
//! assert!(classify("BEGIN").is_err());
//! # Ok(())
//! # }
//! ```

mod classify;
mod head;
mod lexer;
#[cfg(test)]
mod tests;

use std::fmt;

pub use classify::classify;

/// Where a statement may run. Ordered `Plain < Session < TxOnly`; a text with
/// several statements or features gets the maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Safe on any pooled connection.
    #[default]
    Plain,
    /// Needs one connection for its effect to matter and leaves session state
    /// behind (see [`Touches`]).
    Session,
    /// Only meaningful inside a transaction.
    TxOnly,
}

impl Kind {
    /// The variant name: `"Plain"`, `"Session"` or `"TxOnly"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "Plain",
            Kind::Session => "Session",
            Kind::TxOnly => "TxOnly",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The session state a statement leaves behind: a small bit set.
///
/// The pool resets exactly these before handing the connection to the next
/// borrower. [`Touches::bits`] is stable and may be embedded as a literal and
/// rebuilt with [`Touches::from_bits_truncate`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Touches(u16);

impl Touches {
    /// Run-time parameters: `SET`, `RESET`, `set_config(...)`,
    /// `SET SESSION CHARACTERISTICS`.
    pub const GUC: Touches = Touches(1 << 0);
    /// The current role: `SET ROLE`, `SET SESSION AUTHORIZATION` (these also
    /// set [`Touches::GUC`]).
    pub const ROLE: Touches = Touches(1 << 1);
    /// `LISTEN` / `UNLISTEN` registrations.
    pub const LISTEN: Touches = Touches(1 << 2);
    /// Session-level advisory locks (including the unlock functions).
    pub const ADVISORY: Touches = Touches(1 << 3);
    /// Temporary tables and other temporary objects.
    pub const TEMP: Touches = Touches(1 << 4);
    /// SQL-level prepared statements: `PREPARE`, `EXECUTE`, `DEALLOCATE`.
    pub const PREPARED: Touches = Touches(1 << 5);
    /// `DEALLOCATE ALL` / `DISCARD ALL`: also destroys the driver's
    /// protocol-level prepared statements, so the pool must drop its
    /// statement cache.
    pub const DROPS_PREPARED: Touches = Touches(1 << 6);
    /// Cursors that outlive a transaction: `DECLARE ... WITH HOLD`, `FETCH`,
    /// `MOVE`, `CLOSE`.
    pub const CURSOR: Touches = Touches(1 << 7);
    /// Session sequence state read by `currval(...)` / `lastval()`.
    pub const SEQUENCE: Touches = Touches(1 << 8);
    /// Anything else: `DISCARD ...`, `LOAD`.
    pub const OTHER: Touches = Touches(1 << 9);
    /// Every flag.
    pub const ALL: Touches = Touches((1 << 10) - 1);

    /// Each flag with its name, in bit order.
    const NAMED: [(&'static str, Touches); 10] = [
        ("GUC", Touches::GUC),
        ("ROLE", Touches::ROLE),
        ("LISTEN", Touches::LISTEN),
        ("ADVISORY", Touches::ADVISORY),
        ("TEMP", Touches::TEMP),
        ("PREPARED", Touches::PREPARED),
        ("DROPS_PREPARED", Touches::DROPS_PREPARED),
        ("CURSOR", Touches::CURSOR),
        ("SEQUENCE", Touches::SEQUENCE),
        ("OTHER", Touches::OTHER),
    ];

    /// No flags.
    pub const fn empty() -> Touches {
        Touches(0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Touches) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a flag.
    pub const fn intersects(self, other: Touches) -> bool {
        self.0 & other.0 != 0
    }

    /// The flags of both.
    pub const fn union(self, other: Touches) -> Touches {
        Touches(self.0 | other.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The flags in `bits`, ignoring unknown bits.
    pub const fn from_bits_truncate(bits: u16) -> Touches {
        Touches(bits & Touches::ALL.0)
    }

    /// The names of the set flags (`"GUC"`, `"ROLE"`, ...), in bit order.
    pub fn names(self) -> Names {
        Names { set: self, next: 0 }
    }
}

impl std::ops::BitOr for Touches {
    type Output = Touches;
    fn bitor(self, rhs: Touches) -> Touches {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Touches {
    fn bitor_assign(&mut self, rhs: Touches) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for Touches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Touches(")?;
        if self.is_empty() {
            f.write_str("empty")?;
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
        }
        f.write_str(")")
    }
}

/// Iterator over the names of the flags in a [`Touches`]; see
/// [`Touches::names`].
#[derive(Clone, Debug)]
pub struct Names {
    set: Touches,
    next: usize,
}

impl Iterator for Names {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        while let Some((name, flag)) = Touches::NAMED.get(self.next) {
            self.next += 1;
            if self.set.contains(*flag) {
                return Some(name);
            }
        }
        None
    }
}

/// The result of classifying a statement text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Classification {
    /// The most restrictive kind among all statements and features.
    pub kind: Kind,
    /// The union of the session state touched by all statements.
    pub touches: Touches,
    /// The number of non-empty statements in the text.
    pub statements: usize,
    /// Whether a statement copies data through the client (`COPY ... FROM STDIN`
    /// or `TO STDOUT`), and which way; the first such statement decides.
    pub copy: Option<CopyDirection>,
    /// Whether every statement provably only reads: a query (`SELECT`, `VALUES`,
    /// `TABLE`, a `WITH` without `INSERT`/`UPDATE`/`DELETE`/`MERGE` anywhere in it),
    /// `SHOW`, or an `EXPLAIN` of one, with no locking clause (`FOR UPDATE`…), no
    /// `SELECT … INTO`, and no call that writes, locks or sets (`nextval`, `setval`,
    /// advisory locks, `set_config`, `pg_notify`, `txid_current`, large objects…). What
    /// it cannot see (a user function that writes) is left to a `READ ONLY`
    /// transaction on the server. Empty text is not read-only.
    pub read_only: bool,
}

/// Which way a `COPY` streams data through the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyDirection {
    /// `COPY ... FROM STDIN`: the client sends the rows.
    In,
    /// `COPY ... TO STDOUT`: the server sends the rows.
    Out,
}

/// Why a statement text was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The text contains transaction control, which must go through the pool.
    TransactionControl {
        /// The command as written, uppercased, without optional noise words:
        /// `"BEGIN"`, `"START TRANSACTION"`, `"COMMIT"`, `"END"`,
        /// `"ROLLBACK"`, `"ABORT"`, `"SAVEPOINT"`, `"RELEASE"`,
        /// `"ROLLBACK TO"` or `"PREPARE TRANSACTION"`.
        keyword: String,
        /// Byte offset of the command's first keyword in the text.
        offset: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TransactionControl { keyword, .. } => {
                let effect = match keyword.as_str() {
                    "BEGIN" | "START TRANSACTION" => {
                        "it would leave the pooled connection inside a transaction \
                         the pool does not know about"
                    }
                    "SAVEPOINT" | "RELEASE" | "ROLLBACK TO" => {
                        "it changes the state of a transaction behind the pool's back"
                    }
                    _ => "it would end a transaction behind the pool's back",
                };
                write!(
                    f,
                    "`{keyword}` is transaction control: {effect}; \
                     use `conn.begin()` or `#[transactional]` instead"
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}
