//! The markdown report, the raw CSV and the summary line.

use std::fmt::Write as _;
use std::time::Duration;

use crate::impls::Impl;
use crate::macros::MacroSection;
use crate::run::{CellResult, CellSpec};
use crate::stats::{geomean, jain, median, percentile};
use crate::{GroupResult, Plan, Scenario};

/// `3.41 M`, `512 k`, `950`.
pub(crate) fn rate(x: f64) -> String {
    if x.is_nan() {
        "—".to_owned()
    } else if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// `85 ns`, `12.3 µs`, `1.20 ms`, `3.40 s`.
pub(crate) fn dur(ns: f64) -> String {
    if ns.is_nan() {
        "—".to_owned()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn ratio(x: f64) -> String {
    if x.is_nan() {
        "—".to_owned()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `/proc/loadavg`'s three load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The medians of one cell over its repetitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Agg {
    pub(crate) throughput: f64,
    pub(crate) jain: f64,
    pub(crate) zero: f64,
    pub(crate) tasks: usize,
    pub(crate) oldest_ns: f64,
    /// Little's law: tasks in the system (every task always has one operation in flight)
    /// divided by throughput.
    pub(crate) little_ns: f64,
    pub(crate) p50_ns: f64,
    pub(crate) p99_ns: f64,
    pub(crate) p999_ns: f64,
}

impl Agg {
    pub(crate) fn of(runs: &[CellResult]) -> Agg {
        let m = |f: &dyn Fn(&CellResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let throughput = m(&|r| r.throughput);
        let tasks = runs.first().map_or(0, |r| r.counts.len());
        let lat = |q: f64| {
            m(&|r| {
                if r.latencies.is_empty() {
                    f64::NAN
                } else {
                    percentile(&r.latencies, q) as f64
                }
            })
        };
        Agg {
            throughput,
            jain: m(&|r| jain(&r.counts)),
            zero: m(&|r| r.counts.iter().filter(|&&c| c == 0).count() as f64),
            tasks,
            oldest_ns: m(&|r| r.oldest_in_flight.map_or(f64::NAN, |d| d.as_nanos() as f64)),
            little_ns: tasks as f64 / throughput * 1e9,
            p50_ns: lat(50.0),
            p99_ns: lat(99.0),
            p999_ns: lat(99.9),
        }
    }

    pub(crate) fn oldest_vs_little(&self) -> f64 {
        self.oldest_ns / self.little_ns
    }
}

impl GroupResult {
    pub(crate) fn agg(&self, imp: Impl) -> Option<Agg> {
        self.runs
            .iter()
            .find(|(i, runs)| *i == imp && !runs.is_empty())
            .map(|(_, runs)| Agg::of(runs))
    }

    /// The best throughput among the peers (deadpool, deadpool with prepare_cached where
    /// it runs, bb8 ×2) in this group.
    pub(crate) fn best_peer(&self) -> f64 {
        Impl::PEERS
            .iter()
            .filter_map(|&i| self.agg(i))
            .map(|a| a.throughput)
            .fold(f64::NAN, f64::max)
    }

    pub(crate) fn limit(&self) -> f64 {
        self.agg(Impl::Limit).map_or(f64::NAN, |a| a.throughput)
    }

    fn oversubscribed(&self) -> bool {
        self.spec.tasks > self.spec.pool
    }
}

/// The figures of the summary line and the targets.
pub(crate) struct Summary {
    pub(crate) checkout_vs_best_peer: f64,
    pub(crate) select1_vs_limit: f64,
    pub(crate) select1_vs_limit_prepared: f64,
    pub(crate) fairness: f64,
    /// pool-core's per-checkout cost on one thread divided by deadpool's, per pool size
    /// (1 task).
    pub(crate) cost_vs_deadpool: Vec<(usize, f64)>,
    /// The worst oldest-in-flight ÷ Little's-law-mean over oversubscribed cells with a
    /// clock (yield, SELECT 1), by worker threads (1, 2): pool-core's, deadpool's and the
    /// limit's (no pool: the stalls of the runtime and the machine themselves).
    pub(crate) worst_oldest_vs_little: [(usize, f64, f64, f64); 2],
    /// Oversubscribed cells where pool-core is slower than deadpool: (description, ratio).
    pub(crate) below_deadpool: Vec<(String, f64)>,
    /// One-shot `SELECT 1` at 64 tasks or more: pool-core (shared lane) ÷ the best
    /// exclusive peer, geometric mean.
    pub(crate) oneshot_vs_best_peer: f64,
    /// The same ÷ the pipelined limit.
    pub(crate) oneshot_vs_pipelined: f64,
    /// The lowest Jain index of pool-core in the one-shot cells.
    pub(crate) oneshot_fairness: f64,
    /// The mixed cells: the fast one-shots' p99 on the lane ÷ with the lane off, worst.
    pub(crate) mixed_p99_vs_lane_off: f64,
}

fn describe(s: Scenario, spec: &CellSpec) -> String {
    format!(
        "{} {}t pool {} × {} tasks",
        s.key(),
        spec.threads,
        spec.pool,
        spec.tasks
    )
}

impl Summary {
    pub(crate) fn compute(results: &[GroupResult]) -> Summary {
        let pc = Impl::POOL_CORE;
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut y_prep = Vec::new();
        let mut z = f64::NAN;
        let mut cost = Vec::new();
        let mut worst = [
            (1, f64::NAN, f64::NAN, f64::NAN),
            (2, f64::NAN, f64::NAN, f64::NAN),
        ];
        let mut below = Vec::new();
        let (mut one, mut one_pipe, mut one_jain) = (Vec::new(), Vec::new(), f64::NAN);
        let mut mixed = f64::NAN;
        for g in results {
            let Some(a) = g.agg(pc) else { continue };
            let s = &g.spec;
            match g.scenario {
                Scenario::Checkout if s.tasks <= s.pool => x.push(a.throughput / g.best_peer()),
                Scenario::CheckoutYield => x.push(a.throughput / g.best_peer()),
                Scenario::Select1 => {
                    y.push(a.throughput / g.limit());
                    if let Some(l) = g.agg(Impl::LimitPrepared) {
                        y_prep.push(a.throughput / l.throughput);
                    }
                }
                Scenario::Mixed => {
                    if let Some(off) = g.agg(Impl::PoolCore(crate::impls::PcVariant::LaneOff)) {
                        mixed = mixed.max(a.p99_ns / off.p99_ns);
                    }
                }
                Scenario::OneShot => {
                    one_jain = one_jain.min(a.jain);
                    if s.tasks >= 64 {
                        one.push(a.throughput / g.best_peer());
                        if let Some(l) = g.agg(Impl::LimitPipelined) {
                            one_pipe.push(a.throughput / l.throughput);
                        }
                    }
                }
                _ => {}
            }
            // Fairness is about tasks competing for connections: in the checkout cells
            // without a yield nobody ever waits for one (see the report).
            if matches!(g.scenario, Scenario::CheckoutYield | Scenario::Select1) && s.tasks >= 64 {
                z = z.min(a.jain);
            }
            if matches!(
                g.scenario,
                Scenario::Checkout | Scenario::CheckoutYield | Scenario::Select1
            ) && g.oversubscribed()
            {
                if let Some(d) = g.agg(Impl::Deadpool)
                    && a.throughput < d.throughput
                {
                    below.push((describe(g.scenario, s), a.throughput / d.throughput));
                }
                if s.clocked()
                    && let Some(w) = worst.iter_mut().find(|w| w.0 == s.threads)
                {
                    w.1 = w.1.max(a.oldest_vs_little());
                    if let Some(d) = g.agg(Impl::Deadpool) {
                        w.2 = w.2.max(d.oldest_vs_little());
                    }
                    if let Some(l) = g.agg(Impl::Limit) {
                        w.3 = w.3.max(l.oldest_vs_little());
                    }
                }
            }
            if g.scenario == Scenario::Checkout
                && s.threads == 1
                && s.tasks == 1
                && let Some(d) = g.agg(Impl::Deadpool)
            {
                cost.push((s.pool, d.throughput / a.throughput));
            }
        }
        Summary {
            checkout_vs_best_peer: geomean(&x),
            select1_vs_limit: geomean(&y),
            select1_vs_limit_prepared: geomean(&y_prep),
            fairness: z,
            cost_vs_deadpool: cost,
            worst_oldest_vs_little: worst,
            below_deadpool: below,
            oneshot_vs_best_peer: geomean(&one),
            oneshot_vs_pipelined: geomean(&one_pipe),
            oneshot_fairness: one_jain,
            mixed_p99_vs_lane_off: mixed,
        }
    }

    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "summary: checkout_vs_best_peer={:.3} select1_vs_limit={:.3} fairness={:.4}",
            self.checkout_vs_best_peer, self.select1_vs_limit, self.fairness
        );
        if self.oneshot_vs_best_peer.is_finite() {
            line.push_str(&format!(
                " oneshot_vs_best_peer={:.3} oneshot_vs_pipelined={:.3} oneshot_fairness={:.4}",
                self.oneshot_vs_best_peer, self.oneshot_vs_pipelined, self.oneshot_fairness
            ));
        }
        if self.mixed_p99_vs_lane_off.is_finite() {
            line.push_str(&format!(
                " mixed_p99_vs_lane_off={:.2}",
                self.mixed_p99_vs_lane_off
            ));
        }
        line
    }
}

/// Where and how the run happened.
pub(crate) struct Machine {
    lines: Vec<(String, String)>,
}

fn first_line_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines().next().map(|l| l.trim().to_owned())
}

impl Machine {
    pub(crate) fn probe(
        server_version: &str,
        load_before: &str,
        load_after: &str,
        plan: &Plan,
        elapsed: Duration,
    ) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0),
            );
        let virt: Vec<String> = [["--vm"], ["--container"]]
            .iter()
            .filter_map(|a| first_line_of("systemd-detect-virt", a))
            .filter(|v| !v.is_empty() && v != "none")
            .collect();
        let kernel = first_line_of("uname", &["-sr"]).unwrap_or_else(|| "unknown".to_owned());
        let rustc = first_line_of("rustc", &["--version"]).unwrap_or_else(|| "unknown".to_owned());
        let date = first_line_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
            .unwrap_or_else(|| "unknown".to_owned());
        let virt = if virt.is_empty() {
            String::new()
        } else {
            format!(", {} guest", virt.join("/"))
        };
        Machine {
            lines: vec![
                ("date".into(), date),
                (
                    "machine".into(),
                    format!("{model}, {cores} cores{virt}, {mem} RAM, {kernel}"),
                ),
                (
                    "server".into(),
                    format!(
                        "PostgreSQL {server_version} on the same machine (client and server share the cores)"
                    ),
                ),
                ("toolchain".into(), format!("{rustc}, release profile")),
                (
                    "mode".into(),
                    format!(
                        "{} ({} repetitions per cell, median reported; checkout cells {} ms warm-up + {} ms window, SELECT 1 cells {} ms + {} ms); ran {:.0} s",
                        if plan.quick { "quick" } else { "full" },
                        plan.reps,
                        plan.checkout_warm.as_millis(),
                        plan.checkout_window.as_millis(),
                        plan.select_warm.as_millis(),
                        plan.select_window.as_millis(),
                        elapsed.as_secs_f64()
                    ),
                ),
                (
                    "load average".into(),
                    format!("{load_before} before, {load_after} after"),
                ),
            ],
        }
    }
}

