//! One service process: found on PATH, started with its output in a log file inside
//! its own temp dir, polled until ready, stopped and killed on demand and on drop.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a service gets to answer its readiness probe. Generous: on a 2-core
/// machine running a parallel test suite, InfluxDB can take seconds to open.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful stop (SIGTERM) may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readiness is probed.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How many lines of a service's log a panic message quotes.
const LOG_TAIL_LINES: usize = 40;

/// A binary a service needs and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binary {
    pub name: &'static str,
    pub package: &'static str,
}

/// Debian installs daemons in sbin directories that a non-root PATH often lacks.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

impl Binary {
    pub fn locate(self) -> PathBuf {
        require_binary(self.name, self.package)
    }
}

/// The full path of binary `name`, searched on PATH and then in the sbin directories
/// where Debian installs daemons (a non-root PATH often lacks them). Panics when it is
/// missing, naming the Debian `package` to install: a test never skips silently.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH (apt-get install {package}); scripts/test installs it")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Why a started process did not become ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

/// A service process and the temp dir that holds its config, data and log.
///
/// Field order matters: the process is killed in `Drop` before `dir` is deleted.
#[derive(Debug)]
pub(crate) struct ServiceProcess {
    /// Used in messages: "mosquitto", "influxd", ...
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    /// Kept open for services that exit when their stdin closes (the SMTP recorder),
    /// so they die with the test process even if it is killed before `Drop` runs.
    stdin: Option<ChildStdin>,
    pipe_stdin: bool,
    /// stdout and stderr of every run, appended, so a restart keeps the earlier lines.
    log_path: PathBuf,
    dir: TempDir,
}

impl ServiceProcess {
    /// A process not yet started, with a fresh temp dir named after the service.
    pub fn new(name: &'static str, program: PathBuf) -> Self {
        let dir = crate::temp_dir(name);
        let log_path = dir.path().join(format!("{name}.log"));
        Self {
            name,
            program,
            args: Vec::new(),
            child: None,
            stdin: None,
            pipe_stdin: false,
            log_path,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn set_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
    }

    /// Give the process a stdin pipe that stays open while this value lives.
    pub fn pipe_stdin(&mut self) {
        self.pipe_stdin = true;
    }

    /// Spawn the process. Panics if it is already running or cannot be spawned.
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is already running; stop() it before starting it again",
            self.name
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", self.log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|err| panic!("cannot clone log file handle: {err}"));
        let stdin = if self.pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(stdin)
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.program.display()));
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    /// Poll `probe` until it returns true, the process exits, or the timeout passes.
    pub fn wait_ready(&mut self, mut probe: impl FnMut() -> bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                self.stdin = None;
                return Err(NotReady::Exited(status));
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Panic with a message that says what went wrong and quotes the log's tail.
    pub fn fail(&self, why: &NotReady, what: &str) -> ! {
        let reason = match why {
            NotReady::Exited(status) => format!("exited ({status})"),
            NotReady::TimedOut => format!("was not ready within {READY_TIMEOUT:?}"),
        };
        panic!(
            "{} {reason} {what}; last lines of {}:\n{}",
            self.name,
            self.log_path.display(),
            self.log_tail()
        )
    }

    /// The process exit status if it has exited, without waiting.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Stop gracefully (SIGTERM, then SIGKILL after a timeout) and wait for the exit,
    /// so a restarted service finds its port and data files released.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.stdin = None;
        if let Ok(pid) = i32::try_from(child.id()) {
            // The process may already be gone; waiting below covers both cases.
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Send `signal` to the running process (nothing when it is not running): SIGSTOP
    /// and SIGCONT freeze and thaw it, a server that hangs rather than one that is gone.
    pub fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child
            && let Ok(pid) = i32::try_from(child.id())
        {
            // The process may have exited meanwhile; nothing to signal then.
            let _ = signal::kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kill at once (SIGKILL), as a crash or power cut would, and reap the process.
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the process wrote to stdout and stderr, across restarts.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the log, for panic messages. Reads only the end of a big log.
    pub fn log_tail(&self) -> String {
        const TAIL_BYTES: u64 = 16 * 1024;
        let Ok(mut file) = File::open(&self.log_path) else {
            return "(no log file)".to_owned();
        };
        let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        let lines: Vec<String> = BufReader::new(bytes.as_slice())
            .lines()
            .map_while(Result::ok)
            .collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // A failing test shows its captured stderr: put the service's log there.
        if std::thread::panicking() {
            eprintln!(
                "--- {} log, last lines of {} ---\n{}\n--- end of {} log ---",
                self.name,
                self.log_path.display(),
                self.log_tail(),
                self.name
            );
        }
        self.kill();
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// True when a start failed because another process took the port in between
/// `free_port()` and the service binding it; the caller then retries on new ports.
pub(crate) fn lost_port_race(process: &ServiceProcess, why: &NotReady) -> bool {
    matches!(why, NotReady::Exited(_))
        && process
            .log()
            .to_ascii_lowercase()
            .contains("address already in use")
}

/// How many times a first start is tried on fresh ports when it loses a port race.
pub(crate) const START_ATTEMPTS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_panics_naming_it_and_its_package() {
        let panic = std::panic::catch_unwind(|| {
            require_binary("stockpile-no-such-daemon", "stockpile-no-such-package")
        })
        .expect_err("a missing binary must panic");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(
            message,
            "stockpile-no-such-daemon not found on PATH (apt-get install stockpile-no-such-package); \
             scripts/test installs it"
        );
    }

    #[test]
    fn present_binary_is_found_even_outside_path() {
        // Debian installs mosquitto in /usr/sbin, which a non-root PATH lacks.
        let found = require_binary("sh", "dash");
        assert!(
            found.ends_with("sh") && is_executable(&found),
            "{}",
            found.display()
        );
    }
}
