//! Table-driven tests for the classifier.

mod cases;

use crate::{Classification, CopyDirection, Kind, Refusal, Touches, classify};
use cases::{CASES, Want};

fn check(sql: &str, want: Want) -> Result<(), String> {
    let got = classify(sql);
    let good = match (&got, want) {
        (Ok(c), Want::Ok(kind, touches)) => c.kind == kind && c.touches == touches,
        (Err(Refusal::TransactionControl { keyword, offset }), Want::Refuse(kw, off)) => {
            keyword == kw && *offset == off
        }
        _ => false,
    };
    if good {
        Ok(())
    } else {
        Err(format!("{sql:?}\n    want {want:?}\n    got  {got:?}"))
    }
}

#[test]
fn table() {
    assert!(CASES.len() >= 150, "only {} cases", CASES.len());
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|(sql, want)| check(sql, *want).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn statement_counts() {
    let cases: &[(&str, usize)] = &[
        ("", 0),
        (";;", 0),
        ("/* c */ ; -- x", 0),
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT 1; SELECT 2", 2),
        (";SELECT 1;;SELECT 2;", 2),
        ("SELECT ';'; SELECT $$;$$", 2),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2",
            2,
        ),
    ];
    for (sql, n) in cases {
        let got = classify(sql).map(|c| c.statements);
        assert_eq!(got, Ok(*n), "{sql:?}");
    }
}

/// Runs `classify` and checks the invariants that hold for any input.
fn survives(sql: &str) {
    match classify(sql) {
        Ok(Classification { statements, .. }) => {
            assert!(statements <= sql.len(), "{sql:?}");
        }
        Err(Refusal::TransactionControl { keyword, offset }) => {
            let first = keyword.split(' ').next().unwrap_or_default();
            let at = sql.get(offset..).unwrap_or_default().to_ascii_uppercase();
            assert!(at.starts_with(first), "{sql:?}: {keyword} at {offset}");
        }
    }
}

