//! What happens when time passes: the key switch of a rotation, the watchdog ping (two
//! failures re-run start-up), commands and refreshes that ran out of time, IEEE address
//! look-ups nobody answered, interview steps to retry, and the line-error report.
//!
//! Owns the next deadline of the loop; must not block on anything but the requests it makes.

use std::time::Duration;

use anyhow::Result;
use fieldgate_zigbee::IeeeAddr;
use tokio::time::Instant;

use super::Coordinator;
use crate::model::DeviceEventKind;

/// Failed watchdog pings in a row before start-up is re-run.
const WATCHDOG_FAILURES: u32 = 2;

impl Coordinator<'_> {
    pub(super) fn next_timer(&self) -> Instant {
        let mut t = self.next_watchdog;
        if let Some(r) = &self.rotation {
            t = t.min(r.due);
        }
        for d in self.devices.values() {
            if let Some(w) = &d.waiting {
                t = t.min(w.deadline);
            }
            if let Some(r) = d.retry_at {
                t = t.min(r);
            }
        }
        for c in self.commands.values() {
            t = t.min(c.deadline);
        }
        for r in &self.refreshes {
            t = t.min(r.deadline);
        }
        for (since, _) in self.unresolved.values() {
            t = t.min(*since + self.opts.response_timeout);
        }
        for (since, _) in self.unresolved_ieee.values() {
            t = t.min(*since + self.opts.response_timeout);
        }
        t
    }

    pub(super) async fn on_timers(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.rotation.as_ref().is_some_and(|r| r.due <= now) {
            if let Some(r) = self.rotation.take() {
                self.switch_key(r).await?;
            }
        }
        if now >= self.next_watchdog {
            if self.ping(self.opts.sreq_timeout).await? {
                self.log_line_errors();
                self.ping_failures = 0;
                self.next_watchdog = Instant::now() + self.opts.watchdog_interval;
            } else {
                self.ping_failures += 1;
                tracing::warn!(radio = %self.io.radio, failures = self.ping_failures, "watchdog ping failed");
                if self.ping_failures >= WATCHDOG_FAILURES {
                    tracing::warn!(radio = %self.io.radio, "coordinator unresponsive: re-running start-up");
                    self.restart_needed = true;
                    return Ok(());
                }
                self.next_watchdog = Instant::now() + Duration::from_secs(1);
            }
        }
        let expired: Vec<u8> = self
            .commands
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(p) = self.commands.remove(&k) {
                self.emit(
                    p.native,
                    DeviceEventKind::CommandResult {
                        command_id: p.command_id,
                        ok: false,
                        detail: "no AF_DATA_CONFIRM in time".into(),
                    },
                )
                .await?;
            }
        }
        self.refreshes_due(now).await?;
        let stale: Vec<u16> = self
            .unresolved
            .iter()
            .filter(|(_, (since, _))| *since + self.opts.response_timeout <= now)
            .map(|(k, _)| *k)
            .collect();
        for nwk in stale {
            tracing::debug!(radio = %self.io.radio, nwk, "IEEE address lookup unanswered; frames dropped");
            self.unresolved.remove(&nwk);
        }
        let (timeout, radio) = (self.opts.response_timeout, &self.io.radio);
        self.unresolved_ieee.retain(|ieee, (since, _)| {
            let waiting = *since + timeout > now;
            if !waiting {
                tracing::debug!(radio = %radio, device = %ieee, "network address lookup unanswered; frames dropped");
            }
            waiting
        });
        let due: Vec<IeeeAddr> = self
            .devices
            .values()
            .filter(|d| d.waiting.as_ref().is_some_and(|w| w.deadline <= now))
            .map(|d| d.ieee)
            .collect();
        for ieee in due {
            self.retry_step(ieee).await?;
        }
        let retry: Vec<IeeeAddr> = self
            .devices
            .values()
            .filter(|d| d.stalled && d.retry_at.is_some_and(|r| r <= now))
            .map(|d| d.ieee)
            .collect();
        for ieee in retry {
            tracing::debug!(radio = %self.io.radio, device = %ieee, "retrying a stalled interview");
            self.advance(ieee, 0).await?;
        }
        Ok(())
    }

    /// Logs the parser's bad-input counters when they moved since the last time.
    pub(super) fn log_line_errors(&mut self) {
        let now = self.link.reader().parser().mt_stats();
        let was = self.line_stats_reported;
        if (
            now.dropped_bytes,
            now.bad_fcs,
            now.oversize,
            now.implausible,
            now.stalled,
            now.noise,
        ) != (
            was.dropped_bytes,
            was.bad_fcs,
            was.oversize,
            was.implausible,
            was.stalled,
            was.noise,
        ) {
            tracing::warn!(
                radio = %self.io.radio,
                frames = now.frames,
                dropped_bytes = now.dropped_bytes - was.dropped_bytes,
                bad_fcs = now.bad_fcs - was.bad_fcs,
                oversize = now.oversize - was.oversize,
                forged = now.implausible - was.implausible,
                stalled = now.stalled - was.stalled,
                noise_runs = now.noise - was.noise,
                undecodable_total = self.stats.undecodable.load(std::sync::atomic::Ordering::Relaxed),
                sreq_timeouts_total = self.stats.timeouts.load(std::sync::atomic::Ordering::Relaxed),
                "line errors on the coordinator link (resynchronised)"
            );
            // (`line_errors` is counted as frames are read: `count_line_errors`.)
            self.line_stats_reported = now;
        }
    }
}
