//! Locating the PostgreSQL server binaries and the OS user to run them as.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::HarnessError;

/// Environment variable that, when set, is the only directory searched.
pub(crate) const BINDIR_ENV: &str = "POOL_CORE_PG_BINDIR";

/// The directory holding `initdb` and `postgres`.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) bindir: PathBuf,
}

impl Binaries {
    pub(crate) fn initdb(&self) -> PathBuf {
        self.bindir.join("initdb")
    }

    pub(crate) fn postgres(&self) -> PathBuf {
        self.bindir.join("postgres")
    }
}

/// Finds the binaries once per process; on failure returns every location
/// searched (with why it was rejected).
pub(crate) fn find() -> Result<Binaries, Vec<String>> {
    static FOUND: OnceLock<Result<Binaries, Vec<String>>> = OnceLock::new();
    FOUND.get_or_init(search).clone()
}

fn usable(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

fn search() -> Result<Binaries, Vec<String>> {
    let mut searched = Vec::new();
    let try_dir = |dir: PathBuf, label: String, searched: &mut Vec<String>| {
        if usable(&dir) {
            Some(Binaries { bindir: dir })
        } else {
            searched.push(format!("{label} (no initdb/postgres there)"));
            None
        }
    };

    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        let label = format!("{BINDIR_ENV}={}", dir.display());
        return try_dir(dir, label, &mut searched).ok_or(searched);
    }

    match Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let label = format!("`pg_config --bindir` = {}", dir.display());
            if let Some(found) = try_dir(dir, label, &mut searched) {
                return Ok(found);
            }
        }
        Ok(out) => searched.push(format!("`pg_config --bindir` (failed: {})", out.status)),
        Err(e) => searched.push(format!("`pg_config --bindir` (not runnable: {e})")),
    }

    let mut versioned: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    match versioned.into_iter().rev().find(|(_, dir)| usable(dir)) {
        Some((_, bindir)) => return Ok(Binaries { bindir }),
        None => searched.push("/usr/lib/postgresql/*/bin (no version with initdb)".to_owned()),
    }

    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(bindir) = std::env::split_paths(&path).find(|dir| usable(dir)) {
        return Ok(Binaries { bindir });
    }
    searched.push(format!("initdb on PATH ({})", Path::new(&path).display()));
    Err(searched)
}

/// The uid/gid to run the server as: `None` to run as ourselves, or the
/// `postgres` user's ids when we are root (PostgreSQL refuses to run as root).
pub(crate) fn run_as() -> Result<Option<(u32, u32)>, HarnessError> {
    static RUN_AS: OnceLock<Result<Option<(u32, u32)>, HarnessError>> = OnceLock::new();
    RUN_AS
        .get_or_init(|| {
            let euid = std::fs::metadata("/proc/self")
                .map_err(|e| HarnessError::io("reading /proc/self to find our uid", e))?
                .uid();
            if euid != 0 {
                return Ok(None);
            }
            let passwd = std::fs::read_to_string("/etc/passwd")
                .map_err(|e| HarnessError::io("reading /etc/passwd", e))?;
            passwd
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    match fields.as_slice() {
                        ["postgres", _, uid, gid, ..] => {
                            Some((uid.parse().ok()?, gid.parse().ok()?))
                        }
                        _ => None,
                    }
                })
                .map(Some)
                .ok_or_else(|| {
                    HarnessError::io(
                        "running as root",
                        "PostgreSQL refuses to run as root and /etc/passwd has no `postgres` \
                         user to run it as",
                    )
                })
        })
        .clone()
}

/// Gives `path` to the user the server runs as (no-op when not root).
pub(crate) fn chown_to_server_user(path: &Path) -> Result<(), HarnessError> {
    if let Some((uid, gid)) = run_as()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}
