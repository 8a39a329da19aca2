//! Network namespaces joined by veth pairs, for tests that cut a real link (as root),
//! and a TCP relay that lets a process in a namespace reach a service of the host.
//!
//! Everything made here is undone when its handle is dropped, also when the test
//! panics: a link is deleted with its pair, a namespace with what is left in it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::process::require_binary;

/// A network namespace with its loopback up. Deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name`. Panics naming `ip` (iproute2) when it is missing, and
    /// with `ip`'s own message when it fails (not root, name taken).
    pub fn create(name: &str) -> Netns {
        require_binary("ip", "iproute2");
        ip(&["netns", "add", name]);
        let netns = Netns {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip_quiet(&["netns", "del", &self.name]);
    }
}

/// One end of a [`Veth`]: the namespace it is in (`None`: the host's) and its address.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    pub netns: Option<&'a Netns>,
    pub address: Ipv4Addr,
}

/// A veth pair, `/30` addresses on both ends, both up. Deleted when dropped.
#[derive(Debug)]
pub struct Veth {
    /// Each end's name and the namespace it is in (`None`: the host's).
    ends: [(String, Option<String>); 2],
}

impl Veth {
    /// Creates the pair `name` ⇄ `{name}p` and puts end `a` and end `b` in their
    /// namespaces with their addresses. `name` is at most 14 characters (the kernel's
    /// 15, less the `p`).
    pub fn create(name: &str, a: End<'_>, b: End<'_>) -> Veth {
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        let veth = Veth {
            ends: [
                (name.to_owned(), a.netns.map(|n| n.name.clone())),
                (peer.clone(), b.netns.map(|n| n.name.clone())),
            ],
        };
        for (link, end) in [(name, a), (peer.as_str(), b)] {
            if let Some(netns) = end.netns {
                ip(&["link", "set", link, "netns", &netns.name]);
            }
            let address = format!("{}/30", end.address);
            ip(&with_netns(
                end.netns,
                &["addr", "add", &address, "dev", link],
            ));
            ip(&with_netns(end.netns, &["link", "set", link, "up"]));
        }
        veth
    }

    /// Sets both ends up or down: `down` is a cable pulled, for whatever runs on it.
    pub fn set_up(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        for (link, netns) in &self.ends {
            let mut args = Vec::new();
            if let Some(netns) = netns {
                args.extend(["-n", netns.as_str()]);
            }
            args.extend(["link", "set", link.as_str(), state]);
            ip(&args);
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end deletes both; the namespace's deletion may have done it.
        let (name, netns) = &self.ends[0];
        let mut args = Vec::new();
        if let Some(netns) = netns {
            args.extend(["-n", netns.as_str()]);
        }
        args.extend(["link", "del", name.as_str()]);
        ip_quiet(&args);
    }
}

/// Relays TCP connections from `listen` (an address of the host, e.g. its end of a veth
/// pair) to `target` (a service on the host's loopback), so a process in a namespace
/// reaches it: a site's local relay, in miniature. Stops accepting when dropped.
#[derive(Debug)]
pub struct TcpRelay {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TcpRelay {
    pub fn start(listen: IpAddr, target: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind((listen, 0))
            .unwrap_or_else(|e| panic!("relay cannot listen on {listen}: {e}"));
        let address = listener.local_addr().expect("relay address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        std::thread::spawn(move || relay(client, target));
                    }
                    // Polled, so that dropping the relay ends this thread.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => return,
                }
            }
        });
        TcpRelay { address, stop }
    }

    /// Where the relay listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}

fn with_netns<'a>(netns: Option<&'a Netns>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::new();
    if let Some(netns) = netns {
        all.extend(["-n", netns.name.as_str()]);
    }
    all.extend_from_slice(args);
    all
}

/// Runs `ip` with `args`; panics with its message when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        output.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// For undoing: errors mean already gone.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
}
