//! The topic scheme: every MQTT topic the gateway publishes to or listens on,
//! built from the configured prefix (default `fieldgate/<gateway id>`).
//!
//! Owns topic strings only; payloads are built by the store (outbox envelopes), by
//! the hub (`hub/messages.rs`: the response body) and by `requests/` (responses,
//! the `info` document). `docs/mqtt-api.md` is the contract these follow: change
//! both together.

/// The topics of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// Longest operation name accepted in a request topic.
pub const MAX_OPERATION_LEN: usize = 32;

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The prefix from the config, or `fieldgate/<gateway id>`.
    pub fn from_config(prefix: Option<&str>, gateway_id: &str) -> Topics {
        match prefix {
            Some(p) => Topics::new(p),
            None => Topics::new(format!("fieldgate/{gateway_id}")),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Retained `online`/`offline` (birth on connect, LWT on loss).
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Retained gateway description (version, radios, outbox).
    pub fn info(&self) -> String {
        format!("{}/info", self.prefix)
    }

    /// An outbox row's topic (stored relative to the prefix) made absolute.
    pub fn outbox(&self, relative: &str) -> String {
        // Called for every published message: no formatting machinery.
        let mut topic = String::with_capacity(self.prefix.len() + 1 + relative.len());
        topic.push_str(&self.prefix);
        topic.push('/');
        topic.push_str(relative);
        topic
    }

    /// The subscription for inbound requests: every level below `request`, so a
    /// request to `request/<op>/<extra>` is answered (`unknown_operation`) too.
    pub fn request_filter(&self) -> String {
        format!("{}/request/#", self.prefix)
    }

    /// The operation named by an inbound request topic, if the topic is one.
    /// Returns everything after `request/` (possibly an unknown or odd operation,
    /// possibly with more levels); `""` for `<prefix>/request` itself.
    pub fn request_operation<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/request")?;
        match rest {
            "" => Some(""),
            _ => rest.strip_prefix('/'),
        }
    }

    /// The subscriptions for per-device commands: `device/<device>/set` and `/get`.
    pub fn device_command_filters(&self) -> [String; 2] {
        [
            format!("{}/device/+/set", self.prefix),
            format!("{}/device/+/get", self.prefix),
        ]
    }

    /// The device and operation (`set` or `get`) of a per-device command topic.
    pub fn device_command<'a>(&self, topic: &'a str) -> Option<(&'a str, &'static str)> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/device/")?;
        let (device, op) = rest.rsplit_once('/')?;
        // An empty level (`device//set`) is still a request on a command topic: it is
        // answered (the device is refused), not dropped without a word.
        if device.contains('/') {
            return None;
        }
        match op {
            "set" => Some((device, "set")),
            "get" => Some((device, "get")),
            _ => None,
        }
    }

    /// Where the answer to `operation` goes. Operation names that are not short
    /// `[a-z0-9_]` words are answered on `response/invalid` so a hostile topic
    /// level is never echoed into a topic.
    pub fn response(&self, operation: &str) -> String {
        format!("{}/response/{}", self.prefix, response_level(operation))
    }
}

/// Friendly names in device topics (`[upstream] topic_names = "name"`): which
/// topic level names each device. Shared by the session, which rewrites outbox
/// topics `device/<id>/...` to `device/<name>/...` as it publishes them, and the
/// request task, which changes it on a rename. A device without a name keeps its
/// id. Names never contain `/`, `+`, `#` or `:` (see `store::names::valid`), so a
/// name is a valid topic level and never taken for an id.
#[derive(Debug, Default)]
pub struct DeviceLevels {
    names: std::sync::RwLock<std::collections::HashMap<String, String>>,
    /// Topic levels a device stopped using (renamed): their retained messages are
    /// to be cleared.
    moved: std::sync::Mutex<Vec<String>>,
}

/// Device topics whose retained message moves with a rename.
pub const RETAINED_DEVICE_TOPICS: [&str; 2] = ["state", "availability"];

impl DeviceLevels {
    pub fn new(names: std::collections::HashMap<String, String>) -> DeviceLevels {
        DeviceLevels {
            names: std::sync::RwLock::new(names),
            moved: Default::default(),
        }
    }