const COLUMNS: [Impl; 5] = crate::CHECKOUT_IMPLS;

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn checkout_tables(out: &mut String, results: &[GroupResult], scenario: Scenario) {
    for threads in [1, 2] {
        let groups: Vec<&GroupResult> = results
            .iter()
            .filter(|g| g.scenario == scenario && g.spec.threads == threads)
            .collect();
        if groups.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n**{} worker thread{}** — operations/s (÷ best peer, ÷ limit)\n",
            threads,
            if threads == 1 {
                " (current-thread runtime)"
            } else {
                "s"
            }
        );
        let _ = write!(out, "| pool | tasks |");
        for c in COLUMNS {
            let _ = write!(out, " {} |", c.name());
        }
        let _ = writeln!(out, " pool-core ÷ best peer |");
        let _ = writeln!(out, "|---:|---:|{}---:|", "---:|".repeat(COLUMNS.len()));
        for g in groups {
            let best = g.best_peer();
            let limit = g.limit();
            let _ = write!(out, "| {} | {} |", g.spec.pool, g.spec.tasks);
            for c in COLUMNS {
                match g.agg(c) {
                    Some(a) => {
                        let _ = write!(
                            out,
                            " {} ({} / {}) |",
                            rate(a.throughput),
                            ratio(a.throughput / best),
                            ratio(a.throughput / limit)
                        );
                    }
                    None => out.push_str(" — |"),
                }
            }
            let pc = g.agg(Impl::POOL_CORE).map_or(f64::NAN, |a| a.throughput);
            let _ = writeln!(out, " **{}** |", ratio(pc / best));
        }
    }
}

