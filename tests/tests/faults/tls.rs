//! TLS for real (feature `rustls`): a private cluster with `ssl = on` and a certificate
//! generated here, signed by a CA generated here. `require` is TLS on the server's own
//! word (`pg_stat_ssl`); `verify-full` refuses a wrong host name and an unknown CA and
//! says which; cancel requests go over TLS too (seen on the wire); a TLS handshake that
//! stalls is bounded by `connect_timeout`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::{Error, Pool, SslMode, TimeoutKind};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tests::harness::PrivateCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::rig::*;

/// The first word of an `SSLRequest` and of a plain `CancelRequest` (protocol codes).
const SSL_REQUEST: u32 = 80_877_103;
const CANCEL_REQUEST: u32 = 80_877_102;

/// A cluster serving TLS with a certificate for `localhost` only, and two CA files:
/// the one that signed it and one that did not.
struct TlsCluster {
    cluster: PrivateCluster,
    ca: PathBuf,
    other_ca: PathBuf,
}

impl TlsCluster {
    async fn start() -> TlsCluster {
        let cluster = PrivateCluster::start_default().await.unwrap();
        let signer = ca("pool-core test CA");
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &signer)
            .unwrap();
        cluster
            .write_file("server.crt", server.pem().as_bytes(), 0o644)
            .unwrap();
        cluster
            .write_file("server.key", key.serialize_pem().as_bytes(), 0o600)
            .unwrap();
        cluster.set("ssl_cert_file", "server.crt").await.unwrap();
        cluster.set("ssl_key_file", "server.key").await.unwrap();
        cluster.set("ssl", "on").await.unwrap();
        let ca_file = cluster
            .write_file("client-ca.pem", signer.pem().as_bytes(), 0o644)
            .unwrap();
        let other = ca("someone else's CA");
        let other_ca = cluster
            .write_file("other-ca.pem", other.pem().as_bytes(), 0o644)
            .unwrap();
        TlsCluster {
            cluster,
            ca: ca_file,
            other_ca,
        }
    }

    fn url(&self, host: &str, options: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?{options}",
            self.cluster.port()
        )
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Whether the server says this connection is encrypted, and with what.
async fn ssl_of(pool: &Pool) -> (bool, String) {
    let mut conn = pool.db();
    let row = conn
        .query_one(
            "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_does_what_libpq_does_and_the_server_agrees() {
    let _serial = serial().await;
    let tls = TlsCluster::start().await;
    let ca = tls.ca.display().to_string();
    for (host, options, encrypted) in [
        ("127.0.0.1", "sslmode=require".to_owned(), true),
        ("127.0.0.1", "sslmode=prefer".to_owned(), true),
        ("127.0.0.1", "sslmode=disable".to_owned(), false),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
        // verify-ca checks the signer, not the name (the certificate names localhost).
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            true,
        ),
        // require with a root certificate checks the signer too, as in libpq.
        (
            "127.0.0.1",
            format!("sslmode=require&sslrootcert={ca}"),
            true,
        ),
    ] {
        let pool = Pool::builder(tls.url(host, &options))
            .rustls()
            .max_size(1)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{host} {options}: {e}"));
        let (ssl, version) = ssl_of(&pool).await;
        assert_eq!(ssl, encrypted, "{host} {options}: pg_stat_ssl.ssl");
        if encrypted {
            assert!(version.starts_with("TLSv1."), "{options}: {version}");
        }
        pool.close().await;
    }
    // The builder's mode wins over the URL's.
    let pool = Pool::builder(tls.url("127.0.0.1", "sslmode=disable"))
        .rustls()
        .ssl_mode(SslMode::Require)
        .connect()
        .await
        .unwrap();
    assert!(ssl_of(&pool).await.0);
    pool.close().await;
}

