//! `stockpile`: parses the command line and maps outcomes to exit codes (0 ok, 1 failed
//! check or error, 2 usage, which clap handles).

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use server::cli::{self, Cli, Command};
use server::config::{self, LogFormat};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file, shard } => {
            match cli::check_config(&file, shard, &cli::stockpile_env()) {
                Ok(summary) => {
                    // `stockpile check-config … | head` closes the pipe early: that is
                    // the reader's choice, not an error (print! would panic on it).
                    let mut out = std::io::stdout().lock();
                    if let Err(e) = write!(out, "{summary}").and_then(|()| out.flush())
                        && e.kind() != std::io::ErrorKind::BrokenPipe
                    {
                        return Err(e.into());
                    }
                    for warning in &summary.warnings {
                        eprintln!("warning: {}: {warning}", file.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => Ok(report_config_errors(&errors)),
            }
        }
        Command::Demo {
            scenario,
            speed,
            port,
            mqtt_port,
            seed,
            smtp,
        } => {
            init_logging(&config::LogConfig {
                // rumqttd reports every client that goes away at shutdown as an error; the demo
                // prints its own account of the broker, so keep its logs out.
                level: "warn,server=info,rumqttd=off".into(),
                ..config::LogConfig::default()
            });
            let options = server::demo::DemoOptions {
                scenario,
                speed,
                port,
                mqtt_port,
                seed,
                smtp,
            };
            run_until_signal(|shutdown| server::demo::run(options, shutdown))
        }
        Command::Serve { config, shard } => {
            let env = cli::stockpile_env();
            let loaded = match cli::load(&config, shard, &env) {
                Ok(loaded) => loaded,
                Err(errors) => return Ok(report_config_errors(&errors)),
            };
            init_logging(&loaded.config.log);
            // SIGHUP and `POST /api/v1/registry/reload` read the same file again.
            let source = server::reload::ReloadSource {
                file: config,
                shard,
                env,
            };
            run_until_signal(|shutdown| server::serve::run_reloadable(loaded, source, shutdown))
        }
    }
}

/// Runs `job` on a multi-threaded runtime until it ends or SIGINT/SIGTERM cancels it;
/// exit code 0 on a clean stop, 1 when it failed.
fn run_until_signal<F, Fut>(job: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stockpile")
        .build()?;
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        server::serve::cancel_on_signals(shutdown.clone());
        job(shutdown).await
    });
    // The embedded broker's threads do not stop on their own; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            tracing::error!(message = "Stockpile stopped on an error.", error = %format!("{error:#}"));
            eprintln!("error: {error:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn report_config_errors(errors: &config::ConfigErrors) -> ExitCode {
    for error in &errors.0 {
        eprintln!("{error}");
    }
    eprintln!("{}", cli::error_count(errors.0.len()));
    ExitCode::FAILURE
}

/// Logs to stderr (journald picks it up), as text or JSON lines. `RUST_LOG` wins over
/// the config's level, for debugging one module.
fn init_logging(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
