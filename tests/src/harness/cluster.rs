//! Private throwaway PostgreSQL clusters owned by the test process.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Config, NoTls};

use super::binaries::{self, Binaries};
use super::process::{self, signal};
use super::setup::{file_len, free_port, port_was_taken, run, template, write_settings};
use super::{HarnessError, error_chain, replace_dbname, unique_suffix};

/// How long [`PrivateCluster::start`] waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the postmaster is killed.
const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before the postmaster is killed.
const IMMEDIATE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Settings every cluster starts with (durability is pointless in tests).
const BASE_SETTINGS: [(&str, &str); 3] = [
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];
/// Lines of server log quoted in errors.
const LOG_TAIL_LINES: usize = 30;

/// Builder for a [`PrivateCluster`]; see [`PrivateCluster::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "call `.start().await` to start the cluster"]
pub struct PrivateClusterBuilder {
    settings: Vec<(String, String)>,
}

impl PrivateClusterBuilder {
    /// Adds a server setting (`postgresql.auto.conf`), e.g.
    /// `.setting("max_connections", "20")`. Later settings override earlier
    /// ones, and all of them override the harness defaults (`fsync=off`,
    /// `synchronous_commit=off`, `full_page_writes=off`).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Creates the cluster (a copy of a per-process `initdb` template),
    /// starts it on a free port and waits until it accepts connections.
    pub async fn start(self) -> Result<PrivateCluster, HarnessError> {
        let binaries =
            binaries::find().map_err(|searched| HarnessError::BinariesNotFound { searched })?;
        let settings = self.settings;
        let cluster = tokio::task::spawn_blocking(move || create(binaries, &settings, None))
            .await
            .map_err(|e| HarnessError::io("creating a private cluster", e))??;
        start_on_free_port(cluster).await
    }

    /// Creates a streaming replica of `primary` (`pg_basebackup -R`, with this builder's
    /// settings over the copied ones), starts it on a free port and waits until it
    /// accepts connections (as a hot standby).
    pub async fn start_replica_of(
        self,
        primary: &PrivateCluster,
    ) -> Result<PrivateCluster, HarnessError> {
        let binaries =
            binaries::find().map_err(|searched| HarnessError::BinariesNotFound { searched })?;
        let settings = self.settings;
        let port = primary.port;
        let cluster = tokio::task::spawn_blocking(move || create(binaries, &settings, Some(port)))
            .await
            .map_err(|e| HarnessError::io("creating a replica", e))??;
        start_on_free_port(cluster).await
    }
}

/// Starts a created cluster, on another free port if its own was taken meanwhile.
async fn start_on_free_port(mut cluster: PrivateCluster) -> Result<PrivateCluster, HarnessError> {
    // The free port may be taken by someone else before the server
    // binds it: retry with another one.
    for _ in 1..5 {
        let log_offset = file_len(&cluster.log_path);
        match cluster.start().await {
            Ok(()) => return Ok(cluster),
            Err(_) if port_was_taken(&cluster.log_path, log_offset) => {
                cluster.port = free_port()?;
                cluster.url = cluster_url(cluster.port);
            }
            Err(e) => return Err(e),
        }
    }
    cluster.start().await.map(|()| cluster)
}

/// A throwaway PostgreSQL cluster owned by one test, for tests that must
/// stop, restart, pause or reconfigure the server.
///
/// It listens on `127.0.0.1:<port()>` (trust authentication, superuser
/// `postgres`) and on a Unix socket in [`socket_dir`](Self::socket_dir).
/// Dropping it shuts the postmaster down immediately (SIGQUIT, then SIGKILL)
/// and removes its directory; a detached reaper does the same if the test
/// process dies first.
#[derive(Debug)]
pub struct PrivateCluster {
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    url: String,
    binaries: Binaries,
    run_as: Option<(u32, u32)>,
    child: tokio::sync::Mutex<Option<Child>>,
    /// The postmaster's pid while it runs, else 0.
    pid: AtomicU32,
}

impl PrivateCluster {
    /// Returns a builder to configure server settings before starting.
    pub fn builder() -> PrivateClusterBuilder {
        PrivateClusterBuilder::default()
    }

    /// Starts a cluster with the default settings.
    pub async fn start_default() -> Result<Self, HarnessError> {
        Self::builder().start().await
    }

    /// The admin URL (database `postgres`, user `postgres`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A URL for database `dbname` on this cluster.
    pub fn url_for(&self, dbname: &str) -> String {
        replace_dbname(&self.url, dbname)
    }

