//! A PgBouncer (transaction pooling) started by a test, from the installed `pgbouncer`
//! binary (Debian package `pgbouncer`). It runs as the `postgres` OS user when the tests
//! run as root, listens on `127.0.0.1:<free port>`, trusts every user listed, and is
//! killed when dropped — or, if the test process dies first, by a detached reaper.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// Where `pgbouncer` is, or why it cannot be used.
pub fn binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.push(PathBuf::from("/usr/local/sbin"));
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.into_iter()
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "pgbouncer is not installed (searched PATH, /usr/sbin, /usr/local/sbin, /usr/local/bin); \
             install it with `apt-get install -y pgbouncer` (CI does this in .ci/run)"
                .to_owned()
        })
}

/// The uid/gid of the `postgres` user when running as root (PgBouncer refuses root).
fn run_as() -> Result<Option<(u32, u32)>, String> {
    let euid = std::fs::metadata("/proc/self")
        .map_err(|e| format!("reading /proc/self: {e}"))?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("reading /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(
            |line| match line.split(':').collect::<Vec<_>>().as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            },
        )
        .map(Some)
        .ok_or_else(|| {
            "running as root and there is no `postgres` user to run pgbouncer as".to_owned()
        })
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn chown(path: &Path, ids: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of `127.0.0.1:upstream_port`, with
    /// `pool_size` server connections per database and user, trusting `users`. Waits
    /// until it accepts connections.
    pub async fn start(
        upstream_port: u16,
        pool_size: usize,
        users: &[&str],
    ) -> Result<Self, String> {
        let binary = binary()?;
        let ids = run_as()?;
        let dir = std::env::temp_dir().join(format!(
            "pool-core-pgbouncer-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        chown(&dir, ids)?;
        let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("userlist.txt"), userlist)
            .map_err(|e| format!("writing userlist.txt: {e}"))?;
        chown(&dir.join("userlist.txt"), ids)?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let ini = format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={upstream_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {dir}/userlist.txt\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 min_pool_size = 0\n\
                 reserve_pool_size = 0\n\
                 max_client_conn = 1000\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n\
                 admin_users = postgres\n",
                dir = dir.display()
            );
            let ini_path = dir.join("pgbouncer.ini");
            std::fs::write(&ini_path, ini).map_err(|e| format!("writing pgbouncer.ini: {e}"))?;
            chown(&ini_path, ids)?;
            let mut command = Command::new(&binary);
            command
                .arg(&ini_path)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            if let Some((uid, gid)) = ids {
                command.uid(uid).gid(gid);
            }
            let mut child = command
                .spawn()
                .map_err(|e| format!("starting {}: {e}", binary.display()))?;
            spawn_reaper(child.id(), &dir);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "pgbouncer exited at startup ({status}); its log:\n{}",
                        std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
                    );
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(PgBouncer { child, dir, port });
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "pgbouncer did not accept connections within 10 s".to_owned();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(last_error)
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection config for `dbname` as `user` through PgBouncer.
    pub fn config(&self, dbname: &str, user: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(dbname);
        config
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A detached shell that kills PgBouncer and removes its directory once this process is
/// gone.
fn spawn_reaper(pgbouncer_pid: u32, dir: &Path) {
    let dir = format!("'{}'", dir.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "( while kill -0 {me} 2>/dev/null && kill -0 {pgb} 2>/dev/null; do sleep 0.5; done; \
           kill -KILL {pgb} 2>/dev/null; rm -rf {dir} ) </dev/null >/dev/null 2>&1 &",
        me = std::process::id(),
        pgb = pgbouncer_pid,
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let _ = command.status();
}
