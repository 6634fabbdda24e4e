//! Logging in to the broker the way the daemon will: one MQTT CONNECT with the
//! configured user name and password (MQTT 3.1.1 or 5, as `upstream.protocol` says),
//! the broker's CONNACK read and explained, then DISCONNECT.
//!
//! The login uses a client id of its own (the gateway's with `-doctor` appended) and a
//! clean session, so it neither takes over a running daemon's connection nor touches
//! the session the broker keeps for it; it sets no will and publishes nothing.

use std::io::{self, Read, Write};

/// What the broker said to the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Login {
    /// CONNACK with return code 0.
    Accepted,
    /// CONNACK with a refusal: the MQTT 3.1.1 return code or the MQTT 5 reason code.
    Refused(u8),
    /// The connection closed before any CONNACK (rumqttd and some cloud brokers close
    /// on a refused login without answering).
    Closed,
    /// No CONNACK within the timeout.
    NoAnswer,
    /// Something that is not a CONNACK: not an MQTT broker on this port.
    NotMqtt,
}

/// The CONNECT the doctor sends: clean session, no will, the given keep-alive
/// (rumqttd refuses 0), `credentials` as the daemon sends them (the password only
/// when there is one).
pub(super) fn connect_packet(
    protocol: u8,
    client_id: &str,
    credentials: Option<(&str, &str)>,
    keepalive: u16,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    put_str(&mut body, "MQTT");
    body.push(if protocol == 5 { 5 } else { 4 });
    let mut flags = 0x02; // clean session / clean start
    if let Some((_, password)) = credentials {
        flags |= 0x80;
        if !password.is_empty() {
            flags |= 0x40;
        }
    }
    body.push(flags);
    body.extend_from_slice(&keepalive.to_be_bytes());
    if protocol == 5 {
        body.push(0); // no properties
    }
    put_str(&mut body, client_id);
    if let Some((user, password)) = credentials {
        put_str(&mut body, user);
        if !password.is_empty() {
            put_str(&mut body, password);
        }
    }
    let mut packet = vec![0x10];
    put_varint(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// Sends the CONNECT and reads the answer; a DISCONNECT follows an accepted login.
pub(super) fn login<S: Read + Write>(stream: &mut S, connect: &[u8]) -> Login {
    if stream
        .write_all(connect)
        .and_then(|_| stream.flush())
        .is_err()
    {
        return Login::Closed;
    }
    let answer = read_connack(stream);
    if answer == Login::Accepted {
        let _ = stream.write_all(&[0xE0, 0x00]);
        let _ = stream.flush();
    }
    answer
}

fn read_connack<S: Read>(stream: &mut S) -> Login {
    let mut first = [0u8; 2];
    if let Err(e) = stream.read_exact(&mut first) {
        return closed_or_silent(&e);
    }
    // CONNACK: type 2, no flags; its remaining length fits one byte (2 in MQTT 3.1.1,
    // 3 or more with MQTT 5 properties, which are read and ignored).
    if first[0] != 0x20 || first[1] < 2 || first[1] & 0x80 != 0 {
        return Login::NotMqtt;
    }
    let mut rest = vec![0u8; usize::from(first[1])];
    if let Err(e) = stream.read_exact(&mut rest) {
        return closed_or_silent(&e);
    }
    match rest[1] {
        0 => Login::Accepted,
        code => Login::Refused(code),
    }
}

fn closed_or_silent(e: &io::Error) -> Login {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Login::NoAnswer,
        _ => Login::Closed,
    }
}

/// A refusal in words, and whether it is the credentials (as opposed to the
/// broker's state or its rules for client ids).
pub(super) fn refusal(code: u8) -> (&'static str, Cause) {
    match code {
        // MQTT 3.1.1 return codes.
        1 => ("unacceptable protocol version", Cause::Protocol),
        2 => ("client identifier rejected", Cause::ClientId),
        3 => ("server unavailable", Cause::Broker),
        4 => ("bad user name or password", Cause::Credentials),
        // mosquitto answers a wrong password with this one.
        5 => ("not authorized", Cause::Credentials),
        // MQTT 5 reason codes.
        0x84 => ("unsupported protocol version", Cause::Protocol),
        0x85 => ("client identifier not valid", Cause::ClientId),
        0x86 => ("bad user name or password", Cause::Credentials),
        0x87 => ("not authorized", Cause::Credentials),
        0x88 => ("server unavailable", Cause::Broker),
        0x89 => ("server busy", Cause::Broker),
        0x8A => ("banned", Cause::Credentials),
        0x8C => ("bad authentication method", Cause::Credentials),
        0x9F => ("connection rate exceeded", Cause::Broker),
        _ => ("refused", Cause::Other),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    Credentials,
    Protocol,
    ClientId,
    Broker,
    Other,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer than 65,535 bytes cannot be sent; the config keeps ids and names short.
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT 3.1.1 section 3.1: the CONNECT of a client "gw-doctor" with user "u" and
    /// password "p", clean session, keep-alive 10 s.
    #[test]
    fn a_311_connect_is_laid_out_as_the_standard_says() {
        let p = connect_packet(4, "gw-doctor", Some(("u", "p")), 10);
        let mut want = vec![0x10, 27, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10];
        want.extend_from_slice(&[0, 9]);
        want.extend_from_slice(b"gw-doctor");
        want.extend_from_slice(&[0, 1, b'u', 0, 1, b'p']);
        assert_eq!(p, want);
    }

    /// MQTT 5 section 3.1: the same with an empty property list; no password flag
    /// when there is no password.
    #[test]
    fn a_v5_connect_has_its_properties_and_no_empty_password() {
        let p = connect_packet(5, "c", Some(("u", "")), 60);
        assert_eq!(
            p,
            [0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x82, 0, 60, 0, 0, 1, b'c', 0, 1, b'u']
        );
        let anonymous = connect_packet(4, "c", None, 60);
        assert_eq!(anonymous[9], 0x02);
    }

    #[test]
    fn a_long_remaining_length_takes_two_bytes() {
        let id = "x".repeat(200);
        let p = connect_packet(4, &id, None, 60);
        assert_eq!(p.len(), 1 + 2 + 212);
        assert_eq!((p[1], p[2]), ((212 % 128) | 0x80, 1));
    }

    struct Peer {
        answer: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.answer.read(buf)
        }
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn answered(bytes: &[u8]) -> (Login, Vec<u8>) {
        let mut peer = Peer {
            answer: io::Cursor::new(bytes.to_vec()),
            sent: Vec::new(),
        };
        let got = login(&mut peer, &[0x10, 0]);
        (got, peer.sent)
    }

    #[test]
    fn connacks_are_read_in_both_versions_and_anything_else_is_not_mqtt() {
        let (got, sent) = answered(&[0x20, 2, 0, 0]);
        assert_eq!(got, Login::Accepted);
        assert_eq!(
            sent,
            [0x10, 0, 0xE0, 0],
            "DISCONNECT after an accepted login"
        );
        assert_eq!(answered(&[0x20, 2, 0, 5]).0, Login::Refused(5));
        // MQTT 5 with a property (Reason String "no").
        assert_eq!(
            answered(&[0x20, 8, 0, 0x86, 5, 0x1F, 0, 2, b'n', b'o']).0,
            Login::Refused(0x86)
        );
        assert_eq!(answered(&[]).0, Login::Closed);
        assert_eq!(answered(&[0x20, 2, 0]).0, Login::Closed);
        assert_eq!(answered(b"HTTP/1.1 400").0, Login::NotMqtt);
        assert_eq!(refusal(0x87).1, Cause::Credentials);
        assert_eq!(refusal(3).1, Cause::Broker);
    }
}