    /// A connection config for the `postgres` database on this cluster.
    pub fn config(&self) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        config
    }

    /// The TCP port the cluster listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the cluster's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The postmaster's pid while it is running.
    pub fn pid(&self) -> Option<u32> {
        let pid = self.pid.load(Ordering::SeqCst);
        (pid != 0 && process::is_alive(pid)).then_some(pid)
    }

    /// Whether the postmaster is running (a paused one counts as running).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Starts the server (after a stop: same port and data) and waits up to
    /// 30 s until it accepts connections. Does nothing if it is running.
    pub async fn start(&self) -> Result<(), HarnessError> {
        let mut guard = self.child.lock().await;
        if let Some(child) = guard.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        *guard = None;
        let child = self.spawn_postmaster()?;
        self.pid.store(child.id(), Ordering::SeqCst);
        // Stored before waiting, so a cancelled start still leaves it owned.
        let child = guard.insert(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.pid.store(0, Ordering::SeqCst);
                *guard = None;
                return Err(self.error(format!("postgres exited during startup ({status})")));
            }
            let mut config = self.config();
            config.connect_timeout(Duration::from_secs(1));
            if let Ok(Ok((client, connection))) =
                tokio::time::timeout(Duration::from_secs(2), config.connect(NoTls)).await
            {
                drop(client);
                let _ = connection.await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.pid.store(0, Ordering::SeqCst);
                *guard = None;
                return Err(self.error(format!(
                    "did not accept connections on port {} within {START_TIMEOUT:?}",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Fast shutdown (SIGINT: disconnects clients, checkpoints); waits for
    /// the postmaster to exit (SIGKILL after 30 s).
    pub async fn stop_fast(&self) -> Result<(), HarnessError> {
        self.stop("INT", FAST_STOP_TIMEOUT).await
    }

    /// Immediate shutdown (SIGQUIT: like a crash, recovery on next start);
    /// waits for the postmaster to exit (SIGKILL after 10 s).
    pub async fn stop_immediate(&self) -> Result<(), HarnessError> {
        self.stop("QUIT", IMMEDIATE_STOP_TIMEOUT).await
    }

    /// [`stop_fast`](Self::stop_fast) then [`start`](Self::start).
    pub async fn restart_fast(&self) -> Result<(), HarnessError> {
        self.stop_fast().await?;
        self.start().await
    }

    /// [`stop_immediate`](Self::stop_immediate) then [`start`](Self::start).
    pub async fn restart_immediate(&self) -> Result<(), HarnessError> {
        self.stop_immediate().await?;
        self.start().await
    }

    /// Promotes a replica to a primary (`pg_promote()`, waiting until it is done).
    pub async fn promote(&self) -> Result<(), HarnessError> {
        let fail = |e: tokio_postgres::Error| self.error(error_chain(&e));
        let (client, connection) = self.config().connect(NoTls).await.map_err(fail)?;
        let connection = tokio::spawn(connection);
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, 30)", &[])
            .await
            .map_err(fail)?
            .get(0);
        drop(client);
        let _ = connection.await;
        if promoted {
            Ok(())
        } else {
            Err(self.error("pg_promote() did not finish within 30 s"))
        }
    }

    /// Freezes the postmaster (SIGSTOP): new connections hang until
    /// [`resume`](Self::resume); existing backends keep running.
    pub fn pause(&self) -> Result<(), HarnessError> {
        signal(self.running_pid()?, "STOP")
    }

    /// Unfreezes the postmaster (SIGCONT) after [`pause`](Self::pause).
    pub fn resume(&self) -> Result<(), HarnessError> {
        signal(self.running_pid()?, "CONT")
    }

    /// Sets a server setting in `postgresql.auto.conf` and, if the server
    /// runs, reloads it (SIGHUP) and waits until new sessions see the
    /// reloaded configuration. Settings that need a restart take effect on
    /// the next [`start`](Self::start).
    pub async fn set(&self, name: &str, value: &str) -> Result<(), HarnessError> {
        let before = match self.pid() {
            Some(_) => Some(self.conf_load_time().await?),
            None => None,
        };
        write_settings(&self.data_dir, &[(name, value)])?;
        let Some(before) = before else {
            return Ok(());
        };
        signal(self.running_pid()?, "HUP")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.conf_load_time().await? == before {
            if Instant::now() >= deadline {
                return Err(self.error("configuration reload not seen within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Writes `contents` to `name` in the data directory, owned by the server's OS user
    /// with permission bits `mode` (a TLS key must be `0o600`), and returns its path.
    pub fn write_file(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<PathBuf, HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data_dir.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| HarnessError::io(format!("chmod {}", path.display()), e))?;
        binaries::chown_to_server_user(&path)?;
        Ok(path)
    }

    /// Everything the server has logged so far.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn running_pid(&self) -> Result<u32, HarnessError> {
        self.pid()
            .ok_or_else(|| self.error("the server is not running"))
    }

    async fn conf_load_time(&self) -> Result<String, HarnessError> {
        let fail = |e: tokio_postgres::Error| self.error(error_chain(&e));
        let (client, connection) = self.config().connect(NoTls).await.map_err(fail)?;
        let connection = tokio::spawn(connection);
        let row = client
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await
            .map_err(fail)?;
        drop(client);
        let _ = connection.await;
        Ok(row.get(0))
    }

    async fn stop(&self, sig: &str, grace: Duration) -> Result<(), HarnessError> {
        let mut guard = self.child.lock().await;
        let Some(child) = guard.as_mut() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            signal(child.id(), sig)?;
            // A paused postmaster only handles the signal once continued.
            let _ = signal(child.id(), "CONT");
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        *guard = None;
        self.pid.store(0, Ordering::SeqCst);
        Ok(())
    }

    fn spawn_postmaster(&self) -> Result<Child, HarnessError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let mut command = Command::new(self.binaries.postgres());
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command.spawn().map_err(|e| {
            HarnessError::io(
                format!("spawning {}", self.binaries.postgres().display()),
                e,
            )
        })
    }

    fn error(&self, message: impl Into<String>) -> HarnessError {
        HarnessError::Cluster {
            data_dir: self.data_dir.display().to_string(),
            message: message.into(),
            log_tail: process::tail(&self.log_path, LOG_TAIL_LINES),
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().take()
            && matches!(child.try_wait(), Ok(None))
        {
            let _ = signal(child.id(), "QUIT");
            let _ = signal(child.id(), "CONT");
            let deadline = Instant::now() + IMMEDIATE_STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A postmaster we lost the handle of (e.g. a cancelled start).
        if let Some(pid) = process::postmaster_from_pidfile(&self.data_dir) {
            process::kill_postmaster_blocking(pid, &self.data_dir, IMMEDIATE_STOP_TIMEOUT);
        }
        for _ in 0..3 {
            if std::fs::remove_dir_all(&self.root).is_ok() || !self.root.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cluster_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Creates the cluster directory (blocking): copy of the template — or, with
/// `replica_of` (a primary's port), a base backup of that primary set up to stream from
/// it — socket dir, settings, reaper. Does not start the server.
fn create(
    binaries: Binaries,
    settings: &[(String, String)],
    replica_of: Option<u16>,
) -> Result<PrivateCluster, HarnessError> {
    let run_as = binaries::run_as()?;
    let template = template(&binaries)?;
    let root = std::env::temp_dir().join(format!(
        "pool-core-pg-{}-{}",
        std::process::id(),
        unique_suffix().replace('_', "-")
    ));
    std::fs::create_dir(&root)
        .map_err(|e| HarnessError::io(format!("creating {}", root.display()), e))?;
    let port = free_port()?;
    // From here on, dropping `cluster` (or the reaper) cleans up.
    let cluster = PrivateCluster {
        data_dir: root.join("data"),
        socket_dir: root.join("sock"),
        log_path: root.join("server.log"),
        root,
        port,
        url: cluster_url(port),
        binaries,
        run_as,
        child: tokio::sync::Mutex::new(None),
        pid: AtomicU32::new(0),
    };
    process::spawn_reaper(&cluster.root, &cluster.data_dir)?;
    binaries::chown_to_server_user(&cluster.root)?;
    match replica_of {
        None => run(Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&cluster.data_dir))?,
        Some(primary_port) => {
            let mut command = Command::new(cluster.binaries.bindir.join("pg_basebackup"));
            command
                .arg("-D")
                .arg(&cluster.data_dir)
                .args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
                .args([
                    "-U",
                    "postgres",
                    "-X",
                    "stream",
                    "-R",
                    "-c",
                    "fast",
                    "--no-sync",
                ])
                .current_dir(&cluster.root);
            if let Some((uid, gid)) = run_as {
                command.uid(uid).gid(gid);
            }
            run(&mut command)?;
        }
    }
    std::fs::create_dir(&cluster.socket_dir)
        .map_err(|e| HarnessError::io(format!("creating {}", cluster.socket_dir.display()), e))?;
    binaries::chown_to_server_user(&cluster.socket_dir)?;
    let all: Vec<(&str, &str)> = BASE_SETTINGS
        .iter()
        .copied()
        .chain(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    write_settings(&cluster.data_dir, &all)?;
    Ok(cluster)
}
