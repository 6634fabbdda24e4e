//! `fieldgate doctor` against a healthy temp setup and against each broken case it
//! names: invalid config, missing serial port, master key missing or readable by
//! others, unwritable state directory, broker on a closed loopback port, a port that
//! does not answer MQTT, a login the broker refuses (rumqttd and mosquitto), a broker
//! whose TLS certificate does not validate. Also: the packaged example config with
//! its commented-out examples switched on is still valid.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldgate")
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user has a name")
}

/// A temp gateway: config, state dir, a 0600 master key.
struct Setup {
    dir: tempfile::TempDir,
    state: PathBuf,
    key: PathBuf,
    user: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        fs::create_dir(&state).expect("state dir");
        // As the package installs it (the umask would leave it 0755).
        fs::set_permissions(&state, fs::Permissions::from_mode(0o750)).expect("chmod state");
        let key = dir.path().join("master.key");
        fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        Setup {
            dir,
            state,
            key,
            user: current_user(),
        }
    }

    /// A config with one sim:// radio plus `extra`, with the state dir `state`.
    fn config_with_state(&self, state: &Path, extra: &str) -> PathBuf {
        let path = self.dir.path().join("fieldgate.toml");
        let text = format!(
            "[gateway]\nid = \"doc-gw\"\nstate_dir = \"{}\"\n\n[api]\nsocket = \"{}\"\n\n\
             [[radio]]\nname = \"sim0\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n\n{extra}",
            state.display(),
            self.dir.path().join("run").join("api.sock").display(),
        );
        fs::write(&path, text).expect("write config");
        path
    }

    fn config(&self, extra: &str) -> PathBuf {
        self.config_with_state(&self.state, extra)
    }

    fn doctor(&self, config: &Path, extra_args: &[&str]) -> (Output, Value) {
        let out = Command::new(bin())
            .arg("doctor")
            .arg("--config")
            .arg(config)
            .arg("--master-key")
            .arg(&self.key)
            .args(["--json", "--timeout", "3s"])
            .args(extra_args)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("FIELDGATE_CONFIG")
            .output()
            .expect("run fieldgate doctor");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, json)
    }

    /// `doctor` with the human report, as this user with this master key.
    fn human_doctor(&self, config: &Path) -> Command {
        let mut c = Command::new(bin());
        c.args(["doctor", "--config"])
            .arg(config)
            .arg("--master-key")
            .arg(&self.key)
            .args(["--user", &self.user])
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    fn doctor_as_me(&self, config: &Path) -> (Output, Value) {
        let user = self.user.clone();
        self.doctor(config, &["--user", &user])
    }
}

/// The check named `name` from a JSON report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

fn assert_status(report: &Value, name: &str, status: &str, message_part: &str) {
    let c = check(report, name);
    assert_eq!(
        c["status"], status,
        "check `{name}`: {c:#}\nfull: {report:#}"
    );
    let message = c["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(message_part),
        "check `{name}` message {message:?} lacks {message_part:?}"
    );
    if status != "ok" {
        assert!(
            c["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "check `{name}` has no fix: {c:#}"
        );
    }
}

fn assert_exit(out: &Output, code: i32, report: &Value) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "doctor exit status; report: {report:#}"
    );
    assert_eq!(report["healthy"], code == 0, "{report:#}");
}

#[test]
fn healthy_setup_passes() {
    let s = Setup::new();
    let config = s.config("");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 0, &report);
    assert_eq!(report["summary"]["fail"], 0, "{report:#}");
    for name in [
        "config",
        "radio sim0",
        "broker",
        "clock",
        "state dir",
        "disk space",
        "api socket",
        "master key",
    ] {
        // With the unit installed on this machine its sandbox applies, and a state
        // dir or socket under /tmp is (rightly) a warning.
        let sandboxed =
            report["unit_installed"] == true && matches!(name, "state dir" | "api socket");
        if !sandboxed {
            assert_eq!(check(&report, name)["status"], "ok", "{name}: {report:#}");
        }
    }
    assert_status(&report, "master key", "ok", " 0600)");
    assert_status(&report, "broker", "ok", "offline");

    // The human report says the same, one line per check, fixes indented below.
    let out = s.human_doctor(&config).output().expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok    radio sim0"), "{text}");
    assert!(text.contains("0 failure(s)"), "{text}");
}