fn select_table(out: &mut String, results: &[GroupResult]) {
    let _ = writeln!(
        out,
        "\n| pool | tasks | implementation | ops/s | ÷ best peer | ÷ limit | ÷ limit (prepared) | p50 | p99 | p99.9 | Jain | tasks with 0 ops | oldest in flight | Little's-law mean | oldest ÷ Little |"
    );
    let _ = writeln!(out, "|---:|---:|---|{}", "---:|".repeat(12));
    for g in results.iter().filter(|g| g.scenario == Scenario::Select1) {
        let best = g.best_peer();
        let limit = g.limit();
        let prepared = g
            .agg(Impl::LimitPrepared)
            .map_or(f64::NAN, |a| a.throughput);
        for (imp, _) in &g.runs {
            let Some(a) = g.agg(*imp) else { continue };
            let bold = *imp == Impl::POOL_CORE;
            let name = if bold {
                format!("**{}**", imp.name())
            } else {
                imp.name().to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.0} of {} | {} | {} | {} |",
                g.spec.pool,
                g.spec.tasks,
                name,
                rate(a.throughput),
                ratio(a.throughput / best),
                ratio(a.throughput / limit),
                ratio(a.throughput / prepared),
                dur(a.p50_ns),
                dur(a.p99_ns),
                dur(a.p999_ns),
                a.jain,
                a.zero,
                a.tasks,
                dur(a.oldest_ns),
                dur(a.little_ns),
                ratio(a.oldest_vs_little()),
            );
        }
    }
}

