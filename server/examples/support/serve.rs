//! Running the `stockpile` binary from a benchmark: spawn `serve`, learn the API's
//! address from its log line. Shared by the examples through `#[path]` (an example is a
//! crate of its own).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long `serve` may take to log its API address.
const API_ADDRESS_WITHIN: Duration = Duration::from_secs(60);

/// Spawns `bin serve --config config` (warnings and the server's own info lines only)
/// and returns it with its API's base URL.
pub fn spawn(bin: &Path, config: &Path) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,server=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start stockpile serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("HTTP API and wall board listening")
                && let Some(at) = line.find("http://")
            {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let api = rx
        .recv_timeout(API_ADDRESS_WITHIN)
        .expect("the service logged its API address");
    (child, api)
}
