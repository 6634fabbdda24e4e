//! The hub's door-facing vocabulary: the requests the API and MQTT send
//! ([`HubRequest`] through a [`HubHandle`]), their answers, the hub's errors with
//! their stable codes, and the notices it broadcasts. Types only; nothing here
//! decides or touches the store.

use super::*;

/// What a `set` or `get` asks of a device.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAction {
    Set(DeviceCommand),
    /// Refresh: read fresh values; `attributes` narrows what the answer shows.
    Get {
        attributes: Vec<String>,
    },
}

impl DeviceAction {
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            DeviceAction::Set(_) => "set",
            DeviceAction::Get { .. } => "get",
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            DeviceAction::Set(c) => serde_json::to_value(c).unwrap_or_default(),
            DeviceAction::Get { attributes } => json!({ "attributes": attributes }),
        }
    }
}

/// Who asked, and so who is told when a held request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOrigin {
    /// An MQTT request: the outcome is published on `response/<operation>` (or the
    /// request's MQTT 5 Response Topic).
    Mqtt,
    /// The local API, or a local rule of the policy (its actor says which): the outcome
    /// is in the audit log and the device's events.
    Api,
}

impl RequestOrigin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RequestOrigin::Mqtt => "mqtt",
            RequestOrigin::Api => "api",
        }
    }
}

/// A `set` or `get` for one device.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    pub device: DeviceId,
    pub action: DeviceAction,
    pub origin: RequestOrigin,
    pub correlation_id: Option<String>,
    /// How long to hold it for a sleeping device (default [`DEFAULT_REQUEST_TTL_S`]).
    pub ttl: Option<Duration>,
    pub actor: String,
    /// An MQTT 5 request's Response Topic and Correlation Data: its answers through
    /// the outbox (`queued`, then `delivered`, ...) go there.
    pub reply_to: Option<crate::store::outbox::ReplyTo>,
    /// A `set` for an awake device also hands back the device's result, when it comes
    /// ([`DeviceAnswer::Commanded`]): the local API's `?wait=true`.
    pub wait_result: bool,
}

/// A request held for a sleeping device.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedRequest {
    pub status: &'static str,
    pub request_id: i64,
    pub device: String,
    pub operation: String,
    pub command: serde_json::Value,
    pub expires_at: String,
}

/// The outcome of a refresh: `Ok` with the response data, or why it failed.
pub type RefreshResult = Result<serde_json::Value, String>;

/// How the hub took a [`DeviceRequest`].
#[derive(Debug)]
pub enum DeviceAnswer {
    /// Handed to the radio (an awake device's `set`).
    Sent(CommandSent),
    /// An awake device is being read; the result follows on `result`.
    Refreshing {
        command_id: String,
        result: oneshot::Receiver<RefreshResult>,
    },
    /// Handed to the radio, its result asked for (`wait_result`): it follows on
    /// `result` (`Err` with the device's or radio's reason when not carried out).
    Commanded {
        sent: CommandSent,
        result: oneshot::Receiver<RefreshResult>,
    },
    /// Held until the sleeping device next speaks. For an MQTT request the `queued`
    /// response is already in the outbox: `response` is its payload.
    Queued {
        queued: QueuedRequest,
        response: Option<Vec<u8>>,
    },
}

