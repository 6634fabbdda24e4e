//! The clock: not before 2024, not earlier than the binary, and whether NTP has
//! synchronized it. TLS certificates and every timestamp depend on it. It only reads
//! the time; it never sets it.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Check;

/// 2024-01-01T00:00:00Z: a clock before this is certainly wrong.
const EARLIEST_SANE_TIME: u64 = 1_704_067_200;

pub(super) fn check_clock() -> Check {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let shown = humantime::format_rfc3339_seconds(now).to_string();
    let fix = "set the time: `timedatectl set-ntp true` (or set it by hand with `date -s`)";
    if secs < EARLIEST_SANE_TIME {
        return Check::fail(
            "clock",
            format!("{shown} is before 2024: TLS certificates and timestamps will be wrong"),
            fix,
        );
    }
    let binary_time = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified())
        .ok();
    if let Some(built) = binary_time {
        if now < built {
            return Check::fail(
                "clock",
                format!(
                    "{shown} is earlier than this fieldgate binary ({})",
                    humantime::format_rfc3339_seconds(built)
                ),
                fix,
            );
        }
    }
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    Check::ok(
        "clock",
        format!("{shown}{}", if synced { " (NTP-synchronized)" } else { "" }),
    )
}
