//! One supervisor task per configured radio: open -> run -> back off.
//!
//! A radio failing stays local: its supervisor reports its own [`RadioState`] and
//! re-opens it with backoff (1 s doubling to 60 s, with jitter), whether the link
//! would not open, the driver failed at start-up, or a running radio lost its link.
//! The backoff starts again from 1 s only once the radio has reported `Up`, so a
//! radio that opens but never comes up is retried ever more slowly, not once a
//! second forever.
//!
//! At shutdown the supervisor asks its driver to close any join window it opened
//! (a permit-join of 0 s) and gives it [`CLOSE_AT_STOP`] to do so: a coordinator or
//! controller left open would let devices join while no daemon decides who may.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{link, DriverBox, DriverIo, RadioCounters, RadioHandle, SecretSink};
use crate::config::RadioConfig;
use crate::model::{DeviceEvent, RadioCommand, RadioState};

/// Commands a radio may have queued before the hub answers `radio_busy`.
pub const COMMAND_QUEUE: usize = 64;

/// How long a driver gets at shutdown to close its join window.
pub const CLOSE_AT_STOP: Duration = Duration::from_secs(2);

/// Starts a supervisor for each radio. Supervisors stop when `shutdown` flips. `secrets`
/// is where drivers keep network secrets (the daemon always passes one); `state_dir`
/// holds one directory per radio (named after it) for what drivers keep across restarts.
pub fn spawn_all(
    radios: &[RadioConfig],
    events: mpsc::Sender<DeviceEvent>,
    shutdown: watch::Receiver<bool>,
    secrets: Option<Arc<SecretSink>>,
    state_dir: Option<&std::path::Path>,
) -> Vec<RadioHandle> {
    radios
        .iter()
        .map(|cfg| {
            let dir = state_dir.map(|d| d.join(cfg.name.get_ref()));
            spawn_one(cfg, events.clone(), shutdown.clone(), secrets.clone(), dir)
        })
        .collect()
}

fn spawn_one(
    cfg: &RadioConfig,
    events: mpsc::Sender<DeviceEvent>,
    mut shutdown: watch::Receiver<bool>,
    secrets: Option<Arc<SecretSink>>,
    state_dir: Option<std::path::PathBuf>,
) -> RadioHandle {
    let name = cfg.name.get_ref().clone();
    let port = cfg.port_spec();
    let (state_tx, state_rx) = watch::channel(RadioState::Starting);
    let counters = Arc::new(RadioCounters::default());
    let spec = super::spec(cfg.protocol);
    let driver = match spec {
        Some(spec) if cfg.enabled => Some((spec.new)()),
        _ => None,
    };
    let Some(driver) = driver else {
        let why = if cfg.enabled {
            format!("no {} driver in this build yet", cfg.protocol)
        } else {
            "disabled in the config".to_string()
        };
        tracing::warn!(radio = %name, protocol = %cfg.protocol, reason = %why, "radio not started");
        let _ = state_tx.send(RadioState::Unavailable(why));
        // Keep the sender alive so readers see the final state.
        tokio::spawn(async move {
            crate::shutdown::signalled(&mut shutdown).await;
            drop(state_tx);
        });
        return RadioHandle {
            name,
            protocol: cfg.protocol,
            port,
            capabilities: None,
            state: state_rx,
            commands: None,
            counters,
        };
    };
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let io = DriverIo {
        radio: name.clone(),
        protocol: cfg.protocol,
        port: port.clone(),
        baud: cfg.baud.as_ref().map(|b| *b.get_ref()),
        options: cfg.options.get_ref().clone(),
        events,
        commands: cmd_rx,
        state: state_tx,
        secrets,
        counters: counters.clone(),
        state_dir,
    };
    tokio::spawn(supervise(driver, io, shutdown, cmd_tx.downgrade()));
    RadioHandle {
        name,
        protocol: cfg.protocol,
        port,
        capabilities: spec.map(|s| &s.capabilities),
        state: state_rx,
        commands: Some(cmd_tx),
        counters,
    }
}

/// Runs one attempt: opens the transport (for byte-stream drivers) and runs the
/// driver until it returns.
async fn attempt(driver: &mut DriverBox, io: &mut DriverIo) -> anyhow::Result<()> {
    match driver {
        DriverBox::ByteStream(d) => {
            let link = link::open(&io.port, io.baud).await?;
            d.run(link, io).await
        }
        DriverBox::OwnTransport(d) => d.run(io).await,
    }
}

