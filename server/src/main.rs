//! `stockpile`: parses the command line and maps outcomes to exit codes (0 ok, 1 failed
//! check or error, 2 usage, which clap handles).

use std::process::ExitCode;

use clap::Parser;
use server::cli::{self, Cli, Command};

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match cli::check_config(&file, &cli::stockpile_env()) {
            Ok(summary) => {
                print!("{summary}");
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for error in &errors.0 {
                    eprintln!("{error}");
                }
                eprintln!("{}", cli::error_count(errors.0.len()));
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
