//! Byte links a radio driver runs over: a serial port (tokio-serial), a TCP
//! socket (network coordinators, ser2net) or `sim://`, an in-process byte stream
//! to a protocol emulator. Drivers see one type, [`Link`], and never care which.
//!
//! This module opens and configures links; it does not interpret a single byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::TcpStream;
use tokio_serial::SerialPortBuilderExt;

use crate::config::{PortSpec, Protocol};

/// Anything a driver can read frames from and write frames to.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

pub type Link = Box<dyn ByteStream>;

pub const DEFAULT_BAUD: u32 = 115_200;

/// A device-side emulator behind `sim://<protocol>`: it gets the far end of an
/// in-process duplex pipe and speaks the real wire protocol on it.
pub type EmulatorFactory = fn(DuplexStream);

/// The emulator behind `sim://<protocol>`, as its driver declares it.
pub fn emulator_for(protocol: Protocol) -> Option<EmulatorFactory> {
    super::spec(protocol).and_then(|s| s.emulator)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    // The cause is part of the message, not an error `source`: chained display
    // (`{:#}`) would say it twice.
    #[error("cannot open serial port {path}: {reason}")]
    Serial {
        path: String,
        reason: tokio_serial::Error,
    },
    #[error("cannot connect to {addr}: {reason}")]
    Tcp { addr: String, reason: io::Error },
    #[error("no {0} emulator in this build")]
    NoEmulator(Protocol),
    #[error("{0} is not a byte link (the driver opens it itself)")]
    NotAByteLink(String),
}

/// Opens the link named by `spec`.
pub async fn open(spec: &PortSpec, baud: Option<u32>) -> Result<Link, LinkError> {
    match spec {
        PortSpec::Serial(path) => {
            let path_str = path.display().to_string();
            let port = tokio_serial::new(&path_str, baud.unwrap_or(DEFAULT_BAUD))
                .timeout(Duration::from_millis(100))
                .open_native_async()
                .map_err(|reason| LinkError::Serial {
                    path: path_str.clone(),
                    reason,
                })?;
            Ok(Box::new(NoDrain(port)))
        }
        PortSpec::Tcp { host, port } => {
            let addr = format!("{host}:{port}");
            let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
                .await
                .map_err(|_| LinkError::Tcp {
                    addr: addr.clone(),
                    reason: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                })?
                .map_err(|reason| LinkError::Tcp {
                    addr: addr.clone(),
                    reason,
                })?;
            stream.set_nodelay(true).ok();
            // Keepalive notices a network coordinator that vanished without a FIN.
            let sock = socket2::SockRef::from(&stream);
            let ka = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10));
            sock.set_tcp_keepalive(&ka).ok();
            Ok(Box::new(stream))
        }
        PortSpec::Sim(protocol) => {
            let factory = emulator_for(*protocol).ok_or(LinkError::NoEmulator(*protocol))?;
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            factory(theirs);
            Ok(Box::new(ours))
        }
        other @ (PortSpec::Udp { .. } | PortSpec::Bluez(_)) => {
            Err(LinkError::NotAByteLink(other.to_string()))
        }
    }
}

/// A serial port whose flush does not wait for the UART. tokio-serial's flush is
/// `tcdrain(3)`, a blocking call that returns only once every byte has left the
/// port: on the async runtime's thread, once per frame written (a Z-Wave ACK for
/// every frame read). A write that returned has handed its bytes to the kernel's
/// tty layer, which sends them in order; no frame depends on when they left, since
/// every answer is awaited with its own deadline.
struct NoDrain<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for NoDrain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoDrain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream whose flush never completes, as `tcdrain` on a port that cannot send.
    struct NeverDrains(Vec<u8>);

    impl AsyncRead for NeverDrains {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for NeverDrains {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_serial_write_does_not_wait_for_the_port_to_drain() {
        let mut link = NoDrain(NeverDrains(Vec::new()));
        let wrote = tokio::time::timeout(Duration::from_secs(1), async {
            link.write_all(&[0x06]).await?;
            link.flush().await
        })
        .await;
        assert!(matches!(wrote, Ok(Ok(()))), "{wrote:?}");
        assert_eq!(link.0 .0, vec![0x06]);
    }

    #[tokio::test]
    async fn tcp_link_carries_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let mut link = open(
            &PortSpec::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            None,
        )
        .await
        .unwrap();
        link.write_all(&[0xfe, 0x00, 0x21]).await.unwrap();
        let mut echo = [0u8; 3];
        link.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, [0xfe, 0x00, 0x21]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn missing_serial_port_is_a_clear_error() {
        let err = match open(&PortSpec::Serial("/dev/does-not-exist-fg".into()), None).await {
            Err(e) => e,
            Ok(_) => panic!("opened a port that does not exist"),
        };
        let text = err.to_string();
        assert!(text.contains("/dev/does-not-exist-fg"), "{text}");
        // Chained, as the supervisor logs it: the cause once, not twice.
        let chained = format!("{:#}", anyhow::Error::new(err));
        assert_eq!(chained, text);
    }
}