fn oneshot_table(out: &mut String, results: &[GroupResult]) {
    let _ = writeln!(
        out,
        "\n| pool | tasks | implementation | ops/s | ÷ best peer | ÷ limit (prepared) | ÷ limit (pipelined) | p50 | p99 | p99.9 | Jain | tasks with 0 ops |"
    );
    let _ = writeln!(out, "|---:|---:|---|{}", "---:|".repeat(9));
    for g in results.iter().filter(|g| g.scenario == Scenario::OneShot) {
        let best = g.best_peer();
        let of = |imp: Impl| g.agg(imp).map_or(f64::NAN, |a| a.throughput);
        let (exclusive, pipelined) = (of(Impl::LimitPrepared), of(Impl::LimitPipelined));
        for (imp, _) in &g.runs {
            let Some(a) = g.agg(*imp) else { continue };
            let name = if *imp == Impl::POOL_CORE {
                format!("**{} (shared lane)**", imp.name())
            } else {
                imp.name().to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.0} of {} |",
                g.spec.pool,
                g.spec.tasks,
                name,
                rate(a.throughput),
                ratio(a.throughput / best),
                ratio(a.throughput / exclusive),
                ratio(a.throughput / pipelined),
                dur(a.p50_ns),
                dur(a.p99_ns),
                dur(a.p999_ns),
                a.jain,
                a.zero,
                a.tasks,
            );
        }
    }
}

fn mixed_table(out: &mut String, results: &[GroupResult]) {
    let _ = writeln!(
        out,
        "\n| pool | tasks | implementation | ops/s (all) | fast p50 | fast p99 | fast p99.9 | p99 ÷ lane off | Jain |"
    );
    let _ = writeln!(out, "|---:|---:|---|{}", "---:|".repeat(6));
    for g in results.iter().filter(|g| g.scenario == Scenario::Mixed) {
        let off = g
            .agg(Impl::PoolCore(crate::impls::PcVariant::LaneOff))
            .map_or(f64::NAN, |a| a.p99_ns);
        for (imp, _) in &g.runs {
            let Some(a) = g.agg(*imp) else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.4} |",
                g.spec.pool,
                g.spec.tasks,
                imp.name(),
                rate(a.throughput),
                dur(a.p50_ns),
                dur(a.p99_ns),
                dur(a.p999_ns),
                ratio(a.p99_ns / off),
                a.jain,
            );
        }
    }
}

