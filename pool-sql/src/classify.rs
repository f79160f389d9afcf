//! The classifier: splits the token stream into statements, finds each
//! statement's leading keyword(s) and scans its body for session functions,
//! locking clauses and temp-table targets, all in one forward pass.

use crate::head::Head;
use crate::lexer::{Lexer, Tok, TokKind};
use crate::{Classification, CopyDirection, Kind, Refusal, Touches};

/// How many leading tokens of a statement are kept for the head decision.
const HEAD: usize = 6;
/// How many previous tokens are kept for pattern matching.
const BACK: usize = 4;

/// Functions that make a statement session- or transaction-bound.
#[rustfmt::skip]
const CALLS: [(&[u8], Kind, Touches); 18] = [
    (b"pg_advisory_lock", Kind::Session, Touches::ADVISORY),
    (b"pg_advisory_lock_shared", Kind::Session, Touches::ADVISORY),
    (b"pg_try_advisory_lock", Kind::Session, Touches::ADVISORY),
    (b"pg_try_advisory_lock_shared", Kind::Session, Touches::ADVISORY),
    (b"pg_advisory_unlock", Kind::Session, Touches::ADVISORY),
    (b"pg_advisory_unlock_shared", Kind::Session, Touches::ADVISORY),
    (b"pg_advisory_unlock_all", Kind::Session, Touches::ADVISORY),
    (b"pg_advisory_xact_lock", Kind::TxOnly, Touches::empty()),
    (b"pg_advisory_xact_lock_shared", Kind::TxOnly, Touches::empty()),
    (b"pg_try_advisory_xact_lock", Kind::TxOnly, Touches::empty()),
    (b"pg_try_advisory_xact_lock_shared", Kind::TxOnly, Touches::empty()),
    (b"set_config", Kind::Session, Touches::GUC),
    (b"currval", Kind::Session, Touches::SEQUENCE),
    (b"lastval", Kind::Session, Touches::SEQUENCE),
    // The session's random() sequence.
    (b"setseed", Kind::Session, Touches::OTHER),
    // Named dblink connections and cursors live as long as the session.
    (b"dblink_connect", Kind::Session, Touches::OTHER),
    (b"dblink_connect_u", Kind::Session, Touches::OTHER),
    (b"dblink_open", Kind::Session, Touches::OTHER),
];

/// Functions that write, lock or set something, so a statement calling them is not
/// read-only (besides those of `CALLS` that are not `currval`/`lastval`).
const WRITE_CALLS: [&[u8]; 12] = [
    b"nextval",
    b"setval",
    b"pg_notify",
    b"txid_current",
    b"pg_current_xact_id",
    b"lo_creat",
    b"lo_create",
    b"lo_import",
    b"lo_unlink",
    b"lo_put",
    b"lo_from_bytea",
    b"lo_truncate",
];

/// Words before a name that mean `name(` is not a call (`DROP FUNCTION f(int)`,
/// `INSERT INTO t (a)`, `REFERENCES t (id)`, ...).
const NOT_CALLS: [&[u8]; 7] = [
    b"function",
    b"procedure",
    b"routine",
    b"aggregate",
    b"into",
    b"table",
    b"references",
];

/// Classifies a statement text (one or more `;`-separated statements).
///
/// Returns the most restrictive [`Kind`] and the union of the [`Touches`] of
/// all statements, or a [`Refusal`] for the first transaction-control
/// statement. Never panics; allocates only when refusing.
pub fn classify(sql: &str) -> Result<Classification, Refusal> {
    let mut total = Classification::default();
    let mut stmt = Stmt::new();
    for tok in Lexer::new(sql.as_bytes()) {
        if tok.kind == TokKind::Semi && stmt.atomic == 0 {
            stmt.finish(&mut total)?;
            stmt.reset();
        } else {
            stmt.feed(tok);
        }
    }
    stmt.finish(&mut total)?;
    Ok(total)
}

/// Where the head parser is within a statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first token that is not a leading `(`.
    Lead,
    /// After `EXPLAIN` (and any `ANALYZE` / `VERBOSE`).
    Explain,
    /// Just after a `(` following `EXPLAIN`: options or a parenthesized query?
    ExplainOpen { close_at: u32 },
    /// Inside the `EXPLAIN (...)` options list.
    ExplainOpts { close_at: u32 },
    /// In the statement proper.
    Body,
}

