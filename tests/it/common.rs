//! Shared helpers: temp configs and a daemon process under test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldgate")
}

/// The CLI with `args`, clear of the caller's environment that would change it.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("FIELDGATE_SOCKET")
        .env_remove("FIELDGATE_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC");
    c
}

/// Runs the CLI with `args` and returns its output.
pub fn fieldgate(args: &[&str]) -> Output {
    command(args).output().expect("run fieldgate")
}

/// Runs the binary with `input` on its standard input (a `-` argument reads it).
pub fn fieldgate_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("FIELDGATE_SOCKET")
        .env_remove("FIELDGATE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fieldgate");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().expect("fieldgate ends")
}

pub fn base_config(dir: &Path, extra: &str) -> String {
    format!(
        "[gateway]\nid = \"test-gw\"\nstate_dir = \"{}\"\nlog_level = \"info\"\n\n[api]\nsocket = \"{}\"\n{extra}",
        dir.join("state").display(),
        dir.join("api.sock").display(),
    )
}

/// A daemon started from a temp config; killed on drop if still running.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub child: Option<Child>,
}

impl TestDaemon {
    pub fn start(extra: &str) -> TestDaemon {
        let mut d = TestDaemon::prepare(extra);
        d.spawn();
        d
    }

    /// Writes the config into a fresh temp dir without starting anything.
    pub fn prepare(extra: &str) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("fieldgate.toml");
        std::fs::write(&config, base_config(dir.path(), extra)).expect("write config");
        let socket = dir.path().join("api.sock");
        TestDaemon {
            dir,
            config,
            socket,
            child: None,
        }
    }

    /// Starts (or restarts) the daemon process and waits for its socket.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("log file");
        // systemd hands the watchdog to one pid (WATCHDOG_PID); a shell that
        // execs the daemon knows that pid in advance.
        let mut cmd = if env.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
            let mut c = Command::new("sh");
            c.args(["-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"", bin()]);
            c
        } else {
            Command::new(bin())
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited early with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not open its socket: {}", self.log());
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("daemon.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state").join("fieldgate.db")
    }

    /// Runs a CLI command against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full = vec!["--socket", self.socket.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        fieldgate(&full)
    }

    /// [`TestDaemon::cli`] run in the directory `cwd` (where a relative path lands).
    pub fn cli_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut full = vec!["--socket", self.socket.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        command(&full)
            .current_dir(cwd)
            .output()
            .expect("run fieldgate")
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file beside the database, e.g. `-audit-mark` for `fieldgate.db-audit-mark`.
pub fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}