#[test]
fn invalid_config_fails_with_its_location() {
    let s = Setup::new();
    let config = s.config("[upstream]\nurl = \"mqtt://127.0.0.1:1883\"\nbogus_key = 1\n");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "config", "fail", "bogus_key");
    let message = check(&report, "config")["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains(":15"), "names the line: {message}");
    // Independent checks still run.
    assert_status(&report, "master key", "ok", "present");

    // What `config check` and `run` refuse, doctor refuses too, at its line.
    for (extra, key) in [
        ("keepalive = \"100000s\"\n", "upstream.keepalive"),
        (
            "password_file = \"/etc/hostname\"\n",
            "upstream.password_file",
        ),
    ] {
        let config = s.config(&format!(
            "[upstream]\nurl = \"mqtt://127.0.0.1:1883\"\n{extra}"
        ));
        let (out, report) = s.doctor_as_me(&config);
        assert_exit(&out, 1, &report);
        assert_status(&report, "config", "fail", key);
        let message = check(&report, "config")["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(":15"), "names the line: {message}");
    }
}

/// A master key file the daemon would refuse (neither 32 bytes nor 64 hex characters)
/// is a failure, not a warning: the daemon does not start on it.
#[test]
fn a_master_key_the_daemon_refuses_fails() {
    let s = Setup::new();
    fs::write(&s.key, "abc").expect("key");
    let config = s.config("");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "master key", "fail", "the daemon will not start");
    // The verdict is the exit code whoever reads the report: a reader gone before it
    // (`doctor | true`) does not turn it into success.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let status = s
        .human_doctor(&config)
        .stdout(std::process::Stdio::from(write))
        .status()
        .expect("run doctor");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn missing_serial_port_fails() {
    let s = Setup::new();
    let config = s.config(
        "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\n\
         port = \"/dev/serial/by-id/usb-fieldgate-test-no-such-radio-if00-port0\"\n\
         [[radio]]\nname = \"off\"\nprotocol = \"zwave\"\nport = \"/dev/ttyUSB99\"\nenabled = false\n",
    );
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "radio zb", "fail", "does not exist");
    let fix = check(&report, "radio zb")["fix"]
        .as_str()
        .unwrap_or_default();
    assert!(fix.contains("plug the radio in"), "{fix}");
    // A disabled radio is never opened, so its absence is fine.
    assert_status(&report, "radio off", "ok", "disabled");
    assert_status(&report, "radio sim0", "ok", "emulator");
}

#[test]
fn serial_port_that_is_not_a_device_fails() {
    let s = Setup::new();
    let config = s.config(
        "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"/dev/null/not-a-tty\"\n",
    );
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_eq!(check(&report, "radio zb")["status"], "fail", "{report:#}");

    // A character device that is not a tty: `run` would retry it for ever ("Not a
    // typewriter"). Told by sysfs, where the kernel has it.
    if Path::new("/sys/dev/char/1:3/subsystem").exists() {
        let config =
            s.config("[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"/dev/null\"\n");
        let (out, report) = s.doctor_as_me(&config);
        assert_exit(&out, 1, &report);
        assert_status(
            &report,
            "radio zb",
            "fail",
            "not a serial device (a `mem` device)",
        );
    }
}

#[test]
fn master_key_too_open_fails_and_a_missing_one_is_created_at_start() {
    let s = Setup::new();
    let config = s.config("");

    fs::set_permissions(&s.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "master key", "fail", "mode 0644");
    let fix = check(&report, "master key")["fix"]
        .as_str()
        .unwrap_or_default();
    assert!(fix.contains("chmod 600"), "{fix}");

    // Missing outside the installed service (no unit loads this file as its
    // credential): the daemon creates it at its first start, as `run` does.
    fs::remove_file(&s.key).expect("rm key");
    let (_, report) = s.doctor_as_me(&config);
    assert_status(&report, "master key", "warn", "creates one");
}