/// A request to the hub; each carries who asked, for the audit record.
#[derive(Debug)]
pub enum HubRequest {
    PermitJoin {
        radio: String,
        seconds: u32,
        actor: String,
        reply: oneshot::Sender<Result<PermitJoinAccepted, HubError>>,
    },
    /// From the hub itself: the radio did not open the join window the hub opened
    /// until `until` for it.
    JoinWindowNotOpened {
        radio: String,
        until: std::time::Instant,
    },
    /// From the hub itself: the radio opened the join window of `seconds` the hub
    /// opened until `until` for it, just now.
    JoinWindowOpened {
        radio: String,
        until: std::time::Instant,
        seconds: u32,
    },
    Readmit {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<Readmitted, HubError>>,
    },
    /// Adopts a discovered (`pending`) device, with its BTHome bindkey when it has one.
    Adopt {
        device: DeviceId,
        bindkey: Option<Secret>,
        actor: String,
        reply: oneshot::Sender<Result<Adopted, HubError>>,
    },
    Decommission {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<Decommissioned, HubError>>,
    },
    Block {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<Blocked, HubError>>,
    },
    Command {
        device: DeviceId,
        command: DeviceCommand,
        actor: String,
        reply: oneshot::Sender<Result<CommandSent, HubError>>,
    },
    /// A `set` or `get` that is held for the device when it sleeps.
    Device {
        request: DeviceRequest,
        reply: oneshot::Sender<Result<DeviceAnswer, HubError>>,
    },
    ApplyPolicy {
        /// A bare policy document or a signed envelope, as received.
        document: Vec<u8>,
        source: String,
        actor: String,
        reply: oneshot::Sender<Result<PolicyApplied, HubError>>,
    },
    /// A network backup of `radio` (open-coordinator-backup JSON for Zigbee). The answer
    /// holds the network key: only for the local technician API.
    Backup {
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<NetworkBackup, HubError>>,
    },
    /// Writes a backup document back onto `radio` (it replaces the radio's network).
    Restore {
        radio: String,
        document: serde_json::Value,
        actor: String,
        reply: oneshot::Sender<Result<serde_json::Value, HubError>>,
    },
    /// Registers a Zigbee device's install code: sealed as the device's credential, then
    /// pushed to every running Zigbee coordinator.
    AddInstallCode {
        device: DeviceId,
        code: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    },
    /// Registers a device credential of another kind (LoRaWAN OTAA keys, an ABP session):
    /// sealed, audited, handed to the radios that take the kind.
    AddCredential {
        device: DeviceId,
        kind: CredentialKind,
        secret: Secret,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeAdded, HubError>>,
    },
    RemoveInstallCode {
        device: DeviceId,
        actor: String,
        reply: oneshot::Sender<Result<InstallCodeRemoved, HubError>>,
    },
    /// Rotates a Zigbee radio's network key (see `radio::zigbee`).
    RotateNetworkKey {
        radio: String,
        actor: String,
        reply: oneshot::Sender<Result<KeyRotated, HubError>>,
    },
}

/// How long a radio may take to push an install code to its coordinator.
pub const INSTALL_CODE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a key rotation may take beyond the radio's declared longest rotation
/// (`Capabilities::key_rotation`): the radio's own answers.
pub const ROTATION_MARGIN: Duration = Duration::from_secs(60);

/// What happened to an install code on one radio.
#[derive(Debug, Clone, Serialize)]
pub struct InstallCodePush {
    pub radio: String,
    pub ok: bool,
    pub detail: String,
}

