//! Resolving and connecting with a timeout, for the tcp:// radios and the broker.
//! getaddrinfo has no timeout of its own, so resolving runs on a thread of its own.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// Resolves with a timeout (getaddrinfo has none of its own).
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let target = (host.to_string(), port);
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("`{host}` resolves to no address")),
        Ok(Err(e)) => Err(format!("cannot resolve `{host}`: {e}")),
        Err(_) => Err(format!(
            "resolving `{host}` took more than {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Connects to the first address that answers.
pub(super) fn connect(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    connect_stream(host, port, timeout).map(|(_, addr)| addr)
}

pub(super) fn connect_stream(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::from("no address");
    for addr in resolve(host, port, timeout)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok((s, addr)),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                last = format!(
                    "{addr}: no answer within {}",
                    humantime::format_duration(timeout)
                )
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}