/// Open -> run -> back off, until shutdown or the command channel closes. `closer`
/// reaches the driver's own command queue (weakly: the hub's handle keeps it open)
/// for the join window's close at shutdown.
async fn supervise(
    mut driver: DriverBox,
    mut io: DriverIo,
    mut shutdown: watch::Receiver<bool>,
    closer: mpsc::WeakSender<RadioCommand>,
) {
    let mut backoff = Backoff::new();
    loop {
        // Watch for `Up` while the attempt runs: only a radio that came up earns a
        // fresh backoff.
        let mut state = io.state.subscribe();
        state.mark_unchanged();
        let mut came_up = false;
        let result = {
            let radio = io.radio.clone();
            let run = attempt(&mut driver, &mut io);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break Some(r),
                    changed = state.changed(), if !came_up => {
                        if changed.is_err() || *state.borrow_and_update() == RadioState::Up {
                            came_up = true;
                        }
                    }
                    _ = crate::shutdown::signalled(&mut shutdown) => {
                        close_join_window(&radio, &closer, &mut run).await;
                        break None;
                    }
                }
            }
        };
        let Some(result) = result else { break };
        if came_up || *io.state.borrow() == RadioState::Up {
            backoff.reset();
        }
        let reason = match result {
            Ok(()) if io.commands.is_closed() => break,
            Ok(()) => "link closed".to_string(),
            Err(e) => format!("{e:#}"),
        };
        let delay = backoff.next_delay();
        tracing::warn!(radio = %io.radio, error = %reason, retry_in = ?delay, "radio down");
        let _ = io.state.send(RadioState::Down(reason));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = crate::shutdown::signalled(&mut shutdown) => break,
        }
    }
    tracing::info!(radio = %io.radio, "radio stopped");
}

