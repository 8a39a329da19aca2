//! Start the services the tests use, on free ports, for trying Stockpile by hand;
//! print their URLs and keep them until Enter (or end of input). `scripts/services`
//! runs this.
//!
//! Usage: `cargo run -p testkit --example services -- [mosquitto] [influx] [victoria] [smtp]`
//! (all four when none is named).

use std::io::BufRead;

const ALL: &[&str] = &["mosquitto", "influx", "victoria", "smtp"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wanted: Vec<&str> = if args.is_empty() {
        ALL.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = wanted.iter().find(|name| !ALL.contains(name)) {
        eprintln!(
            "unknown service {unknown:?}; choose from {}",
            ALL.join(", ")
        );
        std::process::exit(2);
    }

    // Kept alive until the end of main; dropping them stops the services.
    let mut running: Vec<Box<dyn std::fmt::Debug>> = Vec::new();
    for name in wanted {
        match name {
            "mosquitto" => {
                let broker = testkit::Mosquitto::start();
                println!(
                    "mosquitto  {}   (log: {})",
                    broker.url(),
                    broker.dir().display()
                );
                running.push(Box::new(broker));
            }
            "influx" => {
                let influx = testkit::Influx1::start();
                influx.create_database("stockpile");
                println!("influxdb   {}   database stockpile", influx.url());
                running.push(Box::new(influx));
            }
            "victoria" => {
                let vm = testkit::VictoriaMetrics::start();
                println!(
                    "victoria   {}   (InfluxDB v2 writes: /api/v2/write)",
                    vm.url()
                );
                running.push(Box::new(vm));
            }
            "smtp" => {
                let smtp = testkit::SmtpServer::start();
                println!(
                    "smtp       {}   (mail: {}/mail)",
                    smtp.url(),
                    smtp.dir().display()
                );
                running.push(Box::new(smtp));
            }
            _ => unreachable!("names were checked above"),
        }
    }
    println!("Press Enter to stop them.");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(running);
}