#[test]
fn master_key_from_systemd_credentials_directory() {
    let s = Setup::new();
    let config = s.config("");
    let creds = s.dir.path().join("credentials");
    fs::create_dir(&creds).expect("mkdir");
    let key = creds.join("master-key");
    fs::write(&key, [7u8; 32]).expect("write");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).expect("chmod");
    let out = Command::new(bin())
        .args(["doctor", "--json", "--user", &s.user, "--config"])
        .arg(&config)
        // Must not be consulted when the credential is there.
        .args(["--master-key", "/nonexistent/master.key"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .expect("run doctor");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_exit(&out, 0, &report);
    assert_status(&report, "master key", "ok", "systemd credential");
}

#[test]
fn unwritable_state_dir_fails() {
    let s = Setup::new();

    // A state dir that cannot exist: its parent is a regular file.
    let blocker = s.dir.path().join("a-file");
    fs::write(&blocker, "x").expect("write");
    let config = s.config_with_state(&blocker.join("state"), "");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_eq!(check(&report, "state dir")["status"], "fail", "{report:#}");

    // One that does not exist yet where the daemon may create it, as `run` does.
    let config = s.config_with_state(&s.dir.path().join("new").join("state"), "");
    let (_, report) = s.doctor_as_me(&config);
    assert_status(&report, "state dir", "warn", "creates it");

    // A state dir the service user may not write to. Root may write anywhere, so
    // when the tests run as root the service user is `nobody`.
    let locked = s.dir.path().join("locked");
    fs::create_dir(&locked).expect("mkdir");
    let as_root = nix::unistd::geteuid().is_root();
    let user = if as_root {
        fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod");
        "nobody".to_string()
    } else {
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).expect("chmod");
        s.user.clone()
    };
    let config = s.config_with_state(&locked, "");
    let (out, report) = s.doctor(&config, &["--user", &user]);
    assert_exit(&out, 1, &report);
    assert_status(&report, "state dir", "fail", "cannot write");
    let fix = check(&report, "state dir")["fix"]
        .as_str()
        .unwrap_or_default();
    assert!(fix.contains("chown"), "{fix}");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");

    // An immutable one (`chattr +i`, as root on a filesystem that has it): every bit
    // says yes and `run` refuses it; doctor said ok.
    let frozen = s.dir.path().join("frozen");
    fs::create_dir(&frozen).expect("mkdir");
    fs::set_permissions(&frozen, fs::Permissions::from_mode(0o700)).expect("chmod");
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&frozen)
            .status()
            .is_ok_and(|st| st.success())
    };
    if as_root && chattr("+i") {
        let config = s.config_with_state(&frozen, "");
        let (out, report) = s.doctor_as_me(&config);
        chattr("-i");
        assert_exit(&out, 1, &report);
        assert_status(&report, "state dir", "fail", "cannot create a file");
        let fix = check(&report, "state dir")["fix"]
            .as_str()
            .unwrap_or_default();
        assert!(fix.contains("chattr -i"), "{fix}");
    }
}

#[test]
fn broker_on_a_closed_or_silent_port_fails_and_a_real_broker_logs_in() {
    let s = Setup::new();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:{closed}\"\n"
    ));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", "cannot connect");

    // Something listens but never answers a login: not taken for a broker.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let config = s.config(&format!("[upstream]\nurl = \"mqtt://127.0.0.1:{port}\"\n"));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", "no answer to an MQTT login");

    let broker = crate::mqtt::broker();
    let config = s.config(&format!("[upstream]\nurl = \"{}\"\n", broker.url()));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 0, &report);
    assert_status(
        &report,
        "broker",
        "ok",
        "login without credentials accepted",
    );
    assert_status(&report, "disk space", "ok", "outbox");
}

/// `[upstream]` with `username` and a password file holding `password`.
fn login_config(s: &Setup, url: &str, password: &str, extra: &str) -> PathBuf {
    let file = s.dir.path().join("mqtt-password");
    fs::write(&file, format!("{password}\n")).expect("password");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    s.config(&format!(
        "[upstream]\nurl = \"{url}\"\nusername = \"gw\"\npassword_file = \"{}\"\n{extra}",
        file.display()
    ))
}

/// doctor against the broker at `url` that takes user `gw` with `s3cret-pw`: that
/// login passes; with `wrong-pw` it fails saying `refused`. The failing run is returned.
fn right_then_wrong_password(s: &Setup, url: &str, refused: &str) -> (Output, Value) {
    let (out, report) = s.doctor_as_me(&login_config(s, url, "s3cret-pw", ""));
    assert_exit(&out, 0, &report);
    assert_status(&report, "broker", "ok", "login as `gw` accepted");
    let (out, report) = s.doctor_as_me(&login_config(s, url, "wrong-pw", ""));
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", refused);
    (out, report)
}