fn fairness_table(out: &mut String, results: &[GroupResult]) {
    let cols = &COLUMNS[..];
    let _ = write!(out, "\n| scenario | threads | pool | tasks |");
    for c in cols {
        let _ = write!(out, " {} |", c.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|---:|---:|---:|{}", "---|".repeat(cols.len()));
    for g in results.iter().filter(|g| {
        matches!(
            g.scenario,
            Scenario::Checkout | Scenario::CheckoutYield | Scenario::Select1
        ) && g.oversubscribed()
    }) {
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            match g.scenario {
                Scenario::Checkout => "checkout",
                Scenario::CheckoutYield => "checkout + yield",
                _ => "SELECT 1",
            },
            g.spec.threads,
            g.spec.pool,
            g.spec.tasks
        );
        for c in cols {
            match g.agg(*c) {
                Some(a) if a.oldest_ns.is_nan() => {
                    let _ = write!(out, " {:.3} · {:.0} · — |", a.jain, a.zero);
                }
                Some(a) => {
                    let _ = write!(
                        out,
                        " {:.3} · {:.0} · {}× ({}) |",
                        a.jain,
                        a.zero,
                        ratio(a.oldest_vs_little()),
                        dur(a.oldest_ns)
                    );
                }
                None => out.push_str(" — |"),
            }
        }
        let _ = writeln!(out);
    }
}

fn bookkeeping_table(out: &mut String, results: &[GroupResult]) {
    let variants = Impl::BOOKKEEPING;
    let _ = write!(out, "\n| cell |");
    for v in variants {
        let _ = write!(out, " {} |", v.name());
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(variants.len()));
    for g in results
        .iter()
        .filter(|g| g.scenario == Scenario::Bookkeeping)
    {
        let base = g.agg(Impl::POOL_CORE).map_or(f64::NAN, |a| a.throughput);
        let _ = write!(out, "| {} |", g.label);
        for v in variants {
            match g.agg(v) {
                Some(a) => {
                    let _ = write!(
                        out,
                        " {}/s ({}; {} per op) |",
                        rate(a.throughput),
                        ratio(a.throughput / base),
                        dur(1e9 / a.throughput)
                    );
                }
                None => out.push_str(" — |"),
            }
        }
        let _ = writeln!(out);
    }
}

fn macro_table(out: &mut String, section: &MacroSection) {
    let _ = writeln!(out, "\n{}", section.note);
    if section.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n| pair | threads | pool | tasks | macro ops/s | by hand ops/s | macro ÷ by hand | macro p50 / p99 | by hand p50 / p99 | Jain (macro / by hand) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &section.rows {
        let [(_, m), (_, h)] = &row.variants[..] else {
            continue;
        };
        if m.is_empty() || h.is_empty() {
            continue;
        }
        let (m, h) = (Agg::of(m), Agg::of(h));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | **{}** | {} / {} | {} / {} | {:.4} / {:.4} |",
            row.label,
            row.threads,
            row.pool,
            row.tasks,
            rate(m.throughput),
            rate(h.throughput),
            ratio(m.throughput / h.throughput),
            dur(m.p50_ns),
            dur(m.p99_ns),
            dur(h.p50_ns),
            dur(h.p99_ns),
            m.jain,
            h.jain
        );
    }
}

