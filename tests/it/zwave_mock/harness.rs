//! The zwave-js mock-server as a child process (a fresh one per test) and the Z-Wave driver
//! run directly on a `tcp://` link to it, its events collected.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldgate::config::{PortSpec, Protocol};
use fieldgate::model::{DeviceEvent, RadioCommand, RadioState};
use fieldgate::radio::{link, DriverBox, DriverIo, RadioCounters};
use tokio::sync::{mpsc, watch};

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/zwave")
}

/// The mock controller process and what it printed.
pub struct Mock {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    killed: bool,
}

impl Mock {
    /// `None` (the test is skipped) unless `FIELDGATE_PEERS=1`. Panics outside a network
    /// namespace with only loopback: the mock's mDNS announcements must not leave the
    /// machine.
    pub fn start() -> Option<Mock> {
        if std::env::var("FIELDGATE_PEERS").as_deref() != Ok("1") {
            eprintln!("skipped: set FIELDGATE_PEERS=1 (after tests/peers/zwave/setup.sh)");
            return None;
        }
        // /proc/net/dev lists this network namespace's interfaces (sysfs may show the host's).
        let interfaces: Vec<String> = std::fs::read_to_string("/proc/net/dev")
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_string()))
            .collect();
        assert_eq!(
            interfaces,
            ["lo"],
            "the zwave-js mock announces itself over mDNS: run these tests in a network \
             namespace with only loopback (`unshare -n`, then `ip link set lo up`)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = peer_dir();
        let mut child = Command::new("node")
            .current_dir(&dir)
            .args([
                "mock-server.cjs",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
                "mock/gateway.cjs",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (tests/peers/zwave/setup.sh installs the mock)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Server listening") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the mock server started listening");
        Some(Mock {
            child,
            port,
            lines,
            killed: false,
        })
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self, line: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == line)
            .count()
    }

    pub async fn wait_count(&self, line: &str, n: usize, secs: u64) {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.count(line) < n {
            assert!(
                tokio::time::Instant::now() < until,
                "the mock did not print `{line}` {n} times: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_line(&self, line: &str, secs: u64) {
        self.wait_count(line, 1, secs).await;
    }

    /// The mock is still running: it exits with an error on any framing mistake of the host.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the mock exited ({status}): {:?}", self.lines());
        }
    }

    pub fn kill(&mut self) {
        self.assert_alive();
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if !self.killed {
            let status = self.child.try_wait();
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Ok(Some(status)) = status {
                if !std::thread::panicking() {
                    panic!("the mock exited during the test ({status})");
                }
            }
        }
    }
}

/// The Z-Wave driver on a `tcp://` link, with the hub's ends of its channels.
pub struct Driven {
    events: mpsc::Receiver<DeviceEvent>,
    commands: mpsc::Sender<RadioCommand>,
    counters: Arc<RadioCounters>,
    _state: watch::Receiver<RadioState>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    seen: Vec<DeviceEvent>,
}

impl Driven {
    pub fn start(port: u16) -> Driven {
        Self::start_with(
            PortSpec::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            None,
            "report_timeout = \"1s\"\nwake_up_hold = \"500ms\"",
        )
    }

    /// The driver on `port`, or on `link` when one is given (an emulator's pipe).
    pub fn start_with(port_spec: PortSpec, link: Option<link::Link>, options: &str) -> Driven {
        Self::start_in(port_spec, link, options, None)
    }

    /// As [`Driven::start_with`], keeping what the driver learns in `state_dir` (as the
    /// daemon's supervisor gives it one), so that a second driver there is a restart.
    pub fn start_in(
        port_spec: PortSpec,
        link: Option<link::Link>,
        options: &str,
        state_dir: Option<std::path::PathBuf>,
    ) -> Driven {
        if std::env::var_os("ZW_LOG").is_some() {
            fieldgate::daemon::init_logging("debug");
        }
        // Shorter than the defaults, so a sleeping node's turn comes quickly.
        let options: toml::Table = options.parse().unwrap();
        let spec = fieldgate::radio::spec(Protocol::Zwave).expect("the zwave driver is built in");
        let DriverBox::ByteStream(mut driver) = (spec.new)() else {
            panic!("the zwave driver takes a byte stream")
        };
        let (events_tx, events) = mpsc::channel(256);
        let (commands, commands_rx) = mpsc::channel(16);
        let (state_tx, state) = watch::channel(RadioState::Starting);
        let counters = Arc::new(RadioCounters::default());
        let mut io = DriverIo {
            radio: "zwave0".into(),
            protocol: Protocol::Zwave,
            port: port_spec.clone(),
            baud: None,
            options,
            events: events_tx,
            commands: commands_rx,
            state: state_tx,
            secrets: None,
            counters: counters.clone(),
            state_dir,
        };
        let task = tokio::spawn(async move {
            let link = match link {
                Some(l) => l,
                None => link::open(&port_spec, None).await?,
            };
            driver.run(link, &mut io).await
        });
        Driven {
            events,
            commands,
            counters,
            _state: state,
            task: Some(task),
            seen: Vec::new(),
        }
    }

    /// The driver's counters (bad frames, timeouts...).
    pub fn counters(&self) -> fieldgate::radio::RadioCountersSnapshot {
        self.counters.snapshot()
    }

    pub async fn command(&self, cmd: RadioCommand) {
        self.commands
            .send(cmd)
            .await
            .expect("the driver takes commands");
    }

    /// An event seen so far that `f` accepts.
    pub fn seen(&self, f: impl Fn(&DeviceEvent) -> bool) -> Option<DeviceEvent> {
        self.seen.iter().find(|e| f(e)).cloned()
    }

    /// The next event `f` accepts (earlier ones are looked at first), within `secs`.
    pub async fn wait(
        &mut self,
        what: &str,
        secs: u64,
        f: impl Fn(&DeviceEvent) -> bool,
    ) -> DeviceEvent {
        let until = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(ev)) => {
                    self.seen.push(ev.clone());
                    if f(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!("{what}: the driver stopped: {:?}", self.finished(1).await),
                Err(_) => panic!("{what}: not within {secs} s; events: {:#?}", self.seen),
            }
        }
    }

    pub fn assert_running(&self) {
        assert!(
            !self.task.as_ref().is_some_and(|t| t.is_finished()),
            "the driver ended"
        );
    }

    /// How the driver ended, within `secs`.
    pub async fn finished(&mut self, secs: u64) -> anyhow::Result<()> {
        let task = self.task.take().expect("driver task");
        // The events channel holds 256: the driver never blocks on it within a test.
        match tokio::time::timeout(Duration::from_secs(secs), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow::anyhow!("driver panicked: {e}")),
            Err(_) => Err(anyhow::anyhow!("timeout: the driver did not end")),
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