/// A wrong password was "ok" while the TCP connection alone was checked: the
/// daemon then retried its login for ever. rumqttd closes the connection on a refused
/// login without answering; either way the password is never printed.
#[test]
fn a_login_the_broker_refuses_fails_and_the_right_one_passes() {
    let s = Setup::new();
    let port = crate::rumqttd_support::start_with_login("doctor-login", "gw", "s3cret-pw");
    let url = format!("mqtt://127.0.0.1:{port}");
    let (out, report) =
        right_then_wrong_password(&s, &url, "closed the connection at the login as `gw`");
    let fix = check(&report, "broker")["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("upstream.password_file"), "{fix}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("wrong-pw") && !text.contains("s3cret"),
        "{text}"
    );
}

/// mosquitto answers a refused login with a CONNACK: its code is named, in MQTT 3.1.1
/// and in MQTT 5. (mosquitto is installed by CI; without it this test has nothing to
/// run against.)
#[test]
fn mosquittos_refusals_are_named_with_their_code() {
    if Command::new("mosquitto").arg("-h").output().is_err() {
        eprintln!("mosquitto is not installed: skipped");
        return;
    }
    let s = Setup::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let passwords = s.dir.path().join("mosquitto.passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["gw", "s3cret-pw"])
        .output()
        .expect("mosquitto_passwd");
    assert!(made.status.success(), "{made:?}");
    let conf = s.dir.path().join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            // `user root`: mosquitto started as root keeps root (it would switch to
            // the `mosquitto` user, which cannot read this test's directory).
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
    )
    .expect("conf");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _broker = Kill(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("mqtt://127.0.0.1:{port}");
    right_then_wrong_password(
        &s,
        &url,
        "refused the login as `gw`: not authorized (code 5)",
    );
    let (out, report) = s.doctor_as_me(&login_config(&s, &url, "wrong-pw", "protocol = 5\n"));
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", "not authorized (code 0x87)");
    let anonymous = s.config(&format!("[upstream]\nurl = \"{url}\"\n"));
    let (out, report) = s.doctor_as_me(&anonymous);
    assert_exit(&out, 1, &report);
    assert_status(
        &report,
        "broker",
        "fail",
        "refused the login without credentials",
    );
    let fix = check(&report, "broker")["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("set upstream.username"), "{fix}");
}

/// A loopback TLS server with a self-signed certificate for `localhost` that
/// completes handshakes and passes the login on to the test broker, until the test
/// ends.
struct TlsServer {
    port: u16,
    ca_pem: String,
}

fn tls_server() -> TlsServer {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server cert");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        return;
                    }
                }
                // A TLS listener in front of the test broker: the login (CONNECT, then
                // CONNACK) goes through to it.
                let Ok(mut broker) = TcpStream::connect(crate::mqtt::broker().socket()) else {
                    return;
                };
                let _ = broker.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut tls = rustls::Stream::new(&mut conn, &mut stream);
                let mut buf = [0u8; 4096];
                let Ok(n) = tls.read(&mut buf) else { return };
                if n == 0 || broker.write_all(&buf[..n]).is_err() {
                    return;
                }
                if let Ok(m) = broker.read(&mut buf) {
                    let _ = tls.write_all(&buf[..m]);
                    let _ = tls.flush();
                }
            });
        }
    });
    TlsServer {
        port,
        ca_pem: cert.pem(),
    }
}

