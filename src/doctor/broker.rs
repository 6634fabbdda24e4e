//! The broker as the daemon will reach it: the files `[upstream]` names (readable
//! by the service user), a TCP connection, for mqtts:// a full TLS handshake with
//! rustls that validates the certificate, then an MQTT login with the configured
//! credentials (see [`super::login`]), with each failure explained. It never prints a
//! secret.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::files::check_readable_file;
use super::identity::{Identity, Sandbox};
use super::login::{self, Cause, Login};
use super::net::connect_stream;
use super::{Check, SERVICE_USER};
use crate::config::UpstreamConfig;

pub(super) fn check_upstream(
    upstream: Option<&UpstreamConfig>,
    gateway_id: &str,
    id: &Identity,
    sandbox: &Sandbox,
    timeout: Duration,
) -> Vec<Check> {
    let Some(up) = upstream else {
        return vec![Check::ok(
            "broker",
            "no [upstream]: offline mode, everything waits in the outbox",
        )];
    };
    let mut checks = Vec::new();
    for (what, file) in [
        ("upstream.password_file", &up.password_file),
        ("upstream.ca_file", &up.ca_file),
        ("upstream.client_cert", &up.client_cert),
        ("upstream.client_key", &up.client_key),
    ] {
        if let Some(path) = file {
            if let Some(c) = check_readable_file(what, path, id, sandbox) {
                checks.push(c);
            } else if what == "upstream.password_file" || what == "upstream.client_key" {
                checks.extend(super::files::check_secret_private(what, path));
            }
        }
    }
    if let (Some(cert), Some(_)) = (&up.client_cert, &up.client_key) {
        checks.extend(check_rotation_dir(cert, id, sandbox));
    }
    checks.push(check_broker(up, gateway_id, timeout));
    checks
}

/// A client certificate rotation writes the new pair next to the configured files:
/// their directory must be writable by the service, which under the unit's sandbox
/// (ProtectSystem=strict) means under the state directory, not /etc.
fn check_rotation_dir(cert: &std::path::Path, id: &Identity, sandbox: &Sandbox) -> Option<Check> {
    let dir = cert.parent()?;
    let writable = sandbox.writable(dir) && std::fs::metadata(dir).is_ok_and(|m| id.allowed(&m, 3));
    (!writable).then(|| {
        Check::warn(
            "upstream.client_cert",
            format!(
                "{} is not writable by the service: `fieldgate upstream rotate-cert` and the MQTT `rotate_client_cert` request will fail",
                dir.display()
            ),
            format!(
                "keep the certificate and key in a directory of the service's own, e.g. install -d -o {SERVICE_USER} -g {SERVICE_USER} -m 0700 /var/lib/fieldgate/uplink, and point upstream.client_cert/client_key there"
            ),
        )
    })
}

fn check_broker(up: &UpstreamConfig, gateway_id: &str, timeout: Duration) -> Check {
    let raw = up.url.get_ref();
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return Check::fail("broker", format!("`{raw}`: {e}"), "fix upstream.url"),
    };
    let tls = url.scheme() == "mqtts";
    let Some(host) = url
        .host_str()
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string())
    else {
        return Check::fail("broker", format!("`{raw}` has no host"), "fix upstream.url");
    };
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let (stream, addr) = match connect_stream(&host, port, timeout) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                "broker",
                format!("{raw}: cannot connect: {e}"),
                "check upstream.url, DNS, the route and the firewall (`nc -vz HOST PORT`); the gateway keeps working offline meanwhile",
            )
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let credentials = match (&up.username, &up.password_file) {
        (Some(user), Some(file)) => match crate::upstream::client::read_password(file) {
            Ok(password) => Some((user.clone(), password)),
            Err(_) => {
                // The file's own check says why; the login cannot be tried without it.
                return Check::warn(
                    "broker",
                    format!("{raw} reachable ({addr}); the login was not tried: upstream.password_file cannot be read"),
                    "see the upstream.password_file check",
                );
            }
        },
        (Some(user), None) => Some((user.clone(), String::new())),
        _ => None,
    };
    let client_id = format!("{}-doctor", up.client_id.as_deref().unwrap_or(gateway_id));
    let connect = login::connect_packet(
        *up.protocol.get_ref(),
        &client_id,
        credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        30,
    );
    let (transport, answer) = if tls {
        match tls_handshake(up, &host, stream) {
            Ok((detail, conn, stream)) => {
                let mut tls = rustls::StreamOwned::new(conn, stream);
                (detail, login::login(&mut tls, &connect))
            }
            Err((message, fix)) => return Check::fail("broker", format!("{raw}: {message}"), fix),
        }
    } else {
        let mut stream = stream;
        (
            "plaintext MQTT".to_string(),
            login::login(&mut stream, &connect),
        )
    };
    let who = match (&up.username, &up.client_cert) {
        (Some(user), _) => format!("as `{}`", crate::output::one_line(user)),
        (None, Some(_)) => "with the client certificate".to_string(),
        (None, None) => "without credentials".to_string(),
    };
    let reached = format!("{raw} reachable ({addr}), {transport}");
    let credentials_fix = if up.username.is_some() {
        "check upstream.username and the password in upstream.password_file (one trailing newline is ignored), and that the broker lets this user connect"
    } else {
        "the broker wants a login: set upstream.username and upstream.password_file (or a client certificate the broker accepts)"
    };
    match answer {
        Login::Accepted => Check::ok("broker", format!("{reached}; login {who} accepted")),
        Login::Refused(code) => {
            let (words, cause) = login::refusal(code);
            // MQTT 5 reason codes are written in hex, as the standard lists them.
            let code = if code >= 0x80 {
                format!("0x{code:02X}")
            } else {
                code.to_string()
            };
            let message =
                format!("{reached}; the broker refused the login {who}: {words} (code {code})");
            match cause {
                Cause::Credentials | Cause::Other => Check::fail("broker", message, credentials_fix),
                Cause::Protocol => Check::fail(
                    "broker",
                    message,
                    "set upstream.protocol to a version the broker speaks (4 = MQTT 3.1.1, 5 = MQTT 5)",
                ),
                Cause::ClientId => Check::warn(
                    "broker",
                    format!("{message}; the check logs in as `{client_id}`, so the credentials were not checked"),
                    "if the broker takes only listed client ids, see the daemon's log once it runs (journalctl -u fieldgate)",
                ),
                Cause::Broker => Check::warn(
                    "broker",
                    message,
                    "the broker takes no clients now; the gateway keeps working offline and connects when it does",
                ),
            }
        }
        Login::Closed => Check::fail(
            "broker",
            format!("{reached}; the broker closed the connection at the login {who} without answering (some brokers answer a refused login so)"),
            credentials_fix,
        ),
        Login::NoAnswer => Check::fail(
            "broker",
            format!(
                "{reached}; no answer to an MQTT login within {}",
                humantime::format_duration(timeout)
            ),
            "check that upstream.url's port is the broker's MQTT listener (mqtt:// is usually 1883, mqtts:// 8883)",
        ),
        Login::NotMqtt => Check::fail(
            "broker",
            format!("{reached}; the answer to an MQTT login is not MQTT"),
            "another service listens on this port: check upstream.url's port",
        ),
    }
}

