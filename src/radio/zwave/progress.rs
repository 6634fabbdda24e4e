//! What the driver learnt about its nodes, kept across restarts of the daemon: a battery
//! node whose interview stalled (it fell asleep, the gateway restarted) continues at the
//! step it stopped at when it next wakes up, instead of starting over. One JSON file in the
//! radio's state directory, written whole (to a temporary file, then renamed) after every
//! interview step; read once when the driver first starts.
//!
//! Owns the file format and nothing else: no IO to the controller, no decisions. Protocol
//! info is not kept (start-up reads it from the controller every time), nor is anything
//! secret (the controller holds the network keys, not this file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::nodes::{Node, Step};

/// The file in the radio's state directory.
pub(super) const FILE: &str = "zwave-nodes.json";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    version: u32,
    /// The network the nodes belong to (hex): a controller with another is not theirs.
    home_id: String,
    nodes: Vec<Saved>,
}

/// One node as kept.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    id: u8,
    command_classes: Vec<u16>,
    manufacturer: Option<(u16, u16, u16)>,
    firmware: Option<(u8, u8)>,
    role_type: Option<u8>,
    sensor_types: Vec<(u8, Vec<u8>)>,
    wake_up_seconds: Option<u32>,
    /// Interview steps done, by name.
    done: Vec<String>,
    reported: bool,
    announced: bool,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the nodes of network `home_id`.
pub(super) fn save(dir: &Path, home_id: u32, nodes: &BTreeMap<u8, Node>) -> Result<()> {
    let doc = Progress {
        version: VERSION,
        home_id: format!("{home_id:08x}"),
        nodes: nodes
            .values()
            .map(|n| Saved {
                id: n.id,
                command_classes: n.command_classes().to_vec(),
                manufacturer: n.manufacturer,
                firmware: n.firmware,
                role_type: n.role_type,
                sensor_types: n.sensor_types.clone(),
                wake_up_seconds: n.wake_up_seconds,
                done: n.done().iter().map(|s| s.name().to_string()).collect(),
                reported: n.reported,
                announced: n.announced,
            })
            .collect(),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path(dir)).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// The nodes kept in `dir` and their network, if there is a readable file. A file that
/// cannot be read or parsed is reported and ignored: the interviews then start afresh.
pub(super) fn load(dir: &Path) -> Result<Option<(u32, BTreeMap<u8, Node>)>> {
    let file = path(dir);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let doc: Progress =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", file.display()))?;
    anyhow::ensure!(
        doc.version == VERSION,
        "{}: format version {} (this build reads {VERSION})",
        file.display(),
        doc.version
    );
    let home_id = u32::from_str_radix(&doc.home_id, 16)
        .with_context(|| format!("{}: home id `{}`", file.display(), doc.home_id))?;
    let mut nodes = BTreeMap::new();
    for s in doc.nodes {
        if !(1..=232).contains(&s.id) {
            continue;
        }
        let mut n = Node::new(s.id);
        n.set_command_classes(s.command_classes);
        n.manufacturer = s.manufacturer;
        n.firmware = s.firmware;
        n.role_type = s.role_type;
        n.sensor_types = s.sensor_types;
        n.wake_up_seconds = s.wake_up_seconds;
        n.set_done(
            s.done
                .iter()
                .filter_map(|name| Step::from_name(name))
                .collect::<BTreeSet<_>>(),
        );
        n.reported = s.reported;
        n.announced = s.announced;
        nodes.insert(s.id, n);
    }
    Ok(Some((home_id, nodes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_interview_is_read_back_at_the_step_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node::new(5);
        n.set_command_classes(vec![
            fieldgate_zwave::cc::id::MANUFACTURER_SPECIFIC,
            fieldgate_zwave::cc::id::WAKE_UP,
            fieldgate_zwave::cc::id::BATTERY,
        ]);
        n.manufacturer = Some((0xFFFF, 4, 1));
        n.finish_step(Step::NodeInfo);
        n.finish_step(Step::ManufacturerSpecific);
        let next = n.next_step();
        assert_eq!(next, Some(Step::WakeUpInterval));
        let nodes = BTreeMap::from([(5, n)]);
        assert!(load(dir.path()).unwrap().is_none(), "nothing kept yet");
        save(dir.path(), 0xFA11_6A7E, &nodes).unwrap();
        let (home, back) = load(dir.path()).unwrap().unwrap();
        assert_eq!(home, 0xFA11_6A7E);
        let n = &back[&5];
        assert_eq!(n.next_step(), next);
        assert_eq!(n.manufacturer, Some((0xFFFF, 4, 1)));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
