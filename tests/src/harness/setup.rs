//! Blocking helpers for creating private clusters: the `initdb` template,
//! `postgresql.auto.conf` editing, free ports.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::binaries::{self, Binaries};
use super::{HarnessError, process, unique_suffix};

/// The data directory of a cluster `initdb`ed once per process.
pub(crate) fn template(binaries: &Binaries) -> Result<&'static Path, HarnessError> {
    static TEMPLATE: OnceLock<Result<PathBuf, HarnessError>> = OnceLock::new();
    let result = TEMPLATE.get_or_init(|| {
        let tmp = std::env::temp_dir();
        process::remove_stale_dirs(&tmp);
        let root = tmp.join(format!(
            "pool-core-pg-{}-template-{}",
            std::process::id(),
            unique_suffix().replace('_', "-")
        ));
        let data = root.join("data");
        std::fs::create_dir(&root)
            .map_err(|e| HarnessError::io(format!("creating {}", root.display()), e))?;
        process::spawn_reaper(&root, &data)?;
        binaries::chown_to_server_user(&root)?;
        let mut command = Command::new(binaries.initdb());
        command
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .current_dir(&root);
        if let Some((uid, gid)) = binaries::run_as()? {
            command.uid(uid).gid(gid);
        }
        run(&mut command)?;
        Ok(data)
    });
    result.as_deref().map_err(Clone::clone)
}

/// Runs a command to completion, failing with its output if it fails.
pub(crate) fn run(command: &mut Command) -> Result<(), HarnessError> {
    let context = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io(&context, e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(HarnessError::io(
        context,
        format!(
            "{}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

/// Sets `settings` in `<data_dir>/postgresql.auto.conf`, replacing earlier
/// values of the same names.
pub(crate) fn write_settings(
    data_dir: &Path,
    settings: &[(&str, &str)],
) -> Result<(), HarnessError> {
    let path = data_dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    for (name, value) in settings {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(HarnessError::io(
                format!("setting {name:?}"),
                "invalid setting name",
            ));
        }
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.split('=')
                    .next()
                    .is_none_or(|key| !key.trim().eq_ignore_ascii_case(name))
            })
            .collect();
        let new_line = format!("{name} = '{}'", value.replace('\'', "''"));
        lines.push(&new_line);
        text = lines.join("\n") + "\n";
    }
    std::fs::write(&path, text)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    binaries::chown_to_server_user(&path)
}

/// A currently free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| HarnessError::io("finding a free port on 127.0.0.1", e))
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Whether the server log written since `offset` reports a taken port.
pub(crate) fn port_was_taken(log: &Path, offset: u64) -> bool {
    let text = std::fs::read(log).unwrap_or_default();
    let new = text
        .get(usize::try_from(offset).unwrap_or(0)..)
        .unwrap_or_default();
    String::from_utf8_lossy(new).contains("could not bind")
}
