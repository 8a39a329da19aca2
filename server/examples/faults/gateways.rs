//! The gateways: one MQTT connection publishing readings at a steady rate with QoS 1,
//! and an exact account of which ones the broker acknowledged.
//!
//! Why not rumqttc: it numbers packets inside its event loop, and after a reconnect
//! without a session it drops the requests it still held, so a count of PUBACKs could
//! not say *which* readings were acknowledged. This client (MQTT 3.1.1, CONNECT,
//! PUBLISH at QoS 1, PUBACK and DISCONNECT: all a gateway needs) picks its own packet
//! ids, so each PUBACK names one reading. A connection lost with readings in flight
//! leaves them "published, not acknowledged": they may still arrive, they need not.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::plan::{Key, Plan};

/// Readings in flight at once. Mosquitto takes inbound QoS 1 without a window in MQTT
/// 3.1.1; this bounds what a lost connection leaves unaccounted.
const MAX_INFLIGHT: usize = 500;
/// Pause between attempts to reach a broker that is down.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);
/// Connecting, and waiting for CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A write that blocks this long means the link is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// At the end, how long the readings still in flight may take to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Behind schedule by more than this (after an outage), the schedule restarts from now:
/// a steady rate, not a burst of everything missed.
const MAX_LAG: Duration = Duration::from_secs(1);

/// What the gateways sent and what the broker acknowledged.
#[derive(Debug, Default)]
pub struct Sent {
    /// Every reading written to a connection, in order.
    pub published: Vec<Key>,
    pub acked: HashSet<Key>,
    /// Connections lost and made again.
    pub reconnects: u32,
}

#[derive(Debug, Default)]
struct State {
    published: Vec<Key>,
    acked: Vec<Key>,
    /// Packet id → reading, on the current connection.
    inflight: HashMap<u16, Key>,
    reconnects: u32,
}

/// The publishing thread and what it has counted so far.
#[derive(Debug)]
pub struct Gateways {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gateways {
    /// Starts publishing `rate` readings a second to the broker at `broker`, round-robin
    /// over the plan's facilities.
    pub fn start(broker: SocketAddr, plan: Arc<Plan>, rate: u32) -> Gateways {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("gateways".into())
                .spawn(move || publish(broker, &plan, rate, &state, &stop))
                .expect("spawn the gateways' thread")
        };
        Gateways {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// (published, acknowledged) so far.
    pub fn counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.published.len(), state.acked.len())
    }

    /// Every reading acknowledged so far.
    pub fn acked(&self) -> Vec<Key> {
        lock(&self.state).acked.clone()
    }

