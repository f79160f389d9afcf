//! Tracing spans with OpenTelemetry's database attribute names: `acquire` (site, wait),
//! `statement` (operation from the statement, namespace, server, text only when asked)
//! and `transaction` (isolation, outcome), checked with a capturing subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pool_core::{Isolation, TxOptions};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::common::{see_every_callsite, setup};

/// A span as the subscriber saw it: its name, fields and whether it closed.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: &'static str,
    fields: HashMap<String, String>,
    closed: bool,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<HashMap<u64, Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut seen = Seen {
            name: attrs.metadata().name(),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().insert(id.into_u64(), seen);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(seen) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(seen) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            seen.closed = true;
        }
    }
}

impl Capture {
    fn named(&self, name: &str) -> Vec<Seen> {
        let mut all: Vec<(u64, Seen)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, s)| s).collect()
    }
}

#[tokio::test]
async fn acquire_statement_and_transaction_spans_carry_otel_attributes() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let (tdb, builder) = setup().await;
    see_every_callsite();
    tdb.connect()
        .await
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let pool = builder
        .max_size(1)
        .trace_statement_text(true)
        .build()
        .unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    conn.query("SELECT 1", &[]).await.unwrap();
    let mut tx = conn
        .begin_with(TxOptions::new().isolation(Isolation::Serializable))
        .await
        .unwrap();
    tx.execute("lock table t in share mode", &[]).await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    {
        let mut tx = conn.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    }
    conn.execute("SELECT 2", &[]).await.unwrap();
    drop(conn);
    // A one-shot on the shared lane has its statement span too.
    db.query("SELECT 3", &[]).await.unwrap();
    assert_eq!(pool.status().lane.map(|l| l.statements), Some(1));

    let acquires = capture.named("acquire");
    assert!(!acquires.is_empty());
    let a = &acquires[0];
    assert!(a.fields["code.site"].contains("spans.rs"), "{a:?}");
    assert!(a.fields.contains_key("waited_us"), "{a:?}");
    assert!(a.closed);

    let statements = capture.named("statement");
    let by_text = |text: &str| -> Seen {
        statements
            .iter()
            .find(|s| s.fields.get("db.query.text").map(String::as_str) == Some(text))
            .unwrap_or_else(|| panic!("no statement span for {text}: {statements:#?}"))
            .clone()
    };
    let select = by_text("SELECT 1");
    assert_eq!(select.fields["otel.name"], "SELECT");
    assert_eq!(select.fields["db.operation.name"], "SELECT");
    assert_eq!(select.fields["db.system.name"], "postgresql");
    assert_eq!(select.fields["db.namespace"], tdb.name());
    assert!(select.fields.contains_key("server.address"), "{select:?}");
    assert!(select.fields.contains_key("server.port"), "{select:?}");
    assert!(select.closed);
    let one_shot = by_text("SELECT 3");
    assert_eq!(one_shot.fields["db.operation.name"], "SELECT");
    assert_eq!(one_shot.fields["db.namespace"], tdb.name());
    assert!(one_shot.closed);
    let lock = by_text("lock table t in share mode");
    assert_eq!(lock.fields["db.operation.name"], "LOCK TABLE");
    assert_eq!(
        by_text("INSERT INTO t VALUES (1)").fields["db.operation.name"],
        "INSERT"
    );

    let txs = capture.named("transaction");
    assert_eq!(txs.len(), 2, "{txs:#?}");
    assert_eq!(txs[0].fields["db.transaction.isolation"], "serializable");
    assert_eq!(txs[0].fields["outcome"], "commit");
    assert_eq!(txs[1].fields["db.transaction.isolation"], "default");
    assert_eq!(txs[1].fields["outcome"], "dropped: rolled back");
    assert!(txs.iter().all(|t| t.closed));
}

#[tokio::test]
async fn statement_text_is_left_out_unless_asked_for() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let (_tdb, builder) = setup().await;
    see_every_callsite();
    let pool = builder.max_size(1).build().unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    conn.query("SELECT 'secret'", &[]).await.unwrap();
    let statements = capture.named("statement");
    assert!(!statements.is_empty());
    assert!(
        statements
            .iter()
            .all(|s| !s.fields.contains_key("db.query.text")),
        "{statements:#?}"
    );
}
