//! The leading keyword of a statement, recognised with one length dispatch
//! and a handful of case-insensitive comparisons.

use crate::lexer::Tok;

/// A statement's leading keyword (after leading `(`s and `EXPLAIN ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    Other,
    Select,
    Values,
    Table,
    With,
    Explain,
    Declare,
    Create,
    /// `CREATE [OR REPLACE] FUNCTION | PROCEDURE`: the body is not executed.
    Routine,
    Begin,
    Start,
    Commit,
    End,
    Abort,
    Rollback,
    Savepoint,
    Release,
    Prepare,
    Execute,
    Deallocate,
    Set,
    Reset,
    /// `LISTEN`, `UNLISTEN`.
    Listen,
    /// `FETCH`, `MOVE`, `CLOSE`.
    Fetch,
    Discard,
    Load,
    Lock,
    Copy,
}

impl Head {
    /// The head keyword `tok` is, if any.
    pub(crate) fn of(tok: &Tok<'_>) -> Head {
        use Head::*;
        let words: &[(&[u8], Head)] = match tok.text.len() {
            3 => &[(b"set", Set), (b"end", End)],
            4 => &[
                (b"with", With),
                (b"move", Fetch),
                (b"load", Load),
                (b"lock", Lock),
                (b"copy", Copy),
            ],
            5 => &[
                (b"table", Table),
                (b"begin", Begin),
                (b"start", Start),
                (b"abort", Abort),
                (b"reset", Reset),
                (b"fetch", Fetch),
                (b"close", Fetch),
            ],
            6 => &[
                (b"select", Select),
                (b"values", Values),
                (b"create", Create),
                (b"commit", Commit),
                (b"listen", Listen),
            ],
            7 => &[
                (b"explain", Explain),
                (b"declare", Declare),
                (b"prepare", Prepare),
                (b"execute", Execute),
                (b"release", Release),
                (b"discard", Discard),
            ],
            8 => &[(b"rollback", Rollback), (b"unlisten", Listen)],
            9 => &[(b"savepoint", Savepoint)],
            10 => &[(b"deallocate", Deallocate)],
            _ => &[],
        };
        words
            .iter()
            .find(|(kw, _)| tok.is_kw(kw))
            .map_or(Other, |&(_, head)| head)
    }

    /// `SELECT`, `VALUES`, `TABLE`.
    pub(crate) fn is_query(self) -> bool {
        matches!(self, Head::Select | Head::Values | Head::Table)
    }
}
