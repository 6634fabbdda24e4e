//! Bad configs are refused with the file, line and key named, exit code 2, and
//! nothing started.

use crate::common::{base_config, fieldgate, stderr, stdout};

struct Case {
    name: &'static str,
    /// Appended to a valid `[gateway]` + `[api]` base, or a whole file when `whole`.
    toml: &'static str,
    whole: bool,
    expect: &'static str,
    /// `line:` expected in the message, if the error has a location.
    line: Option<usize>,
}

const fn case(
    name: &'static str,
    toml: &'static str,
    expect: &'static str,
    line: Option<usize>,
) -> Case {
    Case {
        name,
        toml,
        whole: false,
        expect,
        line,
    }
}

const fn whole(
    name: &'static str,
    toml: &'static str,
    expect: &'static str,
    line: Option<usize>,
) -> Case {
    Case {
        name,
        toml,
        whole: true,
        expect,
        line,
    }
}

// The base config is 7 lines long, so an appended snippet starts on line 8.
const CASES: &[Case] = &[
    whole("unknown top-level table", "[gatewey]\nid = \"x\"\n", "unknown field `gatewey`", Some(1)),
    whole("missing gateway table", "[api]\nsocket = \"/run/x.sock\"\n", "missing field `gateway`", None),
    whole("missing gateway id", "[gateway]\nstate_dir = \"/tmp/x\"\n", "missing field `id`", Some(1)),
    whole("wrong type for id", "[gateway]\nid = 5\nstate_dir = \"/tmp/x\"\n", "key `gateway.id`", Some(2)),
    whole("bad characters in id", "[gateway]\nid = \"my gw\"\nstate_dir = \"/tmp/x\"\n", "key `gateway.id`", Some(2)),
    whole("unknown key in gateway", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\nname = \"x\"\n", "key `gateway.name`: unknown field `name`", Some(4)),
    whole("missing state dir", "[gateway]\nid = \"gw\"\n[api]\nsocket = \"/run/x.sock\"\n", "key `gateway.state_dir`: missing field `state_dir`", Some(1)),
    whole("not TOML at all", "[gateway\nid = \"gw\"\n", "unclosed table", Some(1)),
    whole("policy key that is not one", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\npolicy_public_key = \"abc\"\n", "not 64 hex characters", Some(4)),
    whole("log level that is not one", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\nlog_level = \"loud\"\n", "not a log level", Some(4)),
    case("duplicate radio names", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n[[radio]]\nname = \"zb\"\nprotocol = \"zwave\"\nport = \"sim://zwave\"\n", "duplicate radio name `zb`", Some(13)),
    case("two radios on one serial port", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"/dev/ttyUSB9\"\n[[radio]]\nname = \"zw\"\nprotocol = \"zwave\"\nport = \"/dev/ttyUSB9\"\n", "/dev/ttyUSB9 is already radio `zb`'s", Some(15)),
    case("one serial device written two ways", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"/dev/ttyUSB9\"\n[[radio]]\nname = \"zw\"\nprotocol = \"zwave\"\nport = \"/dev/./ttyUSB9/\"\n", "/dev/ttyUSB9 is already radio `zb`'s", Some(15)),
    case("two radios on one TCP endpoint", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"tcp://Coord.local:6638\"\n[[radio]]\nname = \"zw\"\nprotocol = \"zwave\"\nport = \"tcp://coord.local:6638\"\n", "tcp://coord.local:6638 is already radio `zb`'s", Some(15)),
    whole("a shared directory as the state directory", "[gateway]\nid = \"gw\"\nstate_dir = \"/var/lib\"\n", "`/var/lib` is a system directory", Some(3)),
    whole("the home directories as the state directory", "[gateway]\nid = \"gw\"\nstate_dir = \"/home/\"\n", "is a system directory", Some(3)),
    case("two forwarders on one UDP port", "[[radio]]\nname = \"a\"\nprotocol = \"lora\"\nport = \"udp://0.0.0.0:1700\"\n[[radio]]\nname = \"b\"\nprotocol = \"lora\"\nport = \"udp://127.0.0.1:1700\"\n", "udp port 1700 is already radio `a`'s", Some(15)),
    case("serial path climbing out of /dev", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"/dev/../etc/passwd\"\n", "`..` component", Some(11)),
    case("unknown protocol", "[[radio]]\nname = \"r\"\nprotocol = \"thread\"\nport = \"/dev/ttyUSB0\"\n", "unknown variant `thread`", Some(10)),
    case("missing port", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\n", "missing field `port`", Some(8)),
    case("relative serial path", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"ttyUSB0\"\n", "not a serial device path", Some(11)),
    case("tcp without port", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"tcp://192.0.2.1\"\n", "needs a port", Some(11)),
    case("emulator for another protocol", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"sim://zwave\"\n", "emulates a zwave radio", Some(11)),
    case("unsupported scheme", "[[radio]]\nname = \"r\"\nprotocol = \"zwave\"\nport = \"rfc2217://host:2217\"\n", "unsupported scheme", Some(11)),
    case("BLE on a serial port", "[[radio]]\nname = \"r\"\nprotocol = \"ble\"\nport = \"/dev/ttyUSB0\"\n", "bluez://hci0", Some(11)),
    case("odd baud rate", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"/dev/ttyUSB0\"\nbaud = 12345\n", "not a supported baud rate", Some(12)),
    case("radio name with a space", "[[radio]]\nname = \"my radio\"\nprotocol = \"zigbee\"\nport = \"/dev/ttyUSB0\"\n", "key `radio.name`", Some(9)),
    case("unknown radio key", "[[radio]]\nname = \"r\"\nprotocol = \"zigbee\"\nport = \"/dev/ttyUSB0\"\nbuad = 9600\n", "unknown field `buad`", Some(12)),
    case("plaintext MQTT to a remote broker", "[upstream]\nurl = \"mqtt://broker.example.com:1883\"\n", "plaintext MQTT", Some(9)),
    case("MQTT URL with another scheme", "[upstream]\nurl = \"http://broker.example.com\"\n", "unsupported scheme `http`", Some(9)),
    case("MQTT URL that is not a URL", "[upstream]\nurl = \"not a url\"\n", "not a valid URL", Some(9)),
    case("MQTT URL with a password", "[upstream]\nurl = \"mqtts://user:hunter2@b.example.com:8883\"\n", "credentials do not belong in the URL", Some(9)),
    case("MQTT URL with a user name", "[upstream]\nurl = \"mqtts://user@b.example.com\"\n", "upstream.password_file", Some(9)),
    case("MQTT URL with a path", "[upstream]\nurl = \"mqtts://b.example.com/mqtt\"\n", "without a path, query or fragment", Some(9)),
    case("MQTT URL with a query", "[upstream]\nurl = \"mqtts://b.example.com?x=1\"\n", "without a path, query or fragment", Some(9)),
    case("MQTT URL on port 0", "[upstream]\nurl = \"mqtts://b.example.com:0\"\n", "port 0", Some(9)),
    case("password file missing", "[upstream]\nurl = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n", "key `upstream.password_file`: cannot read the password file /nonexistent/pw", Some(11)),
    case("relative password file", "[upstream]\nurl = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword_file = \"pw\"\n", "key `upstream.password_file`: `pw` is relative: it must be an absolute path", None),
    case("relative CA file", "[upstream]\nurl = \"mqtts://b.example.com\"\nca_file = \"certs/ca.pem\"\n", "key `upstream.ca_file`: `certs/ca.pem` is relative", None),
    case("CA file missing", "[upstream]\nurl = \"mqtts://b.example.com\"\nca_file = \"/nonexistent/ca.pem\"\n", "key `upstream.ca_file`: cannot read the CA file /nonexistent/ca.pem", Some(10)),
    case("CA file with no certificate", "[upstream]\nurl = \"mqtts://b.example.com\"\nca_file = \"/etc/passwd\"\n", "/etc/passwd", Some(10)),
    case("keepalive out of range", "[upstream]\nurl = \"mqtt://127.0.0.1\"\nkeepalive = \"100000s\"\n", "key `upstream.keepalive`", Some(10)),
    case("password file without a user name", "[upstream]\nurl = \"mqtt://127.0.0.1\"\npassword_file = \"/etc/hostname\"\n", "key `upstream.password_file`", Some(10)),
    whole("socket path too long for a Unix socket", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n[api]\nsocket = \"/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n", "a Unix socket's path is at most 107", Some(5)),
    case("empty client id", "[upstream]\nurl = \"mqtts://b.example.com\"\nclient_id = \"\"\n", "key `upstream.client_id`: must not be empty", None),
    case("outbox age of nothing", "[upstream]\nurl = \"mqtts://b.example.com\"\n[upstream.outbox]\nmax_age = \"0s\"\n", "key `upstream.outbox.max_age`: 0s is out of range", Some(11)),
    case("outbox age of a millennium", "[upstream]\nurl = \"mqtts://b.example.com\"\n[upstream.outbox]\nmax_age = \"1000y\"\n", "out of range", None),
    case("client cert without key", "[upstream]\nurl = \"mqtts://broker.example.com\"\nclient_cert = \"/etc/fieldgate/c.pem\"\n", "client_cert and client_key", None),
    case("outbox too small", "[upstream]\nurl = \"mqtts://b.example.com\"\n[upstream.outbox]\nmax_bytes = 10\n", "at least 1048576", Some(11)),
    case("commit window too long", "[store]\ncommit_window = \"2s\"\n", "too long", Some(9)),
    case("commit window not a duration", "[store]\ncommit_window = \"soon\"\n", "key `store.commit_window`", Some(9)),
    case("zero ops per commit", "[store]\ncommit_max_ops = 0\n", "between 1 and 100000", Some(9)),
    case("linger too long", "[store]\nlinger = \"2s\"\n", "key `store.linger`", Some(9)),
    case("state interval too long", "[store]\nstate_interval = \"2min\"\n", "at most 1m", None),
    // Paths the gateway writes, and values a running gateway would suffer from.
    whole("state dir in /etc", "[gateway]\nid = \"gw\"\nstate_dir = \"/etc\"\n", "key `gateway.state_dir`: `/etc` is a system directory", Some(3)),
    whole("state dir at the root", "[gateway]\nid = \"gw\"\nstate_dir = \"/\"\n", "system directory", Some(3)),
    whole("state dir under /usr", "[gateway]\nid = \"gw\"\nstate_dir = \"/usr/local/fg\"\n", "system directory", Some(3)),
    whole("state dir under /lib64", "[gateway]\nid = \"gw\"\nstate_dir = \"/lib64/fg\"\n", "system directory", Some(3)),
    whole("relative state dir", "[gateway]\nid = \"gw\"\nstate_dir = \"state\"\n", "must be an absolute path", Some(3)),
    whole("state dir climbing out", "[gateway]\nid = \"gw\"\nstate_dir = \"/x/../../etc/y\"\n", "`..` component", Some(3)),
    whole("NUL in the state dir", "[gateway]\nid = \"gw\"\nstate_dir = \"/var/lib/fg\\u0000x\"\n", "NUL", Some(3)),
    whole("relative master key", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\nmaster_key_file = \"master.key\"\n", "key `gateway.master_key_file`", Some(4)),
    whole("master key loose in /etc", "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\nmaster_key_file = \"/etc/master.key\"\n", "system directory", Some(4)),
    case("reconnect backoff of ten days", "[upstream]\nurl = \"mqtts://b.example.com\"\nreconnect_max = \"10days\"\n", "key `upstream.reconnect_max`: 10days is out of range", None),
    case("reconnect backoff under a second", "[upstream]\nurl = \"mqtts://b.example.com\"\nreconnect_max = \"100ms\"\n", "out of range", None),
    // Radio options are the driver's, checked before anything starts.
    case("misspelt radio option", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n[radio.options]\nchannel = 15\nchanel = 15\n", "key `radio.options.chanel`: unknown zigbee option `chanel`", Some(14)),
    case("radio option out of range", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n[radio.options]\npan_id = \"0x1a62\"\nchannel = 99\n", "key `radio.options.channel`: zigbee option `channel` must be an integer from 11 to 26", Some(14)),
    case("BLE presence threshold out of range", "[[radio]]\nname = \"b\"\nprotocol = \"ble\"\nport = \"sim://ble\"\n[radio.options]\npresence_smoothing = 0.3\npresence_rssi = 20\n", "key `radio.options.presence_rssi`: ble option `presence_rssi` must be an integer from -120 to 0", Some(14)),
    case("radio option of the wrong type", "[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\noptions = { key_switch_delay = 30 }\n", "key `radio.options.key_switch_delay`", Some(12)),
];

/// `[api] group` must exist where the gateway runs; a config written for another
/// machine can be checked with `--elsewhere`, which says so as a warning.
#[test]
fn an_unknown_api_group_is_refused_here_and_a_warning_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fieldgate.toml");
    std::fs::write(
        &path,
        "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n\n[api]\ngroup = \"no-such-group-fg\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = fieldgate(&["config", "check", p]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(":6:")
            && stderr(&out).contains("key `api.group`: group `no-such-group-fg` does not exist"),
        "{}",
        stderr(&out)
    );
    let out = fieldgate(&["config", "check", "--elsewhere", p]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("warning: "), "{}", stderr(&out));
}

/// A site's Zigbee device definitions are checked with the config: a mistake names the
/// definitions file, its line and the key, and exits 2.
#[test]
fn site_device_definitions_are_checked_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("devices.d");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("10-ok.toml"),
        "[[device]]\nmodel = \"SITE-TH\"\nvendor = \"Site\"\nzigbee_model = [\"site.th\"]\n\n[[device.reading]]\ndp = 1\nname = \"temperature\"\ndivide = 10\n",
    )
    .unwrap();
    let path = dir.path().join("fieldgate.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = \"/tmp/x\"\n\n[[radio]]\nname = \"zb\"\nprotocol = \"zigbee\"\nport = \"sim://zigbee\"\n[radio.options]\ndefinitions_dir = \"{}\"\n",
            defs.display()
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = fieldgate(&["config", "check", p]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(
        defs.join("20-bad.toml"),
        "[[device]]\nmodel = \"SITE-TH2\"\nvendor = \"Site\"\nzigbee_model = [\"site.th2\"]\n\n[[device.reading]]\ndp = 1\nname = \"temperature\"\nunit = \"°F\"\n",
    )
    .unwrap();
    let out = fieldgate(&["config", "check", p]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("20-bad.toml:9:")
            && err.contains("key `device[0].reading[0].unit`")
            && err.contains("°C"),
        "{err}"
    );
}

#[test]
fn bad_configs_are_refused_with_location_and_exit_code_2() {
    assert!(CASES.len() >= 15);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        let text = if c.whole {
            c.toml.to_string()
        } else {
            base_config(dir.path(), c.toml)
        };
        std::fs::write(&path, &text).unwrap();
        let path_s = path.to_str().unwrap();
        for args in [
            vec!["config", "check", path_s],
            vec!["run", "--config", path_s],
        ] {
            let out = fieldgate(&args);
            let err = stderr(&out);
            let mut problems = Vec::new();
            if out.status.code() != Some(2) {
                problems.push(format!("exit code {:?}", out.status.code()));
            }
            if !err.contains(c.expect) {
                problems.push(format!("message lacks `{}`", c.expect));
            }
            if !err.contains(path_s) {
                problems.push("message does not name the file".into());
            }
            if err.contains("hunter2") {
                problems.push("message quotes the password".into());
            }
            if let Some(line) = c.line {
                if !err.contains(&format!("{path_s}:{line}:")) {
                    problems.push(format!("message does not name line {line}"));
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{} ({}): {}\n  stderr: {}",
                    c.name,
                    args[0],
                    problems.join(", "),
                    err.trim()
                ));
            }
        }
        // Nothing was started: no socket, no database.
        assert!(
            !dir.path().join("api.sock").exists(),
            "{}: socket created",
            c.name
        );
        assert!(
            !dir.path().join("state").exists(),
            "{}: state created",
            c.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A config path that names a device or a huge file is refused after a bounded read,
/// not read until memory runs out.
#[test]
fn a_config_file_too_large_to_be_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 * 1024 * 1024)).unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (path, why) in [
        (
            big.to_str().unwrap(),
            "larger than 1024 KiB: not a config file",
        ),
        (
            "/dev/zero",
            "a device, not a regular file: not a config file",
        ),
        // A FIFO nobody writes to: refused at once instead of waited on for ever.
        (
            fifo.to_str().unwrap(),
            "a FIFO, not a regular file: not a config file",
        ),
    ] {
        let out = fieldgate(&["config", "check", path]);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{path}: {}", stderr(&out));
    }
    let out = fieldgate(&["--config", fifo.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A secret the config names is read only if it is a regular file of bounded size:
/// `/dev/zero` as the password file is refused, not read until memory runs out.
#[test]
fn secret_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fieldgate.toml");
    for (key, path) in [("password_file", "/dev/zero"), ("ca_file", "/dev/urandom")] {
        let user = if key == "password_file" {
            "username = \"gw\"\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "[gateway]\nid = \"gw1\"\nstate_dir = \"{}\"\n[upstream]\nurl = \"mqtts://broker.example:8883\"\n{user}{key} = \"{path}\"\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let out = fieldgate(&["config", "check", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not a regular file"),
            "{key}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = fieldgate(&["config", "check", "/nonexistent/fieldgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn example_config_passes() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/fieldgate.toml");
    // It names the group the package creates; on a host without it, check it as
    // a config for another machine.
    let packaged_group = nix::unistd::Group::from_name("fieldgate")
        .ok()
        .flatten()
        .is_some();
    let out = if packaged_group {
        fieldgate(&["config", "check", example])
    } else {
        fieldgate(&["config", "check", "--elsewhere", example])
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("OK"));
}

/// A technician's CLI reads the config only to find the socket: a secret file the
/// service reads (here a LoRa P2P key this user cannot read, as a group member cannot)
/// does not stop `fieldgate status`; `config check` still refuses it.
#[test]
fn the_cli_finds_the_socket_without_reading_the_services_secret_files() {
    let d = crate::common::TestDaemon::start("");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let key = d.dir.path().join("no-such-p2p.key");
    let with_secret = d.dir.path().join("with-secret.toml");
    std::fs::write(
        &with_secret,
        format!(
            "{text}\n[[radio]]\nname = \"p2p0\"\nprotocol = \"lora-p2p\"\nport = \"sim://lora-rak3172\"\nenabled = false\n[radio.options]\nencryption_key_file = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let p = with_secret.to_str().unwrap();
    let out = fieldgate(&["config", "check", p]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("encryption_key_file"),
        "{}",
        stderr(&out)
    );
    let out = fieldgate(&["--config", p, "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A config edited since the daemon started, with a mistake in a key the CLI does not
/// need, still lets the CLI reach the running daemon (with a warning that the daemon
/// will refuse it); one whose socket cannot be read from it is an error.
#[test]
fn a_config_edited_with_a_typo_still_reaches_the_running_daemon() {
    let d = crate::common::TestDaemon::start("");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let typo = d.dir.path().join("typo.toml");
    std::fs::write(&typo, format!("{text}\n[store]\nfoo = 1\n")).unwrap();
    let p = typo.to_str().unwrap();
    let out = fieldgate(&["config", "check", p]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for args in [
        vec!["--config", p, "status"],
        vec!["--config", p, "audit", "tail", "-n", "1"],
    ] {
        let out = fieldgate(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("warning:") && err.contains("store.foo"),
            "{err}"
        );
        assert!(err.contains("will refuse this config"), "{err}");
    }
    std::fs::write(&typo, "[gateway\nid = 1\n").unwrap();
    let out = fieldgate(&["--config", p, "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `config check` without a path checks the config `--config` names (else the
/// installed one), as every other command reads it.
#[test]
fn config_check_without_a_path_checks_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fieldgate.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = fieldgate(&["--config", path.to_str().unwrap(), "config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        crate::common::stdout(&out).contains("OK (gateway gw"),
        "{}",
        crate::common::stdout(&out)
    );
}

/// A state directory on a read-only filesystem is a config error (exit 2, which
/// systemd does not restart), not a start failure retried for ever. Needs a mount
/// namespace (root): skipped without one.
#[test]
fn a_state_dir_on_a_read_only_filesystem_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("ro");
    std::fs::create_dir(&mnt).unwrap();
    let path = dir.path().join("fieldgate.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = \"{}\"\n",
            mnt.join("state").display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o ro tmpfs '{}' || exit 99; exec '{}' config check '{}'",
        mnt.display(),
        env!("CARGO_BIN_EXE_fieldgate"),
        path.display()
    );
    let out = match std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("unshare not available ({e}); skipped");
            return;
        }
    };
    if out.status.code() == Some(99) || stderr(&out).contains("unshare failed") {
        eprintln!("no mount namespace here; skipped: {}", stderr(&out));
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gateway.state_dir") && stderr(&out).contains("read-only filesystem"),
        "{}",
        stderr(&out)
    );
}

/// A mistyped `TOKIO_WORKER_THREADS` (the drop-in docs/operations.md suggests) is a
/// configuration error, not a panic that systemd would restart for ever.
#[test]
fn a_bad_worker_thread_count_is_a_configuration_error() {
    for bad in ["0", "abc", " 1", ""] {
        let out = std::process::Command::new(crate::common::bin())
            .args(["--socket", "/nonexistent/api.sock", "status"])
            .env("TOKIO_WORKER_THREADS", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("TOKIO_WORKER_THREADS"),
            "{bad:?}: {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("panicked"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
}

/// The state directory is the gateway's own: a link to a system directory is refused
/// by `config check`, and a shared (sticky) directory is refused at start and left as
/// it was, not closed to everyone else.
#[test]
fn a_state_directory_shared_with_others_is_refused_and_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("etclink");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let config = dir.path().join("fieldgate.toml");
    let write = |state: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "[gateway]\nid = \"gw1\"\nstate_dir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                state.display(),
                dir.path().join("api.sock").display()
            ),
        )
        .unwrap();
    };
    write(&link);
    let out = fieldgate(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("leads to `/etc`"), "{}", stderr(&out));

    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    write(&shared);
    // Refused by `config check` as by `run`, as a setup error (exit 2: not restarted),
    // naming the key, not as a directory that could not be created.
    for args in [
        vec!["config", "check", config.to_str().unwrap()],
        vec!["run", "--config", config.to_str().unwrap()],
    ] {
        let out = fieldgate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("shared directory") && stderr(&out).contains("gateway.state_dir"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("cannot create"), "{}", stderr(&out));
    }
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777);
}

/// Paths that exist as the wrong kind of thing are configuration errors (exit 2, which
/// systemd does not restart), named as such: a state directory that is a file, a master
/// key file that is a directory, an API socket path that is a file.
#[test]
fn paths_of_the_wrong_kind_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let config = dir.path().join("fieldgate.toml");
    let state = dir.path().join("state");
    let sock = dir.path().join("api.sock");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let cases = [
        (
            format!(
                "state_dir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                file.display(),
                sock.display()
            ),
            "is not a directory",
        ),
        (
            format!(
                "state_dir = \"{}\"\nmaster_key_file = \"{}\"\n[api]\nsocket = \"{}\"\n",
                state.display(),
                keys.display(),
                sock.display()
            ),
            "is a directory, not a file: name the key file itself",
        ),
        (
            format!(
                "state_dir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                state.display(),
                file.display()
            ),
            "exists and is not a socket",
        ),
    ];
    for (gateway, why) in cases {
        std::fs::write(&config, format!("[gateway]\nid = \"gw1\"\n{gateway}")).unwrap();
        for args in [vec!["config", "check"], vec!["run", "--config"]] {
            let mut args = args.clone();
            args.push(config.to_str().unwrap());
            let out = fieldgate(&args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} {why}: {}",
                stderr(&out)
            );
            assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}
