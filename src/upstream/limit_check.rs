//! The outbox limit check the session runs every `Tuning::enforce_every`: measured
//! on a reader first, applied on the writer only when a limit is reached, its
//! report turned into counters, the telemetry refusal and the alarm.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::UpstreamStatus;
use crate::store::{self, outbox, StoreResult};

/// One check. Measure on a reader first: the writer (and so the hub) is only held
/// up when a limit is actually reached. The quick check reads two pages; the
/// outbox is scanned only when the database is larger than the limit or a row is
/// too old.
pub(super) async fn run(
    writer: store::Writer,
    db: PathBuf,
    max_bytes: u64,
    max_age_ms: u64,
    refusing: bool,
) -> StoreResult<outbox::LimitReport> {
    let within = tokio::task::spawn_blocking(move || {
        let c = store::open_reader(&db)?;
        let now = SystemTime::now();
        if let Some(bound) = outbox::surely_within(&c, max_bytes, max_age_ms, now)? {
            return Ok(Some(bound));
        }
        let m = outbox::stats(&c)?;
        let over = m.bytes > max_bytes || m.oldest_age_ms.is_some_and(|a| a > max_age_ms);
        Ok::<_, store::StoreError>((!over).then_some(m.bytes))
    })
    .await
    .map_err(|e| store::StoreError::Invalid(e.to_string()))??;
    if let (Some(bytes), false) = (within, refusing) {
        return Ok(outbox::LimitReport {
            bytes,
            protected_bytes: bytes,
            ..Default::default()
        });
    }
    writer
        .write(move |c| outbox::enforce_limits(c, max_bytes, max_age_ms, SystemTime::now()))
        .await
}

/// A limit check that has to read the whole outbox (a database larger than
/// `max_bytes`, an old message) takes time in proportion to it: about a second at
/// 256 MiB here, far more on an SD card, and on the writer, holding up every commit,
/// when a limit is reached. So the next check waits at least this many times as
/// long as the last one took: checking takes at most 1/20 of the time, and the
/// outbox overshoots its limit by at most that long a stretch of new messages.
const ENFORCE_SPACING: u32 = 20;

/// When the next check may start, after one that took `took`.
pub(super) fn spacing(every: Duration, took: Duration) -> Duration {
    every.max(took.saturating_mul(ENFORCE_SPACING))
}

pub(super) fn apply_report(
    status: &UpstreamStatus,
    gate: &outbox::OutboxGate,
    r: &outbox::LimitReport,
    max_bytes: u64,
) {
    status
        .dropped_expired
        .fetch_add(r.dropped_expired, Ordering::Relaxed);
    status
        .dropped_for_space
        .fetch_add(r.dropped_for_space, Ordering::Relaxed);
    status.compacted.fetch_add(r.compacted, Ordering::Relaxed);
    if r.dropped_expired + r.dropped_for_space > 0 {
        tracing::warn!(
            expired = r.dropped_expired,
            for_space = r.dropped_for_space,
            bytes = r.bytes,
            "outbox limits: telemetry dropped"
        );
    }
    // Refuse new telemetry while the undroppable kinds fill the outbox; accept it
    // again once they are below 90 % of the limit.
    let refusing = gate.refusing_telemetry();
    let full = r.protected_bytes >= max_bytes;
    let relieved = r.protected_bytes < max_bytes / 10 * 9;
    if full && !refusing {
        gate.set_refuse_telemetry(true);
    } else if refusing && relieved {
        gate.set_refuse_telemetry(false);
    }
    let alarm = if gate.refusing_telemetry() {
        Some(format!(
            "outbox full: {} bytes of lifecycle/audit/state messages against a limit of {max_bytes}; new telemetry is refused",
            r.protected_bytes
        ))
    } else if r.protected_expired > 0 {
        Some(format!(
            "{} lifecycle/audit/state message(s) older than upstream.outbox.max_age are waiting (kept, never dropped)",
            r.protected_expired
        ))
    } else {
        None
    };
    // An undeliverable-row alarm stays until the next limit check clears it.
    status.set_alarm(alarm);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick check keeps the configured pace; one that read the outbox through
    /// spaces the next so that checking takes at most 1/20 of the time.
    #[test]
    fn a_slow_limit_check_spaces_the_next_one() {
        let every = Duration::from_secs(2);
        assert_eq!(spacing(every, Duration::from_millis(3)), every);
        assert_eq!(spacing(every, Duration::from_millis(100)), every);
        assert_eq!(
            spacing(every, Duration::from_millis(1_200)),
            Duration::from_secs(24)
        );
        assert_eq!(spacing(every, Duration::MAX), Duration::MAX, "no overflow");
    }
}