#[test]
fn broker_tls_certificate_is_validated() {
    let s = Setup::new();
    let server = tls_server();

    // System roots do not know a self-signed certificate.
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtts://localhost:{}\"\n",
        server.port
    ));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", "not signed by");
    let fix = check(&report, "broker")["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("ca_file"), "{fix}");

    // With the certificate as ca_file the handshake validates.
    let ca = s.dir.path().join("ca.pem");
    fs::write(&ca, &server.ca_pem).expect("write ca");
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtts://localhost:{}\"\nca_file = \"{}\"\n",
        server.port,
        ca.display()
    ));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 0, &report);
    assert_status(&report, "broker", "ok", "handshake OK");
    assert_status(
        &report,
        "broker",
        "ok",
        "login without credentials accepted",
    );

    // The right CA but the wrong name.
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\n",
        server.port,
        ca.display()
    ));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "broker", "fail", "not valid for `127.0.0.1`");

    // A ca_file that is not there is named as such.
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtts://localhost:{}\"\nca_file = \"{}\"\n",
        server.port,
        s.dir.path().join("missing.pem").display()
    ));
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "upstream.ca_file", "fail", "does not exist");
}

/// The shipped config has no radio and no [upstream] so that the daemon starts on a
/// bare gateway; its examples are commented out with a single '#'. Switched on, the
/// examples must still be a valid config.
#[test]
fn packaged_config_examples_are_valid_when_uncommented() {
    let shipped = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/fieldgate.toml"
    ))
    .expect("read packaging/fieldgate.toml");
    assert!(
        !shipped.lines().any(|l| l.starts_with("[[radio]]")),
        "ships no radio"
    );
    assert!(
        !shipped.lines().any(|l| l.starts_with("[upstream]")),
        "ships no upstream"
    );
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(uncommented.contains("\n[[radio]]\n") && uncommented.contains("\n[upstream]\n"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("examples.toml");
    fs::write(&path, uncommented).expect("write");
    // The shipped config names the group the package creates: checked as a config
    // for another machine, so a host without that group does not fail it.
    let out = Command::new(bin())
        .args(["config", "check", "--elsewhere"])
        .arg(&path)
        .output()
        .expect("run config check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 radio(s)"));
}

#[test]
fn state_files_open_to_others_fail_and_the_wal_is_counted() {
    let s = Setup::new();
    let config = s.config("");
    let db = s.state.join("fieldgate.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    fs::write(s.state.join("fieldgate.db-wal"), vec![0u8; 3 * 1024 * 1024]).unwrap();
    for f in ["fieldgate.db", "fieldgate.db-wal"] {
        fs::set_permissions(s.state.join(f), fs::Permissions::from_mode(0o640)).unwrap();
    }
    let (_, report) = s.doctor_as_me(&config);
    assert_status(&report, "state dir", "ok", "WAL 3.0 MiB");

    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "state dir", "fail", "mode 0644");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();

    fs::set_permissions(&s.state, fs::Permissions::from_mode(0o755)).unwrap();
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, "state dir", "fail", "mode 0755");
}

#[test]
fn the_configured_master_key_is_the_one_checked() {
    let s = Setup::new();
    let key = s.dir.path().join("elsewhere.key");
    fs::write(&key, format!("{}\n", "cd".repeat(32))).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let config = s.config_with_state(&s.state, "");
    // master_key_file goes in [gateway]: rewrite the file with it.
    let text = fs::read_to_string(&config).unwrap().replacen(
        "[api]",
        &format!("master_key_file = \"{}\"\n\n[api]", key.display()),
        1,
    );
    fs::write(&config, text).unwrap();
    let out = Command::new(bin())
        .args([
            "doctor",
            "--json",
            "--timeout",
            "3s",
            "--user",
            &s.user,
            "--config",
        ])
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_status(&report, "master key", "fail", "elsewhere.key has mode 0644");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // Owned by someone else (neither root nor the service user): refused.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&key, Some(4242), None).unwrap();
        let out = Command::new(bin())
            .args([
                "doctor",
                "--json",
                "--timeout",
                "3s",
                "--user",
                &s.user,
                "--config",
            ])
            .arg(&config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_status(&report, "master key", "fail", "uid 4242");
    }
}

