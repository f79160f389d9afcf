//! The lane behind a transaction-mode pooler (`pgbouncer_transaction_mode`).
//!
//! There, consecutive statements of one client may run on different server connections,
//! so a statement prepared on one is unknown on the next: the lane sends each one-shot
//! unnamed (parse, bind and execute in one request, which the pooler keeps on one server
//! connection), with its parameters' types given. Those types are asked once per
//! statement text, by the statement's first run, which checks out as a one-shot without
//! the lane does (the question runs inside its own transaction there, leaving nothing
//! on the shared server connections); the lane keeps them, with the classification, for
//! every later run.

use std::sync::Arc;

use pool_sql::Classification;
use tokio_postgres::types::Type;

use super::{Lane, locked};
use crate::conn::Conn;

/// What the lane learned about a statement from its first run on a checkout.
pub(crate) struct Learned {
    /// The server-inferred types of its parameters.
    pub(super) types: Arc<[Type]>,
    /// Its classification (admitted on `Db` then).
    pub(super) class: Classification,
}

/// How a one-shot goes on the lane.
pub(crate) enum How {
    /// Prepared on the shared connection once, by name.
    Named,
    /// Unnamed, with what its first run learned.
    Typed(Arc<Learned>),
}

/// The most statement texts the lane keeps learned types for (then it starts afresh).
const LEARNED: usize = 256;

impl Lane {
    /// How a one-shot of `text` runs on the lane: `None` when it cannot yet, behind a
    /// pooler with its parameter types not known — it checks out this once, and
    /// [`Lane::learn`] keeps what that run found.
    pub(crate) fn how(&self, text: &str) -> Option<How> {
        if !self.plan.typed {
            return Some(How::Named);
        }
        locked(&self.learned).get(text).cloned().map(How::Typed)
    }

    /// After a one-shot of `text` (classified `class`) ran on the checkout `conn`
    /// behind a pooler: keeps the parameter types it asked the server for, so that the
    /// next run goes on the lane.
    pub(crate) fn learn(&self, text: &str, class: Classification, conn: &Conn) {
        let Some(types) = conn.known_param_types(text) else {
            return;
        };
        let learned = Arc::new(Learned {
            types: types.into(),
            class,
        });
        let mut map = locked(&self.learned);
        if map.len() >= LEARNED {
            map.clear();
        }
        map.insert(text.into(), learned);
    }

    /// Whether one-shots learn their parameter types from a first checkout (behind a
    /// pooler).
    pub(crate) fn learns(&self) -> bool {
        self.plan.typed
    }

    /// Forgets what was learned about `text` (the schema may have changed under it): its
    /// next run asks again.
    pub(super) fn forget(&self, text: &str) {
        locked(&self.learned).remove(text);
    }
}