    /// The topic level naming device `id`: its name, or the id.
    pub fn level(&self, id: &str) -> String {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// Gives `id` the name `name` (or none); returns the previous name.
    pub fn set(&self, id: &str, name: Option<&str>) -> Option<String> {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(n) => names.insert(id.to_string(), n.to_string()),
            None => names.remove(id),
        }
    }

    /// A device stopped using topic level `level`.
    pub fn moved_from(&self, level: String) {
        self.moved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(level);
    }

    /// The levels devices stopped using since the last call.
    pub fn take_moved(&self) -> Vec<String> {
        std::mem::take(&mut *self.moved.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `device/<id>/<rest>` with the device's name in place of its id, when it has
    /// one; `None` when the topic is not a device topic or the device has no name.
    pub fn rewrite(&self, relative: &str) -> Option<String> {
        let rest = relative.strip_prefix("device/")?;
        let (id, tail) = rest.split_once('/')?;
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let name = names.get(id)?;
        Some(format!("device/{name}/{tail}"))
    }
}

/// The response topic level used for `operation`.
pub fn response_level(operation: &str) -> &str {
    let ok = !operation.is_empty()
        && operation.len() <= MAX_OPERATION_LEN
        && operation
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        operation
    } else {
        "invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_prefix() {
        let t = Topics::from_config(None, "gw1");
        assert_eq!(t.status(), "fieldgate/gw1/status");
        assert_eq!(
            t.outbox("device/zigbee:0x1/telemetry"),
            "fieldgate/gw1/device/zigbee:0x1/telemetry"
        );
        assert_eq!(t.request_filter(), "fieldgate/gw1/request/#");
        assert_eq!(
            t.request_operation("fieldgate/gw1/request/set/extra"),
            Some("set/extra")
        );
        assert_eq!(t.request_operation("fieldgate/gw1/request"), Some(""));
        assert_eq!(
            t.device_command("fieldgate/gw1/device/zigbee:0x1/set"),
            Some(("zigbee:0x1", "set"))
        );
        assert_eq!(
            t.device_command("fieldgate/gw1/device/hall lamp/get"),
            Some(("hall lamp", "get"))
        );
        assert_eq!(
            t.device_command("fieldgate/gw1/device/zigbee:0x1/state"),
            None
        );
        assert_eq!(t.device_command("fieldgate/gw1/device/a/b/set"), None);
        assert_eq!(
            t.device_command("fieldgate/gw1/device//get"),
            Some(("", "get"))
        );
        assert_eq!(t.request_operation("fieldgate/gw1/requests/x"), None);
        assert_eq!(t.response("set/extra"), "fieldgate/gw1/response/invalid");
        assert_eq!(
            t.request_operation("fieldgate/gw1/request/permit_join"),
            Some("permit_join")
        );
        assert_eq!(t.request_operation("fieldgate/gw10/request/x"), None);
        assert_eq!(t.request_operation("other/request/x"), None);
        assert_eq!(t.response("info"), "fieldgate/gw1/response/info");
        assert_eq!(t.response("Bad Op!"), "fieldgate/gw1/response/invalid");
        assert_eq!(
            Topics::from_config(Some("site/a"), "gw").info(),
            "site/a/info"
        );
    }

    #[test]
    fn device_topics_use_the_name_when_there_is_one() {
        let l = DeviceLevels::new([("zigbee:0x1".to_string(), "hall lamp".to_string())].into());
        assert_eq!(
            l.rewrite("device/zigbee:0x1/state").as_deref(),
            Some("device/hall lamp/state")
        );
        assert_eq!(l.rewrite("device/zigbee:0x2/state"), None);
        assert_eq!(l.rewrite("gateway/event"), None);
        assert_eq!(l.level("zigbee:0x2"), "zigbee:0x2");
        assert_eq!(
            l.set("zigbee:0x1", Some("porch")).as_deref(),
            Some("hall lamp")
        );
        assert_eq!(l.level("zigbee:0x1"), "porch");
        l.moved_from("hall lamp".into());
        assert_eq!(l.take_moved(), vec!["hall lamp".to_string()]);
        assert!(l.take_moved().is_empty());
        assert_eq!(l.set("zigbee:0x1", None).as_deref(), Some("porch"));
        assert_eq!(l.rewrite("device/zigbee:0x1/event"), None);
    }
}