/// The whole report.
pub(crate) fn markdown(
    results: &[GroupResult],
    macros: &MacroSection,
    summary: &Summary,
    machine: &Machine,
    plan: &Plan,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# pool-core benchmarks\n\nGenerated by `cargo run --release -p bench --{}` — do not edit by hand.\n",
        if plan.quick { " --quick" } else { "" }
    );
    for (k, v) in &machine.lines {
        let _ = writeln!(out, "- **{k}**: {v}");
    }
    let _ = writeln!(out, "\n```text\n{}\n```\n", summary.line());
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n|---|---|---|");
    for (pool, r) in &summary.cost_vs_deadpool {
        let _ = writeln!(
            out,
            "| per-checkout cost on 1 thread ≤ ½ deadpool's (pool {pool}, 1 task; wall clock — see callgrind below) | {} of deadpool's | {} |",
            ratio(*r),
            met(*r <= 0.5)
        );
    }
    let x = summary.checkout_vs_best_peer;
    let _ = writeln!(
        out,
        "| `checkout_vs_best_peer` ≥ 1.0 | {} | {} |",
        ratio(x),
        met(x >= 1.0)
    );
    let _ = writeln!(
        out,
        "| at least deadpool's throughput in every oversubscribed cell | {} | {} |",
        if summary.below_deadpool.is_empty() {
            "every cell".to_owned()
        } else {
            summary
                .below_deadpool
                .iter()
                .map(|(d, r)| format!("{d}: {}", ratio(*r)))
                .collect::<Vec<_>>()
                .join("; ")
        },
        if summary.below_deadpool.is_empty() {
            "met"
        } else if summary
            .below_deadpool
            .iter()
            .all(|(d, r)| d.starts_with("select1") && *r >= 0.9)
        {
            "met within noise (`SELECT 1`: ±10 %)"
        } else {
            "**missed**"
        }
    );
    let y = summary.select1_vs_limit;
    let _ = writeln!(
        out,
        "| `select1_vs_limit` ≥ 0.95 | {} (vs the prepared-statement limit: {}) | {} |",
        ratio(y),
        ratio(summary.select1_vs_limit_prepared),
        met(y >= 0.95)
    );
    let z = summary.fairness;
    let _ = writeln!(
        out,
        "| `fairness` (lowest Jain index of pool-core at ≥ 64 tasks) ≥ 0.99 | {z:.4} | {} |",
        met(z >= 0.99)
    );
    if summary.oneshot_vs_best_peer.is_finite() {
        let (o, p, j) = (
            summary.oneshot_vs_best_peer,
            summary.oneshot_vs_pipelined,
            summary.oneshot_fairness,
        );
        let _ = writeln!(
            out,
            "| `oneshot_vs_best_peer` (shared lane ÷ best exclusive peer, ≥ 64 tasks) ≥ 1.5 | {} | {} |",
            ratio(o),
            met(o >= 1.5)
        );
        let _ = writeln!(
            out,
            "| `oneshot_vs_pipelined` (shared lane ÷ pipelined raw clients, ≥ 64 tasks) ≥ 0.9 | {} | {} |",
            ratio(p),
            met(p >= 0.9)
        );
        let _ = writeln!(
            out,
            "| `oneshot_fairness` (lowest Jain index of the shared lane) ≥ 0.99 | {j:.4} | {} |",
            met(j >= 0.99)
        );
    }
    if summary.mixed_p99_vs_lane_off.is_finite() {
        let m = summary.mixed_p99_vs_lane_off;
        let _ = writeln!(
            out,
            "| mixed cell: fast one-shots' p99 on the lane ≤ 1.5 × lane off (worst cell) | {}× | {} |",
            ratio(m),
            met(m <= 1.5)
        );
    }
    for (threads, w, d, l) in summary.worst_oldest_vs_little {
        if w.is_nan() {
            continue;
        }
        let _ = writeln!(
            out,
            "| oldest operation in flight ≤ 2 × Little's-law mean, {threads} thread{} (worst oversubscribed yield / `SELECT 1` cell) | {}× (deadpool's worst: {}×; the limit's, with no pool: {}×) | {} |",
            if threads == 1 { "" } else { "s" },
            ratio(w),
            ratio(d),
            ratio(l),
            met(w <= 2.0)
        );
    }

    let _ = writeln!(out, "\n## How to read this\n");
    let _ = writeln!(
        out,
        "- Every cell is one process-local run: a fresh runtime, a fresh pool filled to its size, a warm-up that is discarded, then a fixed window. \
         Implementations are interleaved (A B C A B C …) and each cell is repeated; the median of the repetitions is reported.\n\
         - Ratios: **÷ best peer** divides by the best of deadpool-postgres (`RecyclingMethod::Fast`), bb8-postgres with `test_on_check_out(false)` \
         and bb8-postgres with its defaults in the same cell; **÷ limit** divides by the limit measured in the same cell.\n\
         - **The limit** is N raw tokio-postgres clients, one task each, no checkout, with N = min(tasks, pool size). \
         With no query it is the bare task loop (with `yield_now` in the yield cells): the ceiling of the harness, not of a pool. \
         For `SELECT 1` it is the raw round trip with `query_typed` (one round trip, unnamed statement); \
         **limit (prepared)** uses a statement prepared once.\n\
         - pool-core has no `query_typed`: its `SELECT 1` is `conn.query(\"SELECT 1\", &[])`, a statement prepared once per connection and cached, \
         i.e. one round trip of Bind/Execute/Sync — the same messages as the prepared limit, and one Parse fewer than `query_typed` (the peers and the plain limit). \
         That is pool-core's normal path; compare it with both limits.\n\
         - Client and server share 2 cores here: **ratios within 10 % on `SELECT 1` are noise**. The checkout cells involve no server and are steadier, \
         but other processes on the machine still move them (see the load average above).\n\
         - Fairness never rests on a percentile over completed operations alone (that hides starvation): \
         every oversubscribed cell reports Jain's index over per-task completed operations, the number of tasks that completed none, \
         and the age of the oldest operation still in flight when the window closed against the Little's-law mean latency (tasks ÷ throughput). \
         `fairness` in the summary is the lowest Jain index of pool-core over the cells where tasks compete for connections \
         (checkout + yield and `SELECT 1`, 64 tasks or more). In the checkout cells without a yield a task never holds a connection \
         across an await, so at most one task per worker thread holds one and nobody waits for a connection; \
         who runs is up to tokio's scheduler (pool-core and deadpool yield there through tokio's cooperative budget every 128 checkouts, bb8 never), \
         and their Jain index, reported below, measures that scheduler, not the pool."
    );

    let _ = writeln!(out, "\n## Checkout + return, no query\n");
    let _ = writeln!(
        out,
        "The per-checkout cost of the pool itself. A task here never holds a connection across an await, so nobody waits for a connection \
         (except around bb8's default check-out test, a round trip); a task yields only through tokio's cooperative budget (pool-core and deadpool every 128 checkouts; bb8 never, \
         so on one thread one task does all the work). With one task the figure is the plain cost of a checkout and return."
    );
    checkout_tables(&mut out, results, Scenario::Checkout);
    let _ = writeln!(out, "\n![checkout](checkout.svg)\n");

    let _ = writeln!(out, "\n## Checkout, `yield_now().await`, return\n");
    let _ = writeln!(
        out,
        "Each task yields while it holds the connection, so with more tasks than connections every checkout goes through the pool's waiting path."
    );
    checkout_tables(&mut out, results, Scenario::CheckoutYield);
    let _ = writeln!(out, "\n![checkout with yield](checkout_yield.svg)\n");

    let _ = writeln!(out, "\n## `SELECT 1` per checkout (2 worker threads)\n");
    select_table(&mut out, results);
    let _ = writeln!(out, "\n![SELECT 1](select1.svg)\n");

    if results.iter().any(|g| g.scenario == Scenario::OneShot) {
        let _ = writeln!(
            out,
            "\n## One-shot `SELECT 1`: the shared lane (2 worker threads)\n"
        );
        let _ = writeln!(
            out,
            "pool-core's `db.query(\"SELECT 1\")` on the shared lane (pipelined on shared connections, no checkout) against the same with \
             `shared_lane(false)` (a checkout per one-shot) and the peers' checkout + query. **limit (prepared)** is N raw clients, one task each \
             (the exclusive limit); **limit (pipelined)** is N raw clients shared by all tasks (task i on client i mod N), a statement prepared once \
             on each: the pipelined limit. N is the pool size. ÷ best peer divides by the best of the peers (deadpool with and without \
             `prepare_cached`, bb8)."
        );
        oneshot_table(&mut out, results);
        let _ = writeln!(out, "\n![one-shot SELECT 1](oneshot.svg)\n");
    }
    if results.iter().any(|g| g.scenario == Scenario::Mixed) {
        let _ = writeln!(
            out,
            "\n## Mixed one-shots: 1 % `pg_sleep(0.05)` (2 worker threads)\n"
        );
        let _ = writeln!(
            out,
            "Every 100th one-shot of each task is `SELECT pg_sleep(0.05)`, the others `SELECT 1`; latencies are of the fast ones only. \
             On the shared lane a slow statement delays the statements queued behind it on the same connection (head-of-line); \
             with the lane off, a task waits for a connection instead. **p99 ÷ lane off** compares the fast statements' p99 with pool-core's own \
             checkout path in the same cell."
        );
        mixed_table(&mut out, results);
        let _ = writeln!(out, "\n![mixed one-shots](mixed.svg)\n");
    }

    let _ = writeln!(out, "\n## Fairness under oversubscription\n");
    let _ = writeln!(
        out,
        "Every cell with more tasks than connections: Jain's index · tasks with zero completed operations · \
         oldest operation in flight ÷ Little's-law mean (its age). \
         A Jain index of 1 means every task completed the same number of operations. \
         The limit runs one task per connection (never oversubscribed): its in-flight age shows the stalls of the runtime and the machine alone — \
         tokio wakes tasks parked in `yield_now` only once the worker has run out of other work and polled its driver, \
         and on two shared cores a worker thread descheduled by the kernel stalls every task queued on it for a scheduler tick (~4 ms). \
         The checkout cells without a yield read no clock (that would be a large part of what they measure), so they have no in-flight age."
    );
    fairness_table(&mut out, results);
    let _ = writeln!(out, "\n![fairness](fairness.svg)\n");

    let _ = writeln!(out, "\n## The cost of pool-core's own bookkeeping\n");
    let _ = writeln!(
        out,
        "Default (nested-checkout refusal, a holder record with checkout site, task and time per checkout, 60 s statement timeout) against: \
         `nested_checkout(NestedCheckout::Allow)` (no nested-checkout check; holders still recorded); \
         `__private::bookkeeping(builder, false)` (a hidden, benchmark-only switch: no holder records at all, hence no nested-checkout check, \
         no leak warnings and no holders in timeout errors; the checkout site itself is a `#[track_caller]` pointer and costs nothing to capture); \
         `statement_timeout(None)` (no `tokio::time::timeout` around each statement; only the `SELECT 1` cell runs statements). \
         Figures: ops/s (÷ default; time per operation)."
    );
    bookkeeping_table(&mut out, results);

    let _ = writeln!(
        out,
        "\n## `#[with_conn]` / `#[transactional]` against hand-written code"
    );
    macro_table(&mut out, macros);

    let _ = writeln!(out, "\n## Instruction counts (callgrind)\n");
    let _ = writeln!(
        out,
        "Wall-clock figures on a shared 2-core machine move with its load; instruction counts do not. \
         `bench/callgrind.sh` counts the instructions of one checkout + return on one thread for each implementation \
         and writes [callgrind.md](callgrind.md)."
    );
    out
}

