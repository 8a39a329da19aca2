//! The fault suite (docs/design.md#performance-targets, issue 13): each fault made for
//! real against the `stockpile serve` binary, a real Mosquitto with persistence, InfluxDB
//! 1.6 and an SMTP server, while gateways publish at a steady rate and alerts fire; each
//! ends with counts. Exits 1 if anything the broker acknowledged is missing from SQLite
//! or InfluxDB, or any notification was delivered twice (or not at all).
//!
//! ```text
//! scripts/faults            # the long form, release build (BENCHMARKS.md "Faults")
//! scripts/faults --quick    # each fault shortened (scripts/test runs this)
//! cargo run -p server --example faults -- --quick --only 3,4
//! ```
//!
//! Needs root for the disk-full fault (a tmpfs), the link-loss and the cluster-cut
//! faults (a network namespace), and `mosquitto`, `influxd`, python3-aiosmtpd, `ip` and
//! `mount`. Fault 8 ([`cluster_cut`]) runs a cluster instance and a city instance joined
//! by a Mosquitto bridge, and cuts the bridge's link.

mod cluster_cut;
mod fault;
mod gateways;
mod plan;
mod rig;
mod tally;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use fault::{Fault, Outcome};

#[derive(Debug, Parser)]
#[command(about = "Runs each fault against the real stockpile binary and counts what survived")]
struct Args {
    /// Each fault shortened (InfluxDB down 10 s, SMTP down 20 s, ...), for scripts/test.
    #[arg(long)]
    quick: bool,
    /// The stockpile binary [default: `stockpile` in the target dir this program was
    /// built into].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Readings a second the gateways publish [default: 200 quick, 1000 long].
    #[arg(long)]
    rate: Option<u32>,
    /// Only these faults, by number (1-8), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<usize>,
}

/// What every fault shares: the binary, the pace, and one InfluxDB (a database each).
#[derive(Debug)]
pub struct Kit {
    pub bin: PathBuf,
    pub quick: bool,
    pub rate: u32,
    /// How often the alerting towns swing across the target.
    pub swing_every: Duration,
    /// Longest wait for recovery, and again for everything to settle.
    pub deadline: Duration,
    pub influx: testkit::Influx1,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults: Vec<(usize, Fault)> = fault::ALL
        .iter()
        .enumerate()
        .map(|(i, f)| (i + 1, *f))
        .filter(|(n, _)| args.only.is_empty() || args.only.contains(n))
        .collect();
    if let Err(problem) = preflight(&faults) {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    let bin = match args.bin.clone().map_or_else(default_bin, Ok) {
        Ok(bin) if bin.is_file() => bin,
        Ok(bin) => {
            eprintln!(
                "error: no stockpile binary at {} (cargo build -p server, or pass --bin)",
                bin.display()
            );
            return ExitCode::from(2);
        }
        Err(problem) => {
            eprintln!("error: {problem}");
            return ExitCode::from(2);
        }
    };
    let rate = args.rate.unwrap_or(if args.quick { 200 } else { 1000 });
    eprintln!(
        "faults: {} form, {} at {rate} readings/s",
        if args.quick { "quick" } else { "long" },
        bin.display()
    );
    let mut kit = Kit {
        bin,
        quick: args.quick,
        rate,
        swing_every: Duration::from_secs(if args.quick { 2 } else { 3 }),
        deadline: Duration::from_secs(if args.quick { 120 } else { 600 }),
        influx: testkit::Influx1::start(),
    };

    let began = Instant::now();
    let mut results = Vec::new();
    for (number, fault) in faults {
        eprintln!("\n[{number}] {} ...", fault.title(kit.quick));
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fault::run(&mut kit, fault, number)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".into());
            // A fault that failed half-way must not leave InfluxDB frozen or down.
            kit.influx.resume();
            if !kit.influx.is_running() {
                kit.influx.start_again();
            }
            Outcome {
                problems: vec![format!("the run failed: {message}")],
                ..Outcome::default()
            }
        });
        report_one(&outcome, started.elapsed());
        results.push((number, fault, outcome));
    }

    println!("{}", table(&results, kit.quick));
    let failed = results
        .iter()
        .filter(|(_, _, o)| !o.problems.is_empty())
        .count();
    eprintln!(
        "\nfaults: {} of {} held, in {:.0} s",
        results.len() - failed,
        results.len(),
        began.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Everything the chosen faults need, checked before the first starts: a missing tool
/// fails the run with its name, never skips a fault.
fn preflight(faults: &[(usize, Fault)]) -> Result<(), String> {
    let needs_root = faults
        .iter()
        .any(|(_, f)| matches!(f, Fault::DiskFull | Fault::LinkLoss | Fault::ClusterCut));
    let mut tools = vec![("mosquitto", "mosquitto"), ("influxd", "influxdb")];
    if faults.iter().any(|(_, f)| *f == Fault::DiskFull) {
        tools.extend([("mount", "mount"), ("umount", "mount")]);
    }
    if faults
        .iter()
        .any(|(_, f)| matches!(f, Fault::LinkLoss | Fault::ClusterCut))
    {
        tools.push(("ip", "iproute2"));
    }
    for (tool, package) in tools {
        std::panic::catch_unwind(|| testkit::require_binary(tool, package)).map_err(|_| {
            format!("{tool} not found (apt-get install {package}); scripts/test installs it")
        })?;
    }
    if needs_root && !nix::unistd::geteuid().is_root() {
        return Err(
            "faults 6 (disk full: a tmpfs), 7 (link loss) and 8 (cluster cut: network \
             namespaces) need root; run as root or choose others with --only"
                .into(),
        );
    }
    Ok(())
}

/// `stockpile` beside the `examples/` dir this program runs from.
fn default_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("stockpile"))
        .ok_or_else(|| format!("cannot find the target dir of {}", exe.display()))
}