/// A registered install code (never the code).
#[derive(Debug, Clone, Serialize)]
pub struct InstallCodeAdded {
    pub device: String,
    /// `true` when a code was already registered for the device and is now replaced.
    pub replaced: bool,
    pub coordinators: Vec<InstallCodePush>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallCodeRemoved {
    pub device: String,
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRotationDone {
    pub radio: String,
    #[serde(flatten)]
    pub rotation: KeyRotated,
}

/// How long a radio may take to answer a backup request.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a radio may take to write a backup back (a Z-Wave NVM image is a thousand
/// writes, then the controller restarts).
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a radio may take to open a join window (a Z-Wave controller calls back
/// once it is ready to add a node).
pub const PERMIT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct PermitJoinAccepted {
    pub radio: String,
    pub seconds: u32,
    pub open_until: String,
}

/// A decommissioned device let back in: it joins again like a new one.
#[derive(Debug, Clone, Serialize)]
pub struct Readmitted {
    pub device: String,
    /// Its lifecycle now; `None` for a blocked device the registry never held.
    pub lifecycle: Option<String>,
    /// Whether the registry holds the device (a blocked one may never have been seen).
    pub known: bool,
    pub note: String,
}

/// A discovered device adopted: `active`, its readings now go upstream (never the key).
#[derive(Debug, Clone, Serialize)]
pub struct Adopted {
    pub device: String,
    pub lifecycle: &'static str,
    /// `"stored encrypted"` when a bindkey came with it, else `"none"`.
    pub bindkey: &'static str,
    /// What each radio that takes bindkeys did with the key.
    pub radios: Vec<InstallCodePush>,
}

/// A device put on the denylist (and decommissioned when it was known and live).
#[derive(Debug, Clone, Serialize)]
pub struct Blocked {
    pub device: String,
    pub blocked: bool,
    /// `false` when it was on the denylist already.
    pub newly_blocked: bool,
    /// Whether the registry knows it (a device never seen can be blocked too).
    pub known: bool,
    /// Present when this decommissioned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decommissioned: Option<Decommissioned>,
}

/// A decommissioned device.
#[derive(Debug, Clone, Serialize)]
pub struct Decommissioned {
    pub device: registry::Device,
    pub credentials_destroyed: usize,
    /// What happened on the radio side.
    pub radio_removal: String,
    /// The device must take part in leaving (its radio's capabilities say so, e.g. a
    /// Z-Wave exclusion): the technician has this many seconds to press its button.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_action_within_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandSent {
    pub device: String,
    pub command: DeviceCommand,
    /// Matches the `command_result` event the radio reports when it is done.
    pub command_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyApplied {
    pub version: u64,
    pub signed: bool,
    pub rules: usize,
}

/// Why the hub refused or failed a request; `code` is stable for API clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("no radio named `{0}`")]
    UnknownRadio(String),
    /// Not running, or it could not do what was asked (the reason says which).
    #[error("radio `{0}`: {1}")]
    RadioUnavailable(String, String),
    #[error("radio `{0}` is busy: its command queue is full; try again")]
    RadioBusy(String),
    #[error("no device `{0}`")]
    UnknownDevice(String),
    #[error("no install code is registered for `{0}`")]
    NoInstallCode(String),
    #[error("device `{0}` is already decommissioned")]
    AlreadyDecommissioned(String),
    #[error("device `{0}` is decommissioned and takes no commands")]
    DeviceDecommissioned(String),
    #[error("device `{0}` is quarantined (firmware below the policy minimum) and the policy refuses commands to it")]
    DeviceQuarantined(String),
    #[error("policy refused: {0}")]
    PolicyRefused(String),
    #[error("{0}")]
    Invalid(String),
    /// A valid request the device's radio cannot carry out (from its capabilities).
    #[error("{0}")]
    NotSupported(String),
    #[error("store: {0}")]
    Store(String),
    /// The action's audit record could not be written: it was not carried out.
    #[error("the audit log cannot be written: {0}")]
    AuditUnavailable(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl HubError {
    /// What a radio's refusal means to the caller: a request the radio cannot take
    /// is the caller's to fix; a radio that failed it is unavailable for it.
    pub fn from_radio(radio: &str, e: RadioError) -> HubError {
        match e {
            RadioError::NotSupported(_) | RadioError::Invalid(_) => {
                HubError::Invalid(e.to_string())
            }
            RadioError::Refused(why) => HubError::RadioUnavailable(radio.to_string(), why),
            RadioError::Timeout(_) | RadioError::Link(_) => {
                HubError::RadioUnavailable(radio.to_string(), e.to_string())
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            HubError::UnknownRadio(_) => "unknown_radio",
            HubError::RadioUnavailable(..) => "radio_unavailable",
            HubError::RadioBusy(_) => "radio_busy",
            HubError::UnknownDevice(_) | HubError::NoInstallCode(_) => "unknown_device",
            HubError::AlreadyDecommissioned(_) => "already_decommissioned",
            HubError::DeviceDecommissioned(_) => "device_decommissioned",
            HubError::DeviceQuarantined(_) => "device_quarantined",
            HubError::PolicyRefused(_) => "policy_refused",
            HubError::Invalid(_) => "invalid_request",
            HubError::NotSupported(_) => "not_supported",
            HubError::Store(_) => "store_error",
            HubError::AuditUnavailable(_) => "audit_unavailable",
            HubError::ShuttingDown => "shutting_down",
        }
    }
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AuditNotStored(why) => HubError::AuditUnavailable(why),
            e => HubError::Store(e.to_string()),
        }
    }
}

/// What the hub tells observers (the demo console, tests).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    DeviceJoined {
        device: String,
        radio: String,
        new: bool,
    },
    DeviceInterviewed {
        device: String,
        manufacturer: Option<String>,
        model: Option<String>,
    },
    Readings {
        device: String,
        readings: Vec<Reading>,
        /// The telemetry message's seq; `None` when the full outbox refused telemetry.
        outbox_seq: Option<i64>,
    },
    DeviceLeft {
        device: String,
    },
    PermitJoin {
        radio: String,
        seconds: u32,
    },
    Decommissioned {
        device: String,
    },
    /// Admission refused: the device is being removed from the network.
    Denied {
        device: String,
        reason: String,
    },
    Quarantined {
        device: String,
        firmware: Option<String>,
        min_version: String,
    },
    Released {
        device: String,
    },
    Health {
        device: String,
        flag: String,
        raised: bool,
    },
    RuleFired {
        rule: String,
        target: String,
        sent: bool,
    },
    PolicyApplied {
        version: u64,
    },
}

/// A handle to send requests to the hub.
#[derive(Clone)]
pub struct HubHandle {
    pub(super) requests: mpsc::Sender<HubRequest>,
    pub(super) notices: broadcast::Sender<Notice>,
}

impl HubHandle {
    pub async fn request(&self, req: HubRequest) -> Result<(), HubError> {
        self.requests
            .send(req)
            .await
            .map_err(|_| HubError::ShuttingDown)
    }

    /// Sends a request built around a reply channel and waits for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, HubError>>) -> HubRequest,
    ) -> Result<T, HubError> {
        let (reply, rx) = oneshot::channel();
        self.request(make(reply)).await?;
        rx.await.map_err(|_| HubError::ShuttingDown)?
    }

    pub async fn permit_join(
        &self,
        radio: String,
        seconds: u32,
        actor: String,
    ) -> Result<PermitJoinAccepted, HubError> {
        self.ask(|reply| HubRequest::PermitJoin {
            radio,
            seconds,
            actor,
            reply,
        })
        .await
    }

    /// Lets a decommissioned device join again (back to `pending`).
    pub async fn readmit(&self, device: DeviceId, actor: String) -> Result<Readmitted, HubError> {
        self.ask(|reply| HubRequest::Readmit {
            device,
            actor,
            reply,
        })
        .await
    }

    /// Adopts a discovered (`pending`) device, storing and provisioning its bindkey.
    pub async fn adopt(
        &self,
        device: DeviceId,
        bindkey: Option<Secret>,
        actor: String,
    ) -> Result<Adopted, HubError> {
        self.ask(|reply| HubRequest::Adopt {
            device,
            bindkey,
            actor,
            reply,
        })
        .await
    }

    pub async fn decommission(
        &self,
        device: DeviceId,
        actor: String,
    ) -> Result<Decommissioned, HubError> {
        self.ask(|reply| HubRequest::Decommission {
            device,
            actor,
            reply,
        })
        .await
    }

    /// Decommissions a device and puts it on the denylist in one step (`remove --block`).
    pub async fn block(&self, device: DeviceId, actor: String) -> Result<Blocked, HubError> {
        self.ask(|reply| HubRequest::Block {
            device,
            actor,
            reply,
        })
        .await
    }

    pub async fn command(
        &self,
        device: DeviceId,
        command: DeviceCommand,
        actor: String,
    ) -> Result<CommandSent, HubError> {
        self.ask(|reply| HubRequest::Command {
            device,
            command,
            actor,
            reply,
        })
        .await
    }

    /// A `set` or `get`: sent now to an awake device, held for a sleeping one.
    pub async fn device_request(&self, request: DeviceRequest) -> Result<DeviceAnswer, HubError> {
        self.ask(|reply| HubRequest::Device { request, reply })
            .await
    }

    pub async fn apply_policy(
        &self,
        document: Vec<u8>,
        source: String,
        actor: String,
    ) -> Result<PolicyApplied, HubError> {
        self.ask(|reply| HubRequest::ApplyPolicy {
            document,
            source,
            actor,
            reply,
        })
        .await
    }

    /// A network backup of `radio`; holds the network key (local technician API only).
    /// The radio's network backup document (its format is the radio's, see
    /// [`HubHandle::network_backup`]). It holds network secrets.
    pub async fn backup(
        &self,
        radio: String,
        actor: String,
    ) -> Result<serde_json::Value, HubError> {
        self.network_backup(radio, actor).await.map(|b| b.document)
    }

    /// Writes `document` (a backup in the radio's own format) back onto `radio`; answers
    /// what the driver restored.
    pub async fn restore(
        &self,
        radio: String,
        document: serde_json::Value,
        actor: String,
    ) -> Result<serde_json::Value, HubError> {
        self.ask(|reply| HubRequest::Restore {
            radio,
            document,
            actor,
            reply,
        })
        .await
    }

    /// The radio's network backup with its format and device count.
    pub async fn network_backup(
        &self,
        radio: String,
        actor: String,
    ) -> Result<NetworkBackup, HubError> {
        self.ask(|reply| HubRequest::Backup {
            radio,
            actor,
            reply,
        })
        .await
    }

    /// Registers (or replaces) a Zigbee device's install code.
    pub async fn add_install_code(
        &self,
        device: DeviceId,
        code: Secret,
        actor: String,
    ) -> Result<InstallCodeAdded, HubError> {
        self.ask(|reply| HubRequest::AddInstallCode {
            device,
            code,
            actor,
            reply,
        })
        .await
    }

    pub async fn add_credential(
        &self,
        device: DeviceId,
        kind: CredentialKind,
        secret: Secret,
        actor: String,
    ) -> Result<InstallCodeAdded, HubError> {
        self.ask(|reply| HubRequest::AddCredential {
            device,
            kind,
            secret,
            actor,
            reply,
        })
        .await
    }

    pub async fn remove_install_code(
        &self,
        device: DeviceId,
        actor: String,
    ) -> Result<InstallCodeRemoved, HubError> {
        self.ask(|reply| HubRequest::RemoveInstallCode {
            device,
            actor,
            reply,
        })
        .await
    }

    /// Rotates `radio`'s network key; answers when the switch is done or failed.
    pub async fn rotate_network_key(
        &self,
        radio: String,
        actor: String,
    ) -> Result<KeyRotationDone, HubError> {
        self.ask(|reply| HubRequest::RotateNetworkKey {
            radio: radio.clone(),
            actor,
            reply,
        })
        .await
        .map(|rotation| KeyRotationDone { radio, rotation })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}
