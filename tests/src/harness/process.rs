//! Process helpers: signals, liveness checks and the detached reaper.
//!
//! Signals are sent by running `kill`, so no `unsafe`/libc is needed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HarnessError;

/// Sends `signal` (a name such as `QUIT`) to `pid`.
pub(crate) fn signal(pid: u32, signal: &str) -> Result<(), HarnessError> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| HarnessError::io(format!("kill -{signal} {pid}"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::io(format!("kill -{signal} {pid}"), status))
    }
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether `pid` is a live postmaster serving `data_dir` (guards against
/// signalling a recycled pid).
pub(crate) fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let data = data_dir.as_os_str().as_encoded_bytes();
    is_alive(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == data)
}

/// The pid recorded in `<data_dir>/postmaster.pid`, if that process is a
/// live postmaster of `data_dir`.
pub(crate) fn postmaster_from_pidfile(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid = text.lines().next()?.trim().parse().ok()?;
    is_postmaster_of(pid, data_dir).then_some(pid)
}

/// Kills a postmaster we do not own as a child: SIGQUIT (immediate
/// shutdown), then SIGKILL after `grace`; waits until it is gone.
pub(crate) fn kill_postmaster_blocking(pid: u32, data_dir: &Path, grace: Duration) {
    if !is_postmaster_of(pid, data_dir) {
        return;
    }
    let _ = signal(pid, "QUIT");
    let _ = signal(pid, "CONT");
    let deadline = Instant::now() + grace;
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_postmaster_of(pid, data_dir) {
        let _ = signal(pid, "KILL");
    }
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Spawns a detached watchdog that, once this process has exited or `dir`
/// has been removed, kills the postmaster recorded in `<data_dir>/postmaster.pid`
/// (SIGQUIT, then SIGKILL) and removes `dir`.
///
/// The shell double-forks (the loop runs in a background job of a shell
/// that exits at once) so it outlives us and is not our zombie; it sits in
/// its own process group, so a Ctrl-C aimed at the test does not kill it.
pub(crate) fn spawn_reaper(dir: &Path, data_dir: &Path) -> Result<(), HarnessError> {
    let dir = shell_quote(&dir.to_string_lossy());
    let data = shell_quote(&data_dir.to_string_lossy());
    let script = format!(
        r#"
T={test_pid}; D={dir}; DATA={data}
alive() {{ [ -r /proc/$1/stat ] && ! sed 's/.*) //' /proc/$1/stat | grep -q '^[ZX]'; }}
ours() {{ alive "$1" && tr '\0' '\n' < /proc/$1/cmdline 2>/dev/null | grep -qxF -- "$DATA"; }}
(
  while kill -0 "$T" 2>/dev/null && [ -d "$D" ]; do sleep 0.2; done
  P=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)
  if [ -n "$P" ] && ours "$P"; then
    kill -QUIT "$P" 2>/dev/null; kill -CONT "$P" 2>/dev/null
    i=0
    while alive "$P" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    ours "$P" && kill -KILL "$P" 2>/dev/null
  fi
  rm -rf "$D"
) </dev/null >/dev/null 2>&1 &
"#,
        test_pid = std::process::id(),
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let status = command
        .status()
        .map_err(|e| HarnessError::io("spawning the reaper shell (sh)", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::io("spawning the reaper shell (sh)", status))
    }
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes `pool-core-pg-<pid>-*` directories left in `tmp` by test
/// processes that no longer exist (their reaper was killed too), killing
/// any postmaster still serving them.
pub(crate) fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pool-core-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = entry.path().join("data");
        if let Some(pm) = postmaster_from_pidfile(&data) {
            kill_postmaster_blocking(pm, &data, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}