fn report_one(o: &Outcome, took: Duration) {
    let recovered = o.recovered_after.map_or("not recovered".into(), |d| {
        format!("recovered in {:.1} s", d.as_secs_f64())
    });
    eprintln!(
        "    published {}, acked {}, stored {}, in InfluxDB {}, notifications {}/{}/{} \
         (due/delivered/duplicated), {recovered}; {:.0} s",
        o.published,
        o.acked,
        o.stored,
        o.in_influx,
        o.notifications.due,
        o.notifications.delivered,
        o.notifications.duplicated,
        took.as_secs_f64()
    );
    for note in &o.notes {
        eprintln!("    {note}");
    }
    for problem in &o.problems {
        eprintln!("    FAILED: {problem}");
    }
    if !o.log_excerpt.is_empty() {
        eprintln!("    stockpile's warnings and errors:");
        for line in &o.log_excerpt {
            eprintln!("      {line}");
        }
    }
    if o.problems.is_empty() {
        eprintln!("    held");
    }
}

/// The results as a Markdown table, for BENCHMARKS.md.
fn table(results: &[(usize, Fault, Outcome)], quick: bool) -> String {
    let mut out = String::from(
        "\n| # | Fault | Published | Acked | Stored | In InfluxDB | Notifications due / delivered / duplicated | Recovered in | Result |\n\
         |---|-------|----------:|------:|-------:|------------:|:------------------------------------------:|-------------:|--------|\n",
    );
    for (number, fault, o) in results {
        let recovered = o
            .recovered_after
            .map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        let result = if o.problems.is_empty() {
            "held"
        } else {
            "FAILED"
        };
        let in_influx = if o.no_influx {
            "—".to_owned()
        } else {
            o.in_influx.to_string()
        };
        out.push_str(&format!(
            "| {number} | {} | {} | {} | {} | {in_influx} | {} / {} / {} | {recovered} | {result} |\n",
            fault.title(quick),
            o.published,
            o.acked,
            o.stored,
            o.notifications.due,
            o.notifications.delivered,
            o.notifications.duplicated,
        ));
    }
    for (number, _, o) in results {
        for note in &o.notes {
            out.push_str(&format!("\n[{number}] {note}\n"));
        }
    }
    out
}