/// Asks the running driver to close its join window and keeps it running until it
/// has answered, it has ended, or [`CLOSE_AT_STOP`] has passed.
async fn close_join_window(
    radio: &str,
    closer: &mpsc::WeakSender<RadioCommand>,
    run: &mut std::pin::Pin<&mut impl std::future::Future<Output = anyhow::Result<()>>>,
) {
    let Some(commands) = closer.upgrade() else {
        return;
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let asked = commands.try_send(RadioCommand::PermitJoin { seconds: 0, reply });
    drop(commands);
    if asked.is_err() {
        tracing::warn!(radio = %radio, "stopping with the command queue full: the join window is left as it is");
        return;
    }
    tokio::select! {
        answer = answer => match answer {
            Ok(Ok(())) => tracing::debug!(radio = %radio, "join window closed at stop"),
            Ok(Err(e)) => tracing::warn!(radio = %radio, error = %e, "could not close the join window at stop"),
            Err(_) => {}
        },
        _ = run.as_mut() => {}
        _ = tokio::time::sleep(CLOSE_AT_STOP) => {
            tracing::warn!(radio = %radio, "the radio did not close its join window in time at stop");
        }
    }
}

/// Exponential backoff, 1 s doubling to 60 s; each wait is up to 25 % longer at random
/// (so a 60 s cap waits 60-75 s), so that radios and gateways do not retry in step.
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff::with_max(Self::MAX)
    }

    /// Doubling from [`Backoff::MIN`] up to `max` (at least `MIN`).
    pub fn with_max(max: Duration) -> Backoff {
        Backoff {
            current: Self::MIN,
            max: max.max(Self::MIN),
        }
    }

    pub fn reset(&mut self) {
        self.current = Self::MIN;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = rand::random_range(0.0..0.25);
        base.mul_f64(1.0 + jitter)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortSpec, Protocol};
    use crate::radio::{DriverFuture, OwnTransportDriver};
    use std::sync::Mutex;

    /// Fails every start; reports `Up` first on the attempts listed in `up_on`.
    struct Flaky {
        starts: Arc<Mutex<Vec<tokio::time::Instant>>>,
        up_on: Vec<usize>,
    }

    impl OwnTransportDriver for Flaky {
        fn run<'a>(&'a mut self, io: &'a mut DriverIo) -> DriverFuture<'a> {
            Box::pin(async move {
                let n = {
                    let mut starts = self.starts.lock().unwrap();
                    starts.push(tokio::time::Instant::now());
                    starts.len() - 1
                };
                if self.up_on.contains(&n) {
                    let _ = io.state.send(RadioState::Up);
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                anyhow::bail!("the radio refused to start")
            })
        }
    }

    /// A radio's io for a test driver: its command sender and state receiver.
    fn io() -> (
        DriverIo,
        mpsc::Sender<RadioCommand>,
        watch::Receiver<RadioState>,
    ) {
        let (events, events_rx) = mpsc::channel(8);
        std::mem::forget(events_rx);
        let (cmd_tx, commands) = mpsc::channel(8);
        let (state, state_rx) = watch::channel(RadioState::Starting);
        let io = DriverIo {
            radio: "r0".into(),
            protocol: Protocol::Zigbee,
            port: PortSpec::Sim(Protocol::Zigbee),
            baud: None,
            options: toml::Table::new(),
            events,
            commands,
            state,
            secrets: None,
            counters: Arc::default(),
            state_dir: None,
        };
        (io, cmd_tx, state_rx)
    }

    fn rig(up_on: Vec<usize>) -> (Arc<Mutex<Vec<tokio::time::Instant>>>, watch::Sender<bool>) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let (io, cmd_tx, _) = io();
        let closer = cmd_tx.downgrade();
        std::mem::forget(cmd_tx);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let driver = DriverBox::OwnTransport(Box::new(Flaky {
            starts: starts.clone(),
            up_on,
        }));
        tokio::spawn(supervise(driver, io, shutdown_rx, closer));
        (starts, shutdown)
    }

    /// Comes up and answers permit-joins, recording their seconds.
    struct Joinable {
        asked: Arc<Mutex<Vec<u32>>>,
    }

    impl OwnTransportDriver for Joinable {
        fn run<'a>(&'a mut self, io: &'a mut DriverIo) -> DriverFuture<'a> {
            Box::pin(async move {
                let _ = io.state.send(RadioState::Up);
                while let Some(cmd) = io.commands.recv().await {
                    if let RadioCommand::PermitJoin { seconds, reply } = cmd {
                        // A radio talks to its coordinator before it answers.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        self.asked.lock().unwrap().push(seconds);
                        let _ = reply.send(Ok(()));
                    }
                }
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_the_driver_is_asked_to_close_its_join_window_and_given_time_to() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (io, cmd_tx, state_rx) = io();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let driver = DriverBox::OwnTransport(Box::new(Joinable {
            asked: asked.clone(),
        }));
        let task = tokio::spawn(supervise(driver, io, shutdown_rx, cmd_tx.downgrade()));
        let (reply, answer) = tokio::sync::oneshot::channel();
        cmd_tx
            .send(RadioCommand::PermitJoin { seconds: 60, reply })
            .await
            .unwrap();
        answer.await.unwrap().unwrap();
        let _ = shutdown.send(true);
        task.await.unwrap();
        // The hub's handle is still alive: the close came from the supervisor.
        assert_eq!(*asked.lock().unwrap(), [60, 0]);
        // Its state sender is gone once it stopped: what the daemon waits for.
        assert!(state_rx.has_changed().is_err());
        drop(cmd_tx);
    }

    fn gaps(starts: &[tokio::time::Instant]) -> Vec<Duration> {
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_failing_at_start_up_is_retried_with_growing_delays() {
        let (starts, shutdown) = rig(vec![]);
        tokio::time::sleep(Duration::from_secs(70)).await;
        let gaps = gaps(&starts.lock().unwrap());
        // 1, 2, 4, 8, 16, 32 s, each with up to 25 % jitter: about six tries in 70 s,
        // not seventy.
        assert!((4..=7).contains(&gaps.len()), "{gaps:?}");
        for (i, gap) in gaps.iter().enumerate() {
            let base = Duration::from_secs(1 << i);
            assert!(
                *gap >= base && *gap <= base.mul_f64(1.26),
                "try {i}: {gaps:?}"
            );
        }
        let _ = shutdown.send(true);
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_starts_again_only_after_the_radio_came_up() {
        // Tries 0-2 fail at start-up; try 3 comes up and later loses its link.
        let (starts, shutdown) = rig(vec![3]);
        tokio::time::sleep(Duration::from_secs(8 + 600 + 12)).await;
        let gaps = gaps(&starts.lock().unwrap());
        assert!(gaps.len() >= 4, "{gaps:?}");
        assert!(gaps[1] >= Duration::from_secs(2), "{gaps:?}");
        assert!(gaps[2] >= Duration::from_secs(4), "{gaps:?}");
        // Up for 600 s, then down: retried after about 1 s, not 8 s.
        let after_up = gaps[3] - Duration::from_secs(600);
        assert!(after_up <= Duration::from_millis(1260), "{gaps:?}");
        let _ = shutdown.send(true);
    }

    #[test]
    fn backoff_caps_where_it_is_told() {
        let mut b = Backoff::with_max(Duration::from_secs(300));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        // 1, 2, 4, ... 256, then 300 s, each with up to 25 % jitter.
        assert!(delays[8] >= Duration::from_secs(256));
        let last = *delays.last().unwrap();
        assert!(last >= Duration::from_secs(300) && last <= Duration::from_secs(375));
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.25));
        // Never below the minimum.
        let mut tiny = Backoff::with_max(Duration::ZERO);
        assert!(tiny.next_delay() >= Backoff::MIN);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Backoff::MIN && first <= Backoff::MIN.mul_f64(1.25));
        for _ in 0..20 {
            b.next_delay();
        }
        let last = b.next_delay();
        assert!(last >= Backoff::MAX && last <= Backoff::MAX.mul_f64(1.25));
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN.mul_f64(1.25));
    }
}
