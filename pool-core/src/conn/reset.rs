//! Resetting the session state a borrower left behind, before the connection is reused.
//!
//! The pool records what each statement touches (see `pool_sql::Touches`) and resets only
//! that — a connection nobody dirtied goes back with no round trip at all. `DISCARD ALL`
//! would be simpler but also drops the connection's prepared statements, which are what
//! make repeated statements fast; it is used only when something unknown was touched.

use pool_sql::Touches;

/// The statements that undo `touches`, as one simple-protocol batch.
pub(crate) fn reset_sql(touches: Touches) -> String {
    if touches.contains(Touches::OTHER) {
        return "DISCARD ALL".to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    if touches.contains(Touches::CURSOR) {
        parts.push("CLOSE ALL");
    }
    if touches.contains(Touches::ROLE) {
        parts.push("SET SESSION AUTHORIZATION DEFAULT");
    }
    if touches.contains(Touches::GUC) || touches.contains(Touches::ROLE) {
        parts.push("RESET ALL");
    }
    if drops_prepared(touches) {
        parts.push("DEALLOCATE ALL");
    }
    if touches.contains(Touches::LISTEN) {
        parts.push("UNLISTEN *");
    }
    if touches.contains(Touches::ADVISORY) {
        parts.push("SELECT pg_advisory_unlock_all()");
    }
    if touches.contains(Touches::TEMP) {
        parts.push("DISCARD TEMP");
    }
    if touches.contains(Touches::SEQUENCE) {
        parts.push("DISCARD SEQUENCES");
    }
    parts.join("; ")
}

/// Whether the reset also destroys the driver's protocol-level prepared statements, so the
/// connection's statement cache must be dropped with it.
pub(crate) fn drops_prepared(touches: Touches) -> bool {
    touches.contains(Touches::PREPARED)
        || touches.contains(Touches::DROPS_PREPARED)
        || touches.contains(Touches::OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_only_what_was_touched() {
        assert_eq!(reset_sql(Touches::GUC), "RESET ALL");
        assert_eq!(
            reset_sql(Touches::LISTEN | Touches::ADVISORY),
            "UNLISTEN *; SELECT pg_advisory_unlock_all()"
        );
        assert_eq!(
            reset_sql(Touches::ROLE),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ALL"
        );
        assert_eq!(reset_sql(Touches::TEMP | Touches::OTHER), "DISCARD ALL");
        assert!(drops_prepared(Touches::PREPARED));
        assert!(!drops_prepared(Touches::GUC | Touches::TEMP));
    }
}
