// `crate = "path"` in sql! written wrong: not a string, not a path, given twice, or with
// no statement after it.
use pool_core::sql;

fn main() {
    let _ = sql!(crate = 5, "SELECT 1");
    let _ = sql!(crate = "not a path", "SELECT 1");
    let _ = sql!(crate = "::pool_core", crate = "::pool_core", "SELECT 1");
    let _ = sql!(crate = "::pool_core",);
    let _ = sql!(crate = "::pool_core" "SELECT 1");
}