type Failure = (String, String);

fn tls_config(up: &UpstreamConfig) -> Result<rustls::ClientConfig, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    match &up.ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        format!("cannot read CA file {}: {e}", ca.display()),
                        "upstream.ca_file must hold PEM certificates".to_string(),
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err((
                    format!("no usable certificate in {}", ca.display()),
                    "upstream.ca_file must hold the broker's CA in PEM".to_string(),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err((
                    "no system CA certificates found".to_string(),
                    "apt install ca-certificates, or set upstream.ca_file".to_string(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            (
                format!("TLS setup failed: {e}"),
                "report this as a bug".to_string(),
            )
        })?
        .with_root_certificates(roots);
    match (&up.client_cert, &up.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        format!("cannot read client certificate {}: {e}", cert.display()),
                        "upstream.client_cert must be a PEM certificate chain".to_string(),
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                (
                    format!("cannot read client key {}: {e}", key.display()),
                    "upstream.client_key must be a PEM private key".to_string(),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    format!("client certificate and key do not fit: {e}"),
                    "check that upstream.client_key belongs to upstream.client_cert".to_string(),
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A full TLS handshake that validates the broker's certificate.
fn tls_handshake(
    up: &UpstreamConfig,
    host: &str,
    mut stream: TcpStream,
) -> Result<(String, rustls::ClientConnection, TcpStream), Failure> {
    let config = tls_config(up)?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
        (
            format!("`{host}` is not a valid TLS server name: {e}"),
            "use the broker's DNS name in upstream.url".to_string(),
        )
    })?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| {
        (
            format!("TLS setup failed: {e}"),
            "report this as a bug".to_string(),
        )
    })?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut stream) {
            return Err(explain_tls_error(&e, up, host));
        }
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "TLS".into());
    let detail = format!(
        "{} handshake OK, certificate valid for {host} ({})",
        version.replace('_', "."),
        if up.ca_file.is_some() {
            "upstream.ca_file"
        } else {
            "system CAs"
        }
    );
    Ok((detail, conn, stream))
}

fn explain_tls_error(e: &io::Error, up: &UpstreamConfig, host: &str) -> Failure {
    use rustls::CertificateError as C;
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let ca_hint = match &up.ca_file {
        Some(ca) => format!("upstream.ca_file ({})", ca.display()),
        None => "the system CAs".to_string(),
    };
    match tls {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            let (why, fix) = match cert {
                C::UnknownIssuer => (
                    format!("certificate not signed by {ca_hint}"),
                    "set upstream.ca_file to the CA that signed the broker's certificate"
                        .to_string(),
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => (
                    format!("certificate is not valid for `{host}`"),
                    "use the host name the certificate was issued for in upstream.url".to_string(),
                ),
                C::Expired | C::ExpiredContext { .. } => (
                    "certificate has expired".to_string(),
                    "renew the broker's certificate (and check the clock)".to_string(),
                ),
                C::NotValidYet | C::NotValidYetContext { .. } => (
                    "certificate is not valid yet".to_string(),
                    "check this gateway's clock (timedatectl)".to_string(),
                ),
                C::Other(e) if e.to_string().contains("CaUsedAsEndEntity") => (
                    "the broker presents a CA certificate as its own (a self-signed certificate made as a CA)".to_string(),
                    "give the broker a server certificate signed by that CA, and that CA as upstream.ca_file".to_string(),
                ),
                other => (
                    format!("certificate rejected: {other:?}"),
                    format!("check the broker's certificate against {ca_hint}"),
                ),
            };
            (format!("TLS handshake failed: {why}"), fix)
        }
        Some(other) => (
            format!("TLS handshake failed: {other}"),
            "check that the port speaks MQTT over TLS (8883) and the TLS settings".to_string(),
        ),
        None if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) =>
        {
            (
                "TLS handshake timed out".to_string(),
                "check that the port speaks TLS (mqtts:// is usually 8883)".to_string(),
            )
        }
        None => (
            format!("TLS handshake failed: {e}"),
            "check that the port speaks TLS (mqtts:// is usually 8883)".to_string(),
        ),
    }
}
