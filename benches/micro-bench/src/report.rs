//! The report: the machine, each section's method and table, the targets, and the findings;
//! written as Markdown (printed, and saved as `BENCHMARKS.md` by the full run).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Settings;

/// What was found by profiling, kept with the program so every regenerated report has it.
const FINDINGS: &str = include_str!("../FINDINGS.md");

/// One section of the report (RPC, brokers, ...).
#[derive(Debug, Default)]
pub(crate) struct Section {
    /// The heading.
    pub(crate) title: String,
    /// How it is measured (Markdown).
    pub(crate) method: String,
    /// The results.
    pub(crate) tables: Vec<Table>,
    /// The goals this section checks.
    pub(crate) targets: Vec<Target>,
    /// What was skipped or failed.
    pub(crate) problems: Vec<Problem>,
}

impl Section {
    /// An empty section called `title`.
    pub(crate) fn new(title: &str, method: impl Into<String>) -> Self {
        Section {
            title: title.to_string(),
            method: method.into(),
            ..Default::default()
        }
    }

    /// Records that `what` failed because of `why`.
    pub(crate) fn failed(&mut self, what: &str, why: impl std::fmt::Display) {
        eprintln!("micro-bench: FAILED {what}: {why}");
        self.problems
            .push(Problem::Failed(format!("{what}: {why}")));
    }

    /// Records that `what` was skipped because of `why`.
    pub(crate) fn skipped(&mut self, what: &str, why: impl std::fmt::Display) {
        eprintln!("micro-bench: skipped {what}: {why}");
        self.problems
            .push(Problem::Skipped(format!("{what}: {why}")));
    }
}

/// A table: a header row and the rows under it.
#[derive(Debug, Default)]
pub(crate) struct Table {
    /// Column names.
    pub(crate) header: Vec<String>,
    /// One entry per column each.
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let _ = writeln!(out, "{}", line(&self.header));
        let rule: Vec<String> = self.header.iter().map(|_| "---".to_string()).collect();
        let _ = writeln!(out, "{}", line(&rule));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
    }
}

/// A goal from the issue and what was measured against it. Goals are reported, never asserted.
#[derive(Debug)]
pub(crate) struct Target {
    /// The goal, in words.
    pub(crate) goal: String,
    /// The measured value (the worst case where there are several).
    pub(crate) measured: String,
    /// Whether the goal was met; `None` when nothing could be measured.
    pub(crate) met: Option<bool>,
}

/// Something that did not run.
#[derive(Debug)]
pub(crate) enum Problem {
    /// Not run: its backend is not reachable.
    Skipped(String),
    /// Ran and went wrong.
    Failed(String),
}

/// The whole report.
#[derive(Debug)]
pub(crate) struct Report {
    quick: bool,
    date: String,
    machine: String,
    load_before: String,
    load_after: String,
    elapsed: Duration,
    sections: Vec<Section>,
}

impl Report {
    /// Starts a report: notes the date, the machine and its load.
    pub(crate) fn new(settings: &Settings) -> Self {
        Report {
            quick: settings.quick,
            date: utc_now(),
            machine: machine(),
            load_before: load_average(),
            load_after: String::new(),
            elapsed: Duration::ZERO,
            sections: Vec::new(),
        }
    }

    /// Adds a finished section.
    pub(crate) fn push(&mut self, section: Section) {
        self.sections.push(section);
    }

    /// Notes the end of the run.
    pub(crate) fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        self.load_after = load_average();
    }

    /// `Ok` when everything ran: nothing failed, and nothing was skipped unless skipping is
    /// allowed (quick mode without `MICRO_TEST_REQUIRE_SERVICES=1`).
    pub(crate) fn verdict(&self, settings: &Settings) -> Result<(), String> {
        let mut failed = 0;
        let mut skipped = 0;
        for p in self.sections.iter().flat_map(|s| &s.problems) {
            match p {
                Problem::Failed(_) => failed += 1,
                Problem::Skipped(_) => skipped += 1,
            }
        }
        if failed > 0 {
            return Err(format!("{failed} measurement(s) failed (see the report)"));
        }
        if skipped > 0 && settings.require_services {
            let why = if settings.quick {
                "MICRO_TEST_REQUIRE_SERVICES=1"
            } else {
                "the full run needs every backend"
            };
            return Err(format!(
                "{skipped} measurement(s) skipped for lack of a backend ({why})"
            ));
        }
        Ok(())
    }

    /// The report as Markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmarks\n");
        let command = match (self.quick, cfg!(feature = "mimalloc")) {
            (true, _) => "cargo run --release -p micro-bench -- --quick",
            (false, false) => "cargo run --release -p micro-bench",
            (false, true) => "cargo run --release -p micro-bench --features mimalloc",
        };
        let _ = writeln!(
            out,
            "Regenerate with `cargo run --release -p micro-bench` (2-3 minutes; it rewrites \
             this file). `-- --quick` is the smoke run CI does, which writes nothing. The \
             program, and what each number means, is documented in `benches/micro-bench`.\n"
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| command | `{command}` |");
        let _ = writeln!(out, "| date | {} |", self.date);
        let _ = writeln!(out, "| machine | {} |", self.machine);
        let _ = writeln!(
            out,
            "| load average (1, 5, 15 min) | {} before, {} after |",
            self.load_before, self.load_after
        );
        let _ = writeln!(out, "| run time | {:.0} s |", self.elapsed.as_secs_f64());
        let allocator = if cfg!(feature = "mimalloc") {
            "mimalloc, for raw and Micro rows alike (`--features mimalloc`)"
        } else {
            "the system's (glibc malloc), for raw and Micro rows alike"
        };
        let _ = writeln!(out, "| allocator | {allocator} |");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Numbers from a loaded or shared machine are noisy (a load average above the core \
             count means other work competed for the CPU); compare ratios, which are measured \
             side by side, rather than absolute numbers across runs.\n"
        );

        let targets: Vec<&Target> = self.sections.iter().flat_map(|s| &s.targets).collect();
        if !targets.is_empty() {
            let _ = writeln!(out, "## Targets\n");
            let _ = writeln!(
                out,
                "Goals, not assertions: the run never fails on a number.\n"
            );
            let mut table = Table::new(&["goal", "measured", "met"]);
            for t in targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                table.row(vec![t.goal.clone(), t.measured.clone(), met.to_string()]);
            }
            table.markdown(&mut out);
            let _ = writeln!(out);
        }

        for s in &self.sections {
            let _ = writeln!(out, "## {}\n", s.title);
            let _ = writeln!(out, "{}\n", s.method.trim());
            for t in &s.tables {
                t.markdown(&mut out);
                let _ = writeln!(out);
            }
            for p in &s.problems {
                let _ = match p {
                    Problem::Skipped(why) => writeln!(out, "- skipped ({why})"),
                    Problem::Failed(why) => writeln!(out, "- **failed**: {why}"),
                };
            }
            if !s.problems.is_empty() {
                let _ = writeln!(out);
            }
        }
        let _ = writeln!(out, "{}", FINDINGS.trim());
        out
    }
}

/// Cores and CPU model from `/proc/cpuinfo`, and the kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let processors = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let usable = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(processors);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(", Linux {}", s.trim()))
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!(", {:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    format!("{usable} cores usable ({processors} in /proc/cpuinfo), {model}{memory}{kernel}")
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