/// Per-statement scanning state.
struct Stmt<'a> {
    depth: u32,
    base: u32,
    phase: Phase,
    lead: Head,
    /// The first tokens of the statement proper; see [`Stmt::head_at`].
    head: [Tok<'a>; HEAD],
    head_len: usize,
    /// Ring buffer of the previous tokens; see [`Stmt::prev`].
    back: [Tok<'a>; BACK],
    /// How many tokens the statement has had (the ring's write position).
    back_at: usize,
    call_kind: Kind,
    call_touches: Touches,
    lock_clause: bool,
    into_temp: bool,
    pg_temp: bool,
    /// For `WITH`: whether the main statement modifies data.
    with_modifies: Option<bool>,
    declare_for: bool,
    with_hold: bool,
    /// `BEGIN ... END` nesting inside a `CREATE FUNCTION ... BEGIN ATOMIC`.
    atomic: u32,
    /// `COPY ... FROM STDIN` / `TO STDOUT`.
    copy: Option<CopyDirection>,
    /// A call that writes, locks or sets (see `WRITE_CALLS`, `CALLS`).
    call_writes: bool,
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` anywhere (a data-modifying CTE), or a
    /// top-level `INTO` in a query (`SELECT … INTO t` creates a table).
    writes: bool,
}

impl<'a> Stmt<'a> {
    #[inline(always)]
    fn new() -> Self {
        Stmt {
            depth: 0,
            base: 0,
            phase: Phase::Lead,
            lead: Head::Other,
            head: [Tok::VOID; HEAD],
            head_len: 0,
            back: [Tok::VOID; BACK],
            back_at: 0,
            call_kind: Kind::Plain,
            call_touches: Touches::empty(),
            lock_clause: false,
            into_temp: false,
            pg_temp: false,
            with_modifies: None,
            declare_for: false,
            with_hold: false,
            atomic: 0,
            copy: None,
            call_writes: false,
            writes: false,
        }
    }

    /// Prepares for the next statement.
    fn reset(&mut self) {
        *self = Stmt::new();
    }

    /// The `i`-th token of the statement proper, if kept.
    #[inline]
    fn head_at(&self, i: usize) -> Option<&Tok<'a>> {
        self.head[..self.head_len].get(i)
    }

    /// The `i`-th previous token (0 = the one just before the current one).
    #[inline]
    fn prev(&self, i: usize) -> &Tok<'a> {
        &self.back[self.back_at.wrapping_sub(i + 1) % BACK]
    }

    fn feed(&mut self, tok: Tok<'a>) {
        match tok.kind {
            TokKind::LParen => self.depth = self.depth.saturating_add(1),
            TokKind::RParen => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        self.step(tok);
        self.back[self.back_at % BACK] = tok;
        self.back_at = self.back_at.wrapping_add(1);
    }

    fn step(&mut self, tok: Tok<'a>) {
        match self.phase {
            Phase::Lead => {
                if tok.kind != TokKind::LParen {
                    self.start_head(tok);
                }
            }
            Phase::Explain => {
                if tok.is_kw(b"analyze") || tok.is_kw(b"analyse") || tok.is_kw(b"verbose") {
                } else if tok.kind == TokKind::LParen {
                    self.phase = Phase::ExplainOpen {
                        close_at: self.depth.saturating_sub(1),
                    };
                } else {
                    self.start_head(tok);
                }
            }
            Phase::ExplainOpen { close_at } => {
                if tok.kind == TokKind::LParen {
                    self.phase = Phase::Lead;
                } else if matches!(
                    Head::of(&tok),
                    Head::Select | Head::Values | Head::Table | Head::With
                ) {
                    self.start_head(tok);
                } else {
                    self.phase = Phase::ExplainOpts { close_at };
                    self.step(tok);
                }
            }
            Phase::ExplainOpts { close_at } => {
                if tok.kind == TokKind::RParen && self.depth == close_at {
                    self.phase = Phase::Explain;
                }
            }
            Phase::Body => self.body(tok),
        }
    }

    fn start_head(&mut self, tok: Tok<'a>) {
        let lead = Head::of(&tok);
        if lead == Head::Explain {
            self.phase = Phase::Explain;
            return;
        }
        self.phase = Phase::Body;
        self.head_len = 0;
        self.base = self.depth;
        self.lead = lead;
        self.body(tok);
    }

    fn body(&mut self, tok: Tok<'a>) {
        if let Some(slot) = self.head.get_mut(self.head_len) {
            *slot = tok;
            self.head_len += 1;
            if self.lead == Head::Create && self.is_create_routine() {
                self.lead = Head::Routine;
            }
        }
        match tok.kind {
            TokKind::LParen => self.call(),
            TokKind::Dot if self.prev(0).is_name(b"pg_temp") => self.pg_temp = true,
            TokKind::Word => self.word(&tok),
            _ => {}
        }
    }

    /// A `(` after a name: a function call?
    fn call(&mut self) {
        let (name, b1, b3) = (self.prev(0), self.prev(1), self.prev(3));
        // Cheap filter: every name in `CALLS` and `WRITE_CALLS` starts with p, s,
        // c, l, n, t or d and has 6 to 32 bytes.
        if !matches!(name.kind, TokKind::Word | TokKind::QIdent)
            || !(6..=32).contains(&name.text.len())
            || !name
                .text
                .first()
                .is_some_and(|b| matches!(b | 0x20, b'p' | b's' | b'c' | b'l' | b'n' | b't' | b'd'))
        {
            return;
        }
        let before = if b1.kind == TokKind::Dot { b3 } else { b1 };
        if NOT_CALLS.iter().any(|kw| before.is_kw(kw)) {
            return;
        }
        if let Some((n, kind, touches)) = CALLS.iter().find(|(n, _, _)| name.is_name(n)) {
            self.call_kind = self.call_kind.max(*kind);
            self.call_touches |= *touches;
            self.call_writes |= !matches!(*n, b"currval" | b"lastval");
        } else if WRITE_CALLS.iter().any(|n| name.is_name(n)) {
            self.call_writes = true;
        }
    }

    fn word(&mut self, tok: &Tok<'a>) {
        if self.is_lock_clause(tok) {
            self.lock_clause = true;
        }
        if self.is_into_temp(tok) {
            self.into_temp = true;
        }
        let top = self.depth == self.base;
        if [&b"insert"[..], b"update", b"delete", b"merge"]
            .iter()
            .any(|kw| tok.is_kw(kw))
            || (top && tok.is_kw(b"into"))
        {
            self.writes = true;
        }
        let b0 = self.prev(0);
        match self.lead {
            Head::With if top && self.with_modifies.is_none() => {
                let cte_name =
                    b0.kind == TokKind::Comma || b0.is_kw(b"with") || b0.is_kw(b"recursive");
                if cte_name {
                } else if Head::of(tok).is_query() {
                    self.with_modifies = Some(false);
                } else if [&b"insert"[..], b"update", b"delete", b"merge"]
                    .iter()
                    .any(|kw| tok.is_kw(kw))
                {
                    self.with_modifies = Some(true);
                }
            }
            Head::Declare if top => {
                if tok.is_kw(b"for") {
                    self.declare_for = true;
                } else if !self.declare_for && tok.is_kw(b"hold") && b0.is_kw(b"with") {
                    self.with_hold = true;
                }
            }
            // psql's heuristic for SQL-standard bodies (`BEGIN ATOMIC ... END`),
            // whose `;` do not end the statement.
            Head::Copy if top && self.copy.is_none() => {
                if tok.is_kw(b"stdin") && b0.is_kw(b"from") {
                    self.copy = Some(CopyDirection::In);
                } else if tok.is_kw(b"stdout") && b0.is_kw(b"to") {
                    self.copy = Some(CopyDirection::Out);
                }
            }
            Head::Routine if top => {
                if tok.is_kw(b"begin") || (tok.is_kw(b"case") && self.atomic > 0) {
                    self.atomic = self.atomic.saturating_add(1);
                } else if tok.is_kw(b"end") {
                    self.atomic = self.atomic.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    /// Does `tok` end a locking clause (`FOR UPDATE`, `FOR NO KEY UPDATE`,
    /// `FOR SHARE`, `FOR KEY SHARE`), given the previous tokens `b`?
    fn is_lock_clause(&self, tok: &Tok<'a>) -> bool {
        let b = |i| self.prev(i);
        if tok.is_kw(b"update") {
            b(0).is_kw(b"for") || (b(0).is_kw(b"key") && b(1).is_kw(b"no") && b(2).is_kw(b"for"))
        } else if tok.is_kw(b"share") {
            b(0).is_kw(b"for") || (b(0).is_kw(b"key") && b(1).is_kw(b"for"))
        } else {
            false
        }
    }

    /// Does `tok` end `INTO [LOCAL | GLOBAL] TEMP | TEMPORARY` (and not
    /// `INSERT INTO temp` / `MERGE INTO temp`), given the previous tokens `b`?
    fn is_into_temp(&self, tok: &Tok<'a>) -> bool {
        let b = |i| self.prev(i);
        if !tok.is_kw(b"temp") && !tok.is_kw(b"temporary") {
            return false;
        }
        let before = if b(0).is_kw(b"into") {
            b(1)
        } else if (b(0).is_kw(b"local") || b(0).is_kw(b"global")) && b(1).is_kw(b"into") {
            b(2)
        } else {
            return false;
        };
        !before.is_kw(b"insert") && !before.is_kw(b"merge")
    }

    /// Ends the statement and folds its classification into `total`.
    fn finish(&self, total: &mut Classification) -> Result<(), Refusal> {
        if self.back_at == 0 {
            return Ok(());
        }
        let (kind, touches) = self.decide()?;
        let read = self.reads_only();
        total.read_only = read && (total.statements == 0 || total.read_only);
        total.statements += 1;
        total.kind = total.kind.max(kind);
        total.touches |= touches;
        total.copy = total.copy.or(self.copy);
        Ok(())
    }

    /// The statement's own kind and touches, from its head and body flags.
    fn decide(&self) -> Result<(Kind, Touches), Refusal> {
        use Kind::{Plain, Session, TxOnly};
        let w = |i: usize, kw: &[u8]| self.head_at(i).is_some_and(|t| t.is_kw(kw));
        let Some(first) = self.head_at(0) else {
            return Ok((Plain, Touches::empty()));
        };
        let refuse = |keyword: &str| {
            Err(Refusal::TransactionControl {
                keyword: keyword.to_owned(),
                offset: first.start,
            })
        };
        let (mut kind, mut touches) = match self.lead {
            Head::Begin => return refuse("BEGIN"),
            Head::Start if w(1, b"transaction") => return refuse("START TRANSACTION"),
            Head::Commit | Head::Rollback if w(1, b"prepared") => (Plain, Touches::empty()),
            Head::Commit => return refuse("COMMIT"),
            Head::End => return refuse("END"),
            Head::Abort => return refuse("ABORT"),
            Head::Rollback => {
                let j = if w(1, b"work") || w(1, b"transaction") {
                    2
                } else {
                    1
                };
                return refuse(if w(j, b"to") {
                    "ROLLBACK TO"
                } else {
                    "ROLLBACK"
                });
            }
            Head::Savepoint => return refuse("SAVEPOINT"),
            Head::Release => return refuse("RELEASE"),
            Head::Prepare
                if w(1, b"transaction")
                    && !w(2, b"as")
                    && !self.head_at(2).is_some_and(|t| t.kind == TokKind::LParen) =>
            {
                return refuse("PREPARE TRANSACTION");
            }
            Head::Prepare | Head::Execute => (Session, Touches::PREPARED),
            Head::Deallocate => {
                let j = if w(1, b"prepare") { 2 } else { 1 };
                if w(j, b"all") {
                    (Session, Touches::PREPARED | Touches::DROPS_PREPARED)
                } else {
                    (Session, Touches::PREPARED)
                }
            }
            Head::Set => {
                if w(1, b"local") || w(1, b"transaction") || w(1, b"constraints") {
                    (TxOnly, Touches::empty())
                } else if w(1, b"role")
                    || (w(1, b"session") && (w(2, b"role") || w(2, b"authorization")))
                {
                    (Session, Touches::GUC | Touches::ROLE)
                } else {
                    (Session, Touches::GUC)
                }
            }
            Head::Reset => (Session, Touches::GUC),
            Head::Listen => (Session, Touches::LISTEN),
            Head::Declare if self.with_hold => (Session, Touches::CURSOR),
            Head::Declare | Head::Lock => (TxOnly, Touches::empty()),
            Head::Fetch => (Session, Touches::CURSOR),
            Head::Discard if w(1, b"all") => (Session, Touches::OTHER | Touches::DROPS_PREPARED),
            Head::Discard | Head::Load => (Session, Touches::OTHER),
            Head::Create | Head::Routine => {
                let mut i = if w(1, b"or") && w(2, b"replace") {
                    3
                } else {
                    1
                };
                if w(i, b"local") || w(i, b"global") {
                    i += 1;
                }
                if self.pg_temp || w(i, b"temp") || w(i, b"temporary") {
                    (Session, Touches::TEMP)
                } else {
                    (Plain, Touches::empty())
                }
            }
            _ => (Plain, Touches::empty()),
        };
        let query = match self.lead {
            Head::With => self.with_modifies != Some(true),
            lead => lead.is_query(),
        };
        if query && self.into_temp {
            kind = kind.max(Session);
            touches |= Touches::TEMP;
        }
        if query && self.lock_clause {
            kind = TxOnly;
        }
        if self.lead != Head::Routine {
            kind = kind.max(self.call_kind);
            touches |= self.call_touches;
        }
        Ok((kind, touches))
    }

    /// Whether the statement provably only reads (see `Classification::read_only`).
    /// A `FOR UPDATE`'s `update` counts as a write too, which it is for a replica.
    fn reads_only(&self) -> bool {
        let query = match self.lead {
            Head::Select | Head::Values | Head::Table | Head::With => true,
            Head::Other => self.head_at(0).is_some_and(|t| t.is_kw(b"show")),
            _ => false,
        };
        query && !self.writes && !self.lock_clause && !self.call_writes && self.copy.is_none()
    }

    /// Does the head read `CREATE [OR REPLACE] FUNCTION | PROCEDURE`?
    fn is_create_routine(&self) -> bool {
        let w = |i: usize, kw: &[u8]| self.head_at(i).is_some_and(|t| t.is_kw(kw));
        let routine = |i| w(i, b"function") || w(i, b"procedure");
        match self.head_len {
            2 => routine(1),
            4 => w(1, b"or") && w(2, b"replace") && routine(3),
            _ => false,
        }
    }
}