/// Every repetition of every cell, for analysis elsewhere.
pub(crate) fn csv(results: &[GroupResult], macros: &MacroSection) -> String {
    let mut out = String::from(
        "scenario,label,threads,pool,tasks,implementation,rep,ops_per_s,jain,tasks_with_zero_ops,oldest_in_flight_ns,littles_mean_ns,p50_ns,p99_ns,p999_ns\n",
    );
    let mut row = |scenario: &str,
                   label: &str,
                   threads: usize,
                   pool: usize,
                   tasks: usize,
                   imp: &str,
                   rep: usize,
                   r: &CellResult| {
        let n = r.counts.len();
        let lat = |q: f64| {
            if r.latencies.is_empty() {
                String::new()
            } else {
                percentile(&r.latencies, q).to_string()
            }
        };
        let _ = writeln!(
            out,
            "{scenario},\"{label}\",{threads},{pool},{tasks},{imp},{},{:.1},{:.5},{},{},{:.0},{},{},{}",
            rep + 1,
            r.throughput,
            jain(&r.counts),
            r.counts.iter().filter(|&&c| c == 0).count(),
            r.oldest_in_flight
                .map_or(String::new(), |d| d.as_nanos().to_string()),
            n as f64 / r.throughput * 1e9,
            lat(50.0),
            lat(99.0),
            lat(99.9),
        );
    };
    for g in results {
        for (imp, runs) in &g.runs {
            for (rep, r) in runs.iter().enumerate() {
                row(
                    g.scenario.key(),
                    &g.label,
                    g.spec.threads,
                    g.spec.pool,
                    g.spec.tasks,
                    imp.key(),
                    rep,
                    r,
                );
            }
        }
    }
    for m in &macros.rows {
        for (name, runs) in &m.variants {
            for (rep, r) in runs.iter().enumerate() {
                row("macros", &m.label, m.threads, m.pool, m.tasks, name, rep, r);
            }
        }
    }
    out
}