/// A LoRa P2P radio's encryption key file: fine at 0600 with a key and an IV; readable by
/// the group, or not holding 16-byte values, it fails with a fix. The key is never shown.
#[test]
fn lora_p2p_key_file_too_open_or_malformed_fails() {
    let s = Setup::new();
    let key = s.dir.path().join("lora-p2p.key");
    let secret = "2b7e151628aed2a6abf7158809cf4f3c";
    fs::write(&key, format!("{secret}\n{}\n", "f0".repeat(16))).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = s.config(&format!(
        "[[radio]]\nname = \"p2p0\"\nprotocol = \"lora-p2p\"\nport = \"sim://lora-rak3172\"\n[radio.options]\nencryption_key_file = \"{}\"\n",
        key.display()
    ));
    let name = "radio p2p0 encryption key";
    let (_, report) = s.doctor_as_me(&config);
    assert_status(&report, name, "ok", "holds a key and an IV");

    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, name, "fail", "mode 0640");
    let fix = check(&report, name)["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("chmod 600"), "{fix}");

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&key, format!("{secret}\n")).expect("key without IV");
    let (out, report) = s.doctor_as_me(&config);
    assert_exit(&out, 1, &report);
    assert_status(&report, name, "fail", "two lines of 32 hex digits");
    assert!(
        !report.to_string().contains(secret),
        "the key in the report"
    );
}

/// The broker password the service reads, group-readable as the docs once said
/// (root:fieldgate 0640): the service's group is the technicians' group too, so doctor
/// warns; 0600 is fine.
#[test]
fn a_broker_password_the_technicians_group_can_read_is_a_warning() {
    let s = Setup::new();
    let password = s.dir.path().join("mqtt-password");
    fs::write(&password, "hunter2\n").unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o640)).unwrap();
    let config = s.config(&format!(
        "[upstream]\nurl = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword_file = \"{}\"\n",
        password.display()
    ));
    let (_, report) = s.doctor_as_me(&config);
    assert_status(&report, "upstream.password_file", "warn", "mode 0640");
    assert!(!report.to_string().contains("hunter2"));
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let (_, report) = s.doctor_as_me(&config);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["check"] != "upstream.password_file"),
        "{report:#}"
    );
}

/// A `tcp://` radio the running daemon holds is not probed: ser2net set up to kick the
/// old client (as docs/operations.md suggests) would drop the daemon's link for it. With
/// the daemon stopped, the port is probed as before.
#[test]
fn a_tcp_radio_the_running_daemon_holds_is_not_probed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(c);
            }
        });
    }
    let mut d = crate::common::TestDaemon::start(&format!(
        "[[radio]]\nname = \"zb0\"\nprotocol = \"zigbee\"\nport = \"tcp://127.0.0.1:{port}\"\n"
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let doctor = |config: &Path| -> Value {
        let out = Command::new(bin())
            .args(["doctor", "--json", "--timeout", "3s", "--config"])
            .arg(config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let report = doctor(&d.config);
    let c = check(&report, "radio zb0");
    assert_eq!(c["status"], "ok", "{c:#}");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not probed"),
        "{c:#}"
    );
    // Any new connection in the meantime is the daemon's own reconnect, at most one.
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) <= before + 1);
    d.terminate(std::time::Duration::from_secs(10));
    let report = doctor(&d.config);
    let c = check(&report, "radio zb0");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("reachable"),
        "{c:#}"
    );
}

/// A damaged database (cut short, or overwritten): `run` exits 2 (a setup error,
/// which systemd does not restart in a loop) saying what to do, and `doctor` fails
/// its state directory check naming the database, where it said ok.
#[test]
fn a_damaged_database_fails_doctor_and_stops_run_with_exit_2() {
    let mut d = crate::common::TestDaemon::start("");
    assert!(d.cli(&["status"]).status.success());
    d.terminate(std::time::Duration::from_secs(10))
        .expect("stopped");
    let db = d.db();
    for damage in ["truncate", "overwrite"] {
        match damage {
            "truncate" => {
                let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                f.set_len(8192).unwrap();
            }
            _ => {
                use std::io::{Seek, Write};
                let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                f.write_all(&[0x5A; 4096]).unwrap();
            }
        }
        let out = Command::new(bin())
            .args(["run", "--config"])
            .arg(&d.config)
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{damage}: {err}");
        assert!(
            err.contains("is damaged") && err.contains("fieldgate restore"),
            "{damage}: {err}"
        );
        let out = Command::new(bin())
            .args(["doctor", "--json", "--timeout", "3s", "--config"])
            .arg(&d.config)
            .env_remove("FIELDGATE_CONFIG")
            .output()
            .expect("doctor");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_status(&report, "state dir", "fail", "is damaged");
        assert_ne!(out.status.code(), Some(0), "{damage}");
    }
}
