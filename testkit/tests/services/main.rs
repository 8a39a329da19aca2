//! Each service started for real, with a round trip through it. One test binary, so
//! the suite links once.

mod http_receiver;
mod influx;
mod mosquitto;
mod smtp;
mod victoria;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_is_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