/// The connect error of a pool that cannot be built, as text.
async fn refusal(url: String) -> String {
    match Pool::builder(url)
        .rustls()
        .acquire_timeout(Duration::from_secs(20))
        .connect()
        .await
    {
        Err(e @ Error::Connect { .. }) => {
            // The message says why once; the causes below it are the driver's.
            let text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                assert!(!text.contains(&cause.to_string()), "{text} repeats {cause}");
                source = cause.source();
            }
            text
        }
        Err(e) => panic!("expected a connect error, got {e}"),
        Ok(_) => panic!("expected a refused certificate, got a pool"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_wrong_host_and_an_unknown_ca_and_says_which() {
    let _serial = serial().await;
    let tls = TlsCluster::start().await;
    let ca = tls.ca.display().to_string();
    let other = tls.other_ca.display().to_string();

    let wrong_host = refusal(tls.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(wrong_host.contains("wrong host name"), "{wrong_host}");
    assert!(wrong_host.contains("127.0.0.1"), "{wrong_host}");
    assert!(wrong_host.contains("localhost"), "{wrong_host}");
    assert!(!wrong_host.contains("unknown CA"), "{wrong_host}");

    for mode in ["verify-full", "verify-ca", "require"] {
        let unknown =
            refusal(tls.url("localhost", &format!("sslmode={mode}&sslrootcert={other}"))).await;
        assert!(unknown.contains("unknown CA"), "{mode}: {unknown}");
        assert!(unknown.contains(&other), "{mode}: {unknown}");
        assert!(!unknown.contains("wrong host name"), "{mode}: {unknown}");
    }

    // Refused at once: nothing on the server was ever authenticated.
    let admin = connect(&tls.cluster.config()).await;
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pool-core'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_that_cannot_work_are_refused_when_the_pool_is_built() {
    let url = "postgres://postgres@127.0.0.1/postgres";
    let field = |r: pool_core::Result<Pool>| match r {
        Err(Error::Config { field, problem, .. }) => (field, problem),
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error, got a pool"),
    };
    let (f, p) = field(Pool::builder(format!("{url}?sslmode=require")).build());
    assert_eq!(f, "sslmode");
    assert!(p.contains(".rustls()"), "{p}");
    let (f, p) = field(
        Pool::builder(format!(
            "{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
        ))
        .rustls()
        .build(),
    );
    assert_eq!(f, "sslrootcert");
    assert!(p.contains("/nonexistent/ca.pem"), "{p}");
    let (f, p) = field(
        Pool::builder(format!("{url}?sslrootcert=/x.pem"))
            .tls(tokio_postgres::NoTls)
            .build(),
    );
    assert_eq!(f, "sslrootcert");
    assert!(p.contains("rustls"), "{p}");
    let (f, p) = field(Pool::builder(format!("{url}?sslmode=allow")).build());
    assert_eq!(f, "url");
    assert!(p.contains("sslmode=prefer"), "{p}");
}

/// A TCP relay that records the first protocol word of every connection made through it.
async fn recording_relay(to: u16) -> (u16, Arc<Mutex<Vec<u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = [0u8; 8];
                if client.read_exact(&mut head).await.is_err() {
                    return;
                }
                let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                record.lock().unwrap().push(code);
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_travel_over_tls() {
    let _serial = serial().await;
    let tls = TlsCluster::start().await;
    let (port, seen) = recording_relay(tls.cluster.port()).await;
    let pool = Pool::builder(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    ))
    .rustls()
    .max_size(1)
    .statement_timeout(Duration::from_millis(300))
    .connect()
    .await
    .unwrap();
    let mut db = pool.db();
    let mut conn = db.acquire().await.unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    match conn.execute("SELECT pg_sleep(30)", &[]).await {
        Err(Error::Timeout(t)) => assert_eq!(t.kind(), TimeoutKind::Statement),
        other => panic!("expected a statement timeout, got {other:?}"),
    }
    // The server cancelled it: the backend is idle again and served by the same pool.
    let admin = connect(&tls.cluster.config()).await;
    let idle = eventually(Duration::from_secs(10), || async {
        let row = admin
            .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap();
        row.get::<_, Option<String>>(0).as_deref() == Some("idle")
    })
    .await;
    assert!(
        idle,
        "the sleeping statement was not cancelled on the server"
    );
    assert!(
        tls.cluster
            .log_contents()
            .contains("canceling statement due to user request")
    );
    drop(conn);
    assert!(ssl_of(&pool).await.0);
    pool.close().await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2,
        "one connection and one cancel request: {seen:?}"
    );
    assert!(
        seen.iter().all(|&code| code == SSL_REQUEST),
        "every connection through the relay began with an SSLRequest, none with a plain \
         CancelRequest ({CANCEL_REQUEST}): {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_bounded_by_connect_timeout() {
    // A server that agrees to TLS and then never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 8];
        socket.read_exact(&mut head).await.unwrap();
        socket.write_all(b"S").await.unwrap();
        // Swallow the ClientHello and whatever follows until the client gives up.
        let mut sink = [0u8; 4096];
        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    let attempt = Pool::builder(format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"
    ))
    .rustls()
    .connect_timeout(Duration::from_millis(500))
    .acquire_timeout(Duration::from_secs(5))
    .connect();
    // A watchdog against a hang, not a timing check.
    let result = tokio::time::timeout(Duration::from_secs(60), attempt)
        .await
        .expect("a stalled TLS handshake hung the connect");
    match result {
        Err(Error::Timeout(t)) => assert_eq!(t.kind(), TimeoutKind::Connect, "{t}"),
        Err(e) => panic!("expected a connect timeout, got {e}"),
        Ok(_) => panic!("a server that never finishes the handshake gave a pool"),
    }
    // The pool hung up on the stalled server.
    tokio::time::timeout(Duration::from_secs(60), closed_rx)
        .await
        .expect("the stalled connection was never closed")
        .unwrap();
}
