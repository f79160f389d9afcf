//! The ledger workload's bookkeeping: every write is keyed by a unique id and recorded as
//! acked, failed (nothing committed) or ambiguous; [`Ledger::verify`] then checks the
//! table against the records.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio_postgres::Client;

/// The table the ledger writes to.
pub const TABLE: &str = "ledger";

/// The statement that creates the ledger's table.
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ledger (\
     id bigint PRIMARY KEY, worker int NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// What became of one write, as far as its caller knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The commit returned `Ok`: the row must be there.
    Acked,
    /// It failed before its commit (or its one statement) was sent: the row must not be
    /// there.
    Failed,
    /// It failed or was abandoned after the commit was sent: either is allowed.
    Ambiguous,
}

/// Records of every write.
#[derive(Debug, Default)]
pub struct Ledger {
    next: AtomicI64,
    records: Mutex<Vec<(i64, Outcome)>>,
}

/// What [`Ledger::verify`] found.
#[derive(Clone, Debug, Default)]
pub struct LedgerReport {
    /// Writes acked.
    pub acked: usize,
    /// Writes that failed before their commit was sent.
    pub failed: usize,
    /// Writes whose outcome the caller could not know.
    pub ambiguous: usize,
    /// Ambiguous writes that did commit.
    pub ambiguous_committed: usize,
    /// Acked writes missing from the table: must be empty.
    pub lost: Vec<i64>,
    /// Failed writes present in the table: must be empty.
    pub phantom: Vec<i64>,
}

impl std::fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ledger: {} acked, {} failed, {} ambiguous ({} of them committed); lost {:?}, phantom {:?}",
            self.acked,
            self.failed,
            self.ambiguous,
            self.ambiguous_committed,
            self.lost,
            self.phantom
        )
    }
}

impl LedgerReport {
    /// Whether no acked write was lost and no failed write appeared.
    pub fn is_consistent(&self) -> bool {
        self.lost.is_empty() && self.phantom.is_empty()
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// A fresh id for a write.
    pub fn next_id(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records what became of write `id`.
    pub fn record(&self, id: i64, outcome: Outcome) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, outcome));
    }

    /// How many writes were recorded with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, o)| *o == outcome)
            .count()
    }

    /// Compares the records with the table, read through `client` (a direct connection).
    pub async fn verify(&self, client: &Client) -> Result<LedgerReport, tokio_postgres::Error> {
        let rows = client.query("SELECT id FROM ledger", &[]).await?;
        let present: HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        let records = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut report = LedgerReport::default();
        for (id, outcome) in records {
            let there = present.contains(&id);
            match outcome {
                Outcome::Acked => {
                    report.acked += 1;
                    if !there {
                        report.lost.push(id);
                    }
                }
                Outcome::Failed => {
                    report.failed += 1;
                    if there {
                        report.phantom.push(id);
                    }
                }
                Outcome::Ambiguous => {
                    report.ambiguous += 1;
                    if there {
                        report.ambiguous_committed += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}

/// Tracks one write through its phases; dropped unresolved (its future was cancelled),
/// it records what can still be known.
#[derive(Debug)]
pub struct Write<'a> {
    ledger: &'a Ledger,
    id: i64,
    commit_sent: bool,
    done: bool,
}

impl<'a> Write<'a> {
    /// Starts tracking a new write.
    pub fn start(ledger: &'a Ledger) -> Write<'a> {
        Write {
            ledger,
            id: ledger.next_id(),
            commit_sent: false,
            done: false,
        }
    }

    /// The write's id (the row's key).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// From here on the write may have committed.
    pub fn commit_sent(&mut self) {
        self.commit_sent = true;
    }

    /// The commit returned `Ok`.
    pub fn acked(mut self) {
        self.done = true;
        self.ledger.record(self.id, Outcome::Acked);
    }

    /// It failed; `before_send` says whether the error came before anything was sent
    /// (only relevant once the commit may have been sent).
    pub fn failed(mut self, before_send: bool) {
        self.done = true;
        let outcome = if !self.commit_sent || before_send {
            Outcome::Failed
        } else {
            Outcome::Ambiguous
        };
        self.ledger.record(self.id, outcome);
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if !self.done {
            let outcome = if self.commit_sent {
                Outcome::Ambiguous
            } else {
                Outcome::Failed
            };
            self.ledger.record(self.id, outcome);
        }
    }
}