    /// Stops publishing, waits for the readings in flight to be acknowledged (or the
    /// connection to fail), disconnects, and returns the account.
    pub fn stop(mut self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut state = lock(&self.state);
        Sent {
            published: std::mem::take(&mut state.published),
            acked: state.acked.drain(..).collect(),
            reconnects: state.reconnects,
        }
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The publishing loop: connect, publish on schedule, reconnect when the connection
/// fails, until told to stop; then drain and disconnect.
fn publish(
    broker: SocketAddr,
    plan: &Plan,
    rate: u32,
    state: &Arc<Mutex<State>>,
    stop: &AtomicBool,
) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut seq: u64 = 0;
    let mut next_pkid: u16 = 0;
    let mut last_ts = vec![i64::MIN; plan.facilities.len()];
    let mut due = Instant::now();
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let connection = match Connection::open(broker, Arc::clone(state)) {
            Ok(connection) => connection,
            Err(_) => {
                std::thread::sleep(RECONNECT_EVERY);
                continue;
            }
        };
        if !first {
            lock(state).reconnects += 1;
        }
        first = false;
        loop {
            if stop.load(Ordering::SeqCst) {
                connection.drain_and_close(state);
                return;
            }
            if !connection.alive() {
                connection.close(state);
                break;
            }
            if lock(state).inflight.len() >= MAX_INFLIGHT {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > MAX_LAG {
                due = now;
            }
            due += interval;

            let index = usize::try_from(seq % plan.facilities.len() as u64).unwrap_or(0);
            let ts_ms = chrono::Utc::now()
                .timestamp_millis()
                .max(last_ts[index] + 1);
            last_ts[index] = ts_ms;
            let key = Key {
                facility: index,
                ts_ms,
            };
            let payload = plan.payload(key, seq);
            let pkid = {
                let mut state = lock(state);
                loop {
                    next_pkid = next_pkid.wrapping_add(1).max(1);
                    if !state.inflight.contains_key(&next_pkid) {
                        break;
                    }
                }
                state.inflight.insert(next_pkid, key);
                state.published.push(key);
                next_pkid
            };
            let packet = publish_packet(&plan.topic(index), pkid, payload.as_bytes());
            if connection.write(&packet).is_err() {
                connection.close(state);
                break;
            }
            seq += 1;
        }
    }
}

/// One connection to the broker and the thread reading its PUBACKs.
struct Connection {
    stream: TcpStream,
    alive: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

impl Connection {
    fn open(broker: SocketAddr, state: Arc<Mutex<State>>) -> io::Result<Connection> {
        let mut stream = TcpStream::connect_timeout(&broker, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let client_id = format!("faults-gateways-{}", std::process::id());
        stream.write_all(&connect_packet(&client_id))?;
        let (kind, body) = read_packet(&mut stream)?;
        if kind >> 4 != 2 || body.len() != 2 || body[1] != 0 {
            return Err(io::Error::other(format!(
                "no CONNACK accepting the connection: {kind:#x} {body:?}"
            )));
        }
        stream.set_read_timeout(None)?;
        let alive = Arc::new(AtomicBool::new(true));
        let reader = {
            let mut stream = stream.try_clone()?;
            let alive = Arc::clone(&alive);
            std::thread::spawn(move || {
                // PUBACKs until the connection ends; anything else (PINGRESP) is ignored.
                while let Ok((kind, body)) = read_packet(&mut stream) {
                    if kind >> 4 == 4 && body.len() == 2 {
                        let pkid = u16::from_be_bytes([body[0], body[1]]);
                        let mut state = lock(&state);
                        if let Some(key) = state.inflight.remove(&pkid) {
                            state.acked.push(key);
                        }
                    }
                }
                alive.store(false, Ordering::SeqCst);
            })
        };
        Ok(Connection {
            stream,
            alive,
            reader,
        })
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn write(&self, packet: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(packet)
    }

    /// Ends the connection; what was in flight stays published and unacknowledged.
    fn close(self, state: &Mutex<State>) {
        let _ = self.stream.shutdown(Shutdown::Both);
        let _ = self.reader.join();
        lock(state).inflight.clear();
    }

    /// Waits for the acknowledgements still due, then says goodbye.
    fn drain_and_close(self, state: &Mutex<State>) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.alive() && !lock(state).inflight.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.write(&[0xE0, 0]); // DISCONNECT
        self.close(state);
    }
}

/// MQTT's variable-length "remaining length".
fn push_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT, MQTT 3.1.1, clean session, no keep-alive (the broker never times us out).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    push_str(&mut body, client_id.as_bytes());
    let mut packet = vec![0x10];
    push_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// PUBLISH at QoS 1.
fn publish_packet(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x32];
    push_length(&mut packet, 2 + topic.len() + 2 + payload.len());
    push_str(&mut packet, topic.as_bytes());
    packet.extend_from_slice(&pkid.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// One packet: its first byte and its body.
fn read_packet(stream: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let kind = byte[0];
    let mut length = 0usize;
    for shift in 0..4 {
        stream.read_exact(&mut byte)?;
        length |= usize::from(byte[0] & 0x7F) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body)?;
            return Ok((kind, body));
        }
    }
    Err(io::Error::other("malformed remaining length"))
}