#[test]
fn never_panics_on_prefixes_suffixes_and_garbage() {
    for (sql, _) in CASES {
        let bytes = sql.as_bytes();
        for i in 0..=bytes.len() {
            survives(&String::from_utf8_lossy(&bytes[..i]));
            survives(&String::from_utf8_lossy(&bytes[i..]));
        }
    }
    let fixed = [
        "'",
        "\"",
        "$",
        "$$",
        "$a",
        "$a$",
        "$1",
        "E'",
        "e'\\",
        "U&",
        "U&'",
        "U&\"",
        "/*",
        "/*/",
        "*/",
        "--",
        "-",
        "(",
        ")",
        ")))(((",
        ";",
        "\0",
        "\u{feff}BEGIN",
        "é'ü\"ß$$",
        "SELECT pg_advisory_lock(",
        "SELECT * FROM t FOR NO KEY",
        "EXPLAIN (",
        "EXPLAIN ((",
        "WITH",
        "DECLARE",
        "CREATE OR",
        "SET SESSION",
        "ROLLBACK WORK",
        "PREPARE TRANSACTION",
        "CREATE FUNCTION f() BEGIN BEGIN CASE END",
        "x.",
        ".",
        ".5e",
        "1e+",
        "0x",
    ];
    for sql in fixed {
        survives(sql);
    }
    survives(&"(".repeat(100_000));
    survives(&")".repeat(100_000));
    survives(&"/*".repeat(10_000));
    survives(&"CREATE FUNCTION f() BEGIN ".repeat(1_000));
    // Pseudo-random garbage built from the characters the lexer cares about.
    let alphabet: &[&str] = &[
        "'",
        "\"",
        "$",
        "$t$",
        "\\",
        "/*",
        "*/",
        "--",
        "\n",
        "(",
        ")",
        ";",
        ".",
        ",",
        "e",
        "E'",
        "U&",
        "&",
        " ",
        "BEGIN",
        "select",
        "for",
        "update",
        "into",
        "temp",
        "with",
        "explain",
        "create",
        "function",
        "end",
        "case",
        "pg_advisory_lock",
        "1",
        "é",
        "\u{0}",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5_000 {
        let mut s = String::new();
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let len = (seed >> 59) as usize + 1;
        for _ in 0..len {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            s.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
        }
        survives(&s);
        let raw: Vec<u8> = s.bytes().map(|b| b ^ (seed as u8 & 0x80)).collect();
        survives(&String::from_utf8_lossy(&raw));
    }
}

#[test]
fn refusal_display_says_what_to_do() {
    for sql in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK TO a",
        "SAVEPOINT a",
        "PREPARE TRANSACTION 'x'",
    ] {
        let err = match classify(sql) {
            Err(e) => e,
            Ok(c) => panic!("{sql:?} was accepted: {c:?}"),
        };
        let msg = err.to_string();
        assert!(msg.contains("begin()"), "{msg}");
        assert!(msg.contains("#[transactional]"), "{msg}");
        assert!(msg.contains("is transaction control"), "{msg}");
    }
    let err = Refusal::TransactionControl {
        keyword: "BEGIN".to_owned(),
        offset: 0,
    };
    assert_eq!(
        err.to_string(),
        "`BEGIN` is transaction control: it would leave the pooled connection inside a \
         transaction the pool does not know about; use `conn.begin()` or `#[transactional]` \
         instead"
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn touches_bit_set() {
    let t = Touches::GUC | Touches::ROLE;
    assert!(t.contains(Touches::GUC) && t.contains(Touches::ROLE));
    assert!(!t.contains(Touches::GUC | Touches::TEMP));
    assert!(t.intersects(Touches::GUC | Touches::TEMP));
    assert_eq!(Touches::from_bits_truncate(t.bits()), t);
    assert_eq!(Touches::from_bits_truncate(u16::MAX), Touches::ALL);
    assert!(Touches::empty().is_empty() && Touches::default().is_empty());
    assert_eq!(format!("{t:?}"), "Touches(GUC | ROLE)");
    assert_eq!(format!("{:?}", Touches::empty()), "Touches(empty)");
    assert_eq!(Touches::ALL.names().count(), 10);
    let mut u = Touches::empty();
    u |= Touches::DROPS_PREPARED;
    assert_eq!(u.names().collect::<Vec<_>>(), ["DROPS_PREPARED"]);
    let mut bits = 0;
    for (_, flag) in Touches::NAMED {
        assert_eq!(bits & flag.bits(), 0, "flags overlap");
        bits |= flag.bits();
    }
    assert_eq!(bits, Touches::ALL.bits());
}

#[test]
fn kind_order_and_names() {
    assert!(Kind::Plain < Kind::Session && Kind::Session < Kind::TxOnly);
    assert_eq!(Kind::TxOnly.as_str(), "TxOnly");
    assert_eq!(Kind::Plain.to_string(), "Plain");
    assert_eq!(Kind::default(), Kind::Plain);
}

/// Exercises the hot path many times; asserts results only, never timings.
#[test]
fn hot_path_is_stable() {
    let want = Classification {
        kind: Kind::Plain,
        touches: Touches::empty(),
        statements: 1,
        copy: None,
        read_only: true,
    };
    for _ in 0..10_000 {
        assert_eq!(classify("SELECT 1"), Ok(want));
    }
}

#[test]
fn copy_through_the_client_is_marked_and_server_files_are_not() {
    let dir = |sql: &str| classify(sql).map(|c| c.copy);
    let (i, o) = (Some(CopyDirection::In), Some(CopyDirection::Out));
    assert_eq!(dir("COPY t FROM STDIN"), Ok(i));
    assert_eq!(
        dir("copy public.t (a, b) from stdin with (format csv)"),
        Ok(i)
    );
    assert_eq!(dir("COPY BINARY t FROM STDIN"), Ok(i));
    assert_eq!(dir("COPY t TO STDOUT"), Ok(o));
    assert_eq!(
        dir("COPY (SELECT * FROM t WHERE a > 1) TO STDOUT (FORMAT binary)"),
        Ok(o)
    );
    assert_eq!(dir("/* x */ COPY t TO stdout"), Ok(o));
    // Server-side files and programs are ordinary statements.
    assert_eq!(dir("COPY t FROM '/tmp/t.csv'"), Ok(None));
    assert_eq!(dir("COPY t TO PROGRAM 'gzip > /tmp/t.gz'"), Ok(None));
    // Words inside the query, a string or a comment are not the target.
    assert_eq!(dir("COPY (SELECT 'FROM STDIN') TO '/tmp/x'"), Ok(None));
    assert_eq!(dir("COPY (SELECT stdin FROM t) TO '/tmp/x'"), Ok(None));
    assert_eq!(dir("SELECT 1 -- COPY t FROM STDIN"), Ok(None));
    assert_eq!(dir("SELECT stdout FROM t"), Ok(None));
    // Among several statements, the COPY is still found.
    let c = classify("SELECT 1; COPY t FROM STDIN").expect("classified");
    assert_eq!((c.copy, c.statements), (i, 2));
}

#[test]
fn read_only_is_proved_only_for_statements_that_cannot_write() {
    let reads = [
        "SELECT 1",
        "select * from t where id = $1",
        "VALUES (1), (2)",
        "TABLE t",
        "SHOW search_path",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "EXPLAIN SELECT * FROM t",
        "(SELECT 1) UNION (SELECT 2)",
        "SELECT currval('s')",
        "SELECT 1; SELECT 2",
        "SELECT 'INSERT INTO t' AS s -- DELETE",
        "SELECT \"update\" FROM t",
        "SELECT pg_last_wal_replay_lsn()",
    ];
    let writes = [
        "",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "CREATE TABLE t (a int)",
        "SELECT * FROM t FOR UPDATE",
        "SELECT * FROM t FOR SHARE",
        "SELECT * INTO t2 FROM t",
        "SELECT * INTO TEMP t2 FROM t",
        "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x",
        "WITH x AS (SELECT 1) DELETE FROM t",
        "SELECT nextval('s')",
        "SELECT setval('s', 1)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "SELECT set_config('a.b', 'c', false)",
        "SELECT pg_notify('c', 'x')",
        "SELECT txid_current()",
        "SELECT lo_create(0)",
        "SELECT lo_put(1, 0, 'x')",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        "COPY t TO STDOUT",
        "SET search_path = x",
        "LOCK TABLE t",
        "CALL p()",
        "SELECT 1; INSERT INTO t VALUES (1)",
        "NOTIFY c",
        "VACUUM t",
    ];
    for sql in reads {
        assert_eq!(classify(sql).map(|c| c.read_only), Ok(true), "{sql:?}");
    }
    for sql in writes {
        assert_eq!(classify(sql).map(|c| c.read_only), Ok(false), "{sql:?}");
    }
}
