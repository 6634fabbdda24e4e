//! Our decoded values as the (JSON pointer, value) pairs zwave-js's output should hold, and
//! the zwave-js class name each decodes to.

use fieldgate_zwave::cc::{
    Association, Basic, Battery, BinarySwitch, Cc, Configuration, ManufacturerSpecific, Meter,
    MultiChannel, MultilevelSensor, MultilevelSwitch, Notification, Supervision, SupervisionStatus,
    Version, WakeUp, ZwavePlusInfo,
};
use fieldgate_zwave::message::{
    AddNodeStatus, ApplicationUpdate, Callback, Inbound, RemoveNodeStatus, Request, Response,
    RxFrameType, TransmitStatus, Unsolicited,
};
use fieldgate_zwave::{to_hex, DataFrame};
use serde_json::{json, Value as J};

pub type Fields = Vec<(String, J)>;

fn f(out: &mut Fields, pointer: &str, v: J) {
    out.push((pointer.to_string(), v));
}

/// Duration byte as zwave-js reports it (`Duration.parseReport`).
fn duration_report(b: u8) -> J {
    match b {
        0xFF => J::Null,
        0xFE => json!({"value": 0, "unit": "unknown"}),
        0x80..=0xFD => json!({"value": b - 0x7F, "unit": "minutes"}),
        _ => json!({"value": b, "unit": "seconds"}),
    }
}

/// Duration byte as zwave-js reads it in Set commands (`Duration.parseSet`).
fn duration_set(b: u8) -> J {
    match b {
        0xFF => json!({"value": 0, "unit": "default"}),
        _ => duration_report(b),
    }
}

/// zwave-js `parseMaybeNumber` (+ 0xFF = 99 where the report says so).
fn maybe_number(b: u8) -> J {
    match b {
        0xFE => J::Null,
        0..=99 => json!(b),
        0xFF => json!(99),
        _ => J::Null,
    }
}

fn maybe_bool(b: u8) -> J {
    match b {
        0x00 => json!(false),
        0xFF => json!(true),
        _ => J::Null,
    }
}

pub fn cc_fields(cc: &Cc, p: &str, out: &mut Fields) -> Option<&'static str> {
    f(out, &format!("{p}/ccId"), json!(cc.cc_id()));
    let k = |s: &str| format!("{p}/{s}");
    Some(match cc {
        Cc::Basic(Basic::Set { value }) => {
            f(out, &k("targetValue"), json!(value));
            "BasicCCSet"
        }
        Cc::Basic(Basic::Get) => "BasicCCGet",
        Cc::Basic(Basic::Report {
            current,
            transition,
        }) => {
            f(out, &k("currentValue"), maybe_number(*current));
            if let Some(t) = transition {
                f(out, &k("targetValue"), maybe_number(t.target));
                f(out, &k("duration"), duration_report(t.duration.0));
            }
            "BasicCCReport"
        }
        Cc::BinarySwitch(BinarySwitch::Set { value, duration }) => {
            f(out, &k("targetValue"), json!(*value != 0));
            if let Some(d) = duration {
                f(out, &k("duration"), duration_set(d.0));
            }
            "BinarySwitchCCSet"
        }
        Cc::BinarySwitch(BinarySwitch::Get) => "BinarySwitchCCGet",
        Cc::BinarySwitch(BinarySwitch::Report {
            current,
            transition,
        }) => {
            f(out, &k("currentValue"), maybe_bool(*current));
            if let Some(t) = transition {
                f(out, &k("targetValue"), maybe_bool(t.target));
                f(out, &k("duration"), duration_report(t.duration.0));
            }
            "BinarySwitchCCReport"
        }
        Cc::MultilevelSwitch(MultilevelSwitch::Set { value, duration }) => {
            f(out, &k("targetValue"), json!(value));
            if let Some(d) = duration {
                f(out, &k("duration"), duration_report(d.0));
            }
            "MultilevelSwitchCCSet"
        }
        Cc::MultilevelSwitch(MultilevelSwitch::Report {
            current,
            transition,
        }) => {
            f(out, &k("currentValue"), maybe_number(*current));
            if let Some(t) = transition {
                f(out, &k("targetValue"), maybe_number(t.target));
                f(out, &k("duration"), duration_report(t.duration.0));
            }
            "MultilevelSwitchCCReport"
        }
        Cc::MultilevelSwitch(MultilevelSwitch::StartLevelChange {
            flags,
            start_level,
            duration,
        }) => {
            f(
                out,
                &k("ignoreStartLevel"),
                json!(MultilevelSwitch::ignores_start_level(*flags)),
            );
            f(
                out,
                &k("direction"),
                json!(if MultilevelSwitch::is_down(*flags) {
                    "down"
                } else {
                    "up"
                }),
            );
            f(out, &k("startLevel"), json!(start_level));
            if let Some(d) = duration {
                f(out, &k("duration"), duration_set(d.0));
            }
            "MultilevelSwitchCCStartLevelChange"
        }
        Cc::MultilevelSwitch(MultilevelSwitch::SupportedReport { primary_type, .. }) => {
            f(out, &k("switchType"), json!(primary_type & 0x1F));
            "MultilevelSwitchCCSupportedReport"
        }
        Cc::MultilevelSensor(MultilevelSensor::Report {
            sensor_type,
            scale,
            value,
        }) => {
            f(out, &k("type"), json!(sensor_type));
            f(out, &k("scale"), json!(scale));
            f(out, &k("value"), json!(value.value()));
            "MultilevelSensorCCReport"
        }
        Cc::MultilevelSensor(MultilevelSensor::Get { sensor }) => {
            if let Some((t, s)) = sensor {
                f(out, &k("sensorType"), json!(t));
                f(out, &k("scale"), json!(s));
            }
            "MultilevelSensorCCGet"
        }
        Cc::MultilevelSensor(MultilevelSensor::SupportedSensorReport { sensor_types }) => {
            f(out, &k("supportedSensorTypes"), json!(sensor_types));
            "MultilevelSensorCCSupportedSensorReport"
        }
        Cc::MultilevelSensor(MultilevelSensor::SupportedScaleReport {
            sensor_type,
            scales,
        }) => {
            f(out, &k("sensorType"), json!(sensor_type));
            f(out, &k("supportedScales"), json!(scales));
            "MultilevelSensorCCSupportedScaleReport"
        }
        Cc::Meter(Meter::Report {
            reading,
            delta_time,
            previous,
        }) => {
            f(out, &k("type"), json!(reading.meter_type));
            f(out, &k("rateType"), json!(reading.rate_type));
            f(out, &k("scale"), json!(reading.scale));
            f(out, &k("value"), json!(reading.value.value()));
            f(
                out,
                &k("deltaTime"),
                match delta_time {
                    None => json!(0),
                    Some(0xFFFF) => J::Null,
                    Some(d) => json!(d),
                },
            );
            f(
                out,
                &k("previousValue"),
                previous.map_or(J::Null, |v| json!(v.value())),
            );
            "MeterCCReport"
        }
        Cc::Meter(Meter::Get { selector }) => {
            if let Some((rate, scale)) = selector {
                f(out, &k("rateType"), json!(rate));
                f(out, &k("scale"), json!(scale));
            }
            "MeterCCGet"
        }
        Cc::Meter(Meter::SupportedReport {
            meter_type,
            supports_reset,
            rate_types,
            scales,
        }) => {
            f(out, &k("type"), json!(meter_type));
            f(out, &k("supportsReset"), json!(supports_reset));
            f(out, &k("supportedScales"), json!(scales));
            let rates: Vec<u8> = (0..2)
                .filter(|b| rate_types & (1 << b) != 0)
                .map(|b| b + 1)
                .collect();
            f(out, &k("supportedRateTypes"), json!(rates));
            "MeterCCSupportedReport"
        }
        Cc::Notification(Notification::Report {
            alarm_type,
            alarm_level,
            event,
        }) => {
            f(out, &k("alarmType"), json!(alarm_type));
            f(out, &k("alarmLevel"), json!(alarm_level));
            if let Some(e) = event {
                f(out, &k("notificationStatus"), json!(e.status));
                f(out, &k("notificationType"), json!(e.notification_type));
                f(out, &k("notificationEvent"), json!(e.event));
                f(
                    out,
                    &k("sequenceNumber"),
                    e.sequence.map_or(J::Null, |s| json!(s)),
                );
                // zwave-js turns some event parameters into typed values; compared where it
                // keeps the bytes (see `compare`).
                f(
                    out,
                    &k("eventParameters?"),
                    if e.parameters.is_empty() {
                        J::Null
                    } else {
                        json!(to_hex(&e.parameters))
                    },
                );
            }
            "NotificationCCReport"
        }
        Cc::Notification(Notification::Get {
            notification_type,
            event,
            ..
        }) => {
            if let Some(t) = notification_type {
                f(out, &k("notificationType"), json!(t));
                f(
                    out,
                    &k("notificationEvent"),
                    event.map_or(J::Null, |e| json!(e)),
                );
            }
            "NotificationCCGet"
        }
        Cc::Notification(Notification::SupportedReport { v1_alarm, types }) => {
            f(out, &k("supportsV1Alarm"), json!(v1_alarm));
            f(out, &k("supportedNotificationTypes"), json!(types));
            "NotificationCCSupportedReport"
        }
        Cc::Battery(Battery::Get) => "BatteryCCGet",
        Cc::Battery(Battery::Report { level, flags }) => {
            f(out, &k("level"), json!(level));
            if let Some([a, b]) = flags {
                f(out, &k("chargingStatus"), json!(a >> 6));
                f(out, &k("rechargeable"), json!(a & 0x20 != 0));
                f(out, &k("backup"), json!(a & 0x10 != 0));
                f(out, &k("overheating"), json!(a & 0x08 != 0));
                f(out, &k("lowFluid"), json!(a & 0x04 != 0));
                f(
                    out,
                    &k("rechargeOrReplace"),
                    json!(if a & 0x02 != 0 {
                        2
                    } else if a & 0x01 != 0 {
                        1
                    } else {
                        0
                    }),
                );
                f(out, &k("lowTemperatureStatus"), json!(b & 0x02 != 0));
                f(out, &k("disconnected"), json!(b & 0x01 != 0));
            }
            "BatteryCCReport"
        }
        Cc::WakeUp(WakeUp::IntervalReport { seconds, node_id })
        | Cc::WakeUp(WakeUp::IntervalSet { seconds, node_id }) => {
            f(out, &k("wakeUpInterval"), json!(seconds));
            f(out, &k("controllerNodeId"), json!(node_id));
            if matches!(cc, Cc::WakeUp(WakeUp::IntervalSet { .. })) {
                "WakeUpCCIntervalSet"
            } else {
                "WakeUpCCIntervalReport"
            }
        }
        Cc::WakeUp(WakeUp::Notification) => "WakeUpCCWakeUpNotification",
        Cc::WakeUp(WakeUp::NoMoreInformation) => "WakeUpCCNoMoreInformation",
        Cc::WakeUp(WakeUp::IntervalGet) => "WakeUpCCIntervalGet",
        Cc::WakeUp(WakeUp::IntervalCapabilitiesReport {
            min_seconds,
            max_seconds,
            default_seconds,
            step_seconds,
            on_demand,
        }) => {
            f(out, &k("minWakeUpInterval"), json!(min_seconds));
            f(out, &k("maxWakeUpInterval"), json!(max_seconds));
            f(out, &k("defaultWakeUpInterval"), json!(default_seconds));
            f(out, &k("wakeUpIntervalSteps"), json!(step_seconds));
            f(
                out,
                &k("wakeUpOnDemandSupported"),
                json!(on_demand.unwrap_or(false)),
            );
            "WakeUpCCIntervalCapabilitiesReport"
        }
        Cc::ManufacturerSpecific(ManufacturerSpecific::Report {
            manufacturer_id,
            product_type,
            product_id,
        }) => {
            f(out, &k("manufacturerId"), json!(manufacturer_id));
            f(out, &k("productType"), json!(product_type));
            f(out, &k("productId"), json!(product_id));
            "ManufacturerSpecificCCReport"
        }
        Cc::Version(Version::Report {
            library_type,
            protocol,
            firmware,
            hardware,
        }) => {
            f(out, &k("libraryType"), json!(library_type));
            f(
                out,
                &k("protocolVersion"),
                json!(format!("{}.{}", protocol.0, protocol.1)),
            );
            let fw: Vec<String> = firmware.iter().map(|(a, b)| format!("{a}.{b}")).collect();
            f(out, &k("firmwareVersions"), json!(fw));
            f(
                out,
                &k("hardwareVersion"),
                hardware.map_or(J::Null, |h| json!(h)),
            );
            "VersionCCReport"
        }
        Cc::Version(Version::CommandClassReport { cc, version }) => {
            f(out, &k("requestedCC"), json!(cc));
            f(out, &k("ccVersion"), json!(version));
            "VersionCCCommandClassReport"
        }
        Cc::ZwavePlusInfo(ZwavePlusInfo::Report {
            version,
            role_type,
            node_type,
            installer_icon,
            user_icon,
        }) => {
            f(out, &k("zwavePlusVersion"), json!(version));
            f(out, &k("roleType"), json!(role_type));
            f(out, &k("nodeType"), json!(node_type));
            f(out, &k("installerIcon"), json!(installer_icon));
            f(out, &k("userIcon"), json!(user_icon));
            "ZWavePlusCCReport"
        }
        Cc::Configuration(Configuration::Report {
            parameter,
            size,
            value,
        }) => {
            f(out, &k("parameter"), json!(parameter));
            f(out, &k("valueSize"), json!(size));
            f(out, &k("value"), json!(value));
            "ConfigurationCCReport"
        }
        Cc::Configuration(Configuration::Set {
            parameter,
            reset_to_default,
            size,
            value,
        }) => {
            f(out, &k("parameter"), json!(parameter));
            f(out, &k("resetToDefault"), json!(reset_to_default));
            if !reset_to_default {
                f(out, &k("valueSize"), json!(size));
                f(out, &k("value"), json!(value));
            }
            "ConfigurationCCSet"
        }
        Cc::Association(Association::Report {
            group,
            max_nodes,
            reports_to_follow,
            node_ids,
        }) => {
            f(out, &k("groupId"), json!(group));
            f(out, &k("maxNodes"), json!(max_nodes));
            f(out, &k("reportsToFollow"), json!(reports_to_follow));
            f(out, &k("nodeIds"), json!(node_ids));
            "AssociationCCReport"
        }
        Cc::Association(Association::Set { group, node_ids }) => {
            f(out, &k("groupId"), json!(group));
            f(out, &k("nodeIds"), json!(node_ids));
            "AssociationCCSet"
        }
        Cc::Supervision(Supervision::Report {
            more_updates_follow,
            wake_up_request,
            session_id,
            status,
            duration,
        }) => {
            f(out, &k("moreUpdatesFollow"), json!(more_updates_follow));
            f(out, &k("requestWakeUpOnDemand"), json!(wake_up_request));
            f(out, &k("sessionId"), json!(session_id));
            f(out, &k("status"), json!(status.to_byte()));
            if *status == SupervisionStatus::Working {
                let d = duration_report(*duration);
                f(
                    out,
                    &k("duration"),
                    if d.is_null() {
                        json!({"value": 0, "unit": "seconds"})
                    } else {
                        d
                    },
                );
            }
            "SupervisionCCReport"
        }
        Cc::Supervision(Supervision::Get {
            status_updates,
            session_id,
            encapsulated,
        }) => {
            f(out, &k("requestStatusUpdates"), json!(status_updates));
            f(out, &k("sessionId"), json!(session_id));
            let inner = format!("{p}/encapsulated");
            let name = cc_fields(encapsulated, &inner, out)?;
            if name != "*" {
                f(out, &format!("{inner}/name"), json!(name));
            }
            "SupervisionCCGet"
        }
        Cc::MultiChannel(MultiChannel::Encapsulation {
            source_endpoint,
            destination,
            encapsulated,
        }) => {
            f(out, &k("endpointIndex?"), json!(source_endpoint));
            let dest = if destination & 0x80 != 0 {
                json!(MultiChannel::destinations(*destination))
            } else {
                json!(destination & 0x7F)
            };
            f(out, &k("destination"), dest);
            let inner = format!("{p}/encapsulated");
            let name = cc_fields(encapsulated, &inner, out)?;
            if name != "*" {
                f(out, &format!("{inner}/name"), json!(name));
            }
            "MultiChannelCCCommandEncapsulation"
        }
        Cc::Secure(_) => return None,
        Cc::Unknown(raw) => {
            f(
                out,
                &k("ccCommand"),
                raw.command.map_or(J::Null, |c| json!(c)),
            );
            f(out, &k("payload"), json!(to_hex(&raw.payload)));
            "*"
        }
        _ => "?",
    })
}

pub fn frame_fields(d: &DataFrame, host: bool, out: &mut Fields) -> &'static str {
    f(out, "/functionType", json!(d.function));
    f(out, "/type", json!(d.frame_type.to_byte()));
    if host {
        return match Request::decode(d).unwrap() {
            Request::SendData(s) => {
                f(out, "/nodeId", json!(s.node_id));
                f(out, "/transmitOptions", json!(s.tx_options));
                f(out, "/callbackId", json!(s.callback_id));
                f(out, "/serializedCC", json!(to_hex(&s.payload)));
                "SendDataRequest"
            }
            Request::AddNodeToNetwork {
                mode,
                flags,
                callback_id,
            } => {
                f(out, "/addNodeType", json!(mode.to_byte()));
                f(out, "/highPower", json!(flags & 0x80 != 0));
                f(out, "/networkWide", json!(flags & 0x40 != 0));
                f(out, "/callbackId", json!(callback_id));
                "AddNodeToNetworkRequest"
            }
            Request::RemoveNodeFromNetwork {
                mode,
                flags,
                callback_id,
            } => {
                f(out, "/removeNodeType", json!(mode.to_byte()));
                f(out, "/highPower", json!(flags & 0x80 != 0));
                f(out, "/networkWide", json!(flags & 0x40 != 0));
                f(out, "/callbackId", json!(callback_id));
                "RemoveNodeFromNetworkRequest"
            }
            Request::GetNodeProtocolInfo { node_id } => {
                f(out, "/requestedNodeId", json!(node_id));
                "GetNodeProtocolInfoRequest"
            }
            Request::RemoveFailedNode {
                node_id,
                callback_id,
            } => {
                f(out, "/failedNodeId", json!(node_id));
                f(out, "/callbackId", json!(callback_id));
                "RemoveFailedNodeRequest"
            }
            other => panic!("not generated as a host sample: {other:?}"),
        };
    }
    match Inbound::decode(d).unwrap() {
        Inbound::Response(r) => match r {
            Response::SerialApiCapabilities(c) => {
                f(
                    out,
                    "/firmwareVersion",
                    json!(format!("{}.{}", c.firmware_major, c.firmware_minor)),
                );
                f(out, "/manufacturerId", json!(c.manufacturer_id));
                f(out, "/productType", json!(c.product_type));
                f(out, "/productId", json!(c.product_id));
                f(
                    out,
                    "/supportedFunctionTypes",
                    json!(c.supported_functions()),
                );
                "GetSerialApiCapabilitiesResponse"
            }
            Response::SerialApiInitData(i) => {
                let (kind, v) = if i.api_version < 10 {
                    ("legacy", i.api_version)
                } else {
                    ("official", i.api_version - 9)
                };
                f(out, "/zwaveApiVersion", json!({"kind": kind, "version": v}));
                f(out, "/nodeType", json!(u8::from(i.is_end_node())));
                f(out, "/supportsTimers", json!(i.supports_timers()));
                f(out, "/isPrimary", json!(i.is_primary()));
                f(out, "/isSIS", json!(i.is_sis()));
                f(out, "/nodeIds", json!(i.node_ids()));
                if let Some((t, v)) = i.chip {
                    f(out, "/zwaveChipType?", json!({"type": t, "version": v}));
                }
                "GetSerialApiInitDataResponse"
            }
            Response::ControllerVersion {
                library_version,
                library_type,
            } => {
                f(out, "/libraryVersion", json!(library_version));
                f(out, "/controllerType", json!(library_type));
                "GetControllerVersionResponse"
            }
            Response::MemoryGetId { home_id, node_id } => {
                f(out, "/homeId", json!(home_id));
                f(out, "/ownNodeId", json!(node_id));
                "GetControllerIdResponse"
            }
            Response::ControllerCapabilities(c) => {
                f(out, "/isSecondary", json!(c.is_secondary()));
                f(
                    out,
                    "/isUsingHomeIdFromOtherNetwork",
                    json!(c.on_other_network()),
                );
                f(out, "/isSISPresent", json!(c.sis_present()));
                f(out, "/wasRealPrimary", json!(c.was_real_primary()));
                f(out, "/isStaticUpdateController", json!(c.is_suc()));
                f(out, "/noNodesIncluded", json!(c.no_nodes_included()));
                "GetControllerCapabilitiesResponse"
            }
            Response::SucNodeId(n) => {
                f(out, "/sucNodeId", json!(n));
                "GetSUCNodeIdResponse"
            }
            Response::NodeProtocolInfo(i) => {
                f(out, "/isListening", json!(i.is_listening()));
                f(
                    out,
                    "/isFrequentListening",
                    match i.flirs() {
                        Some(fieldgate_zwave::message::Flirs::Ms1000) => json!("1000ms"),
                        Some(fieldgate_zwave::message::Flirs::Ms250) => json!("250ms"),
                        None => json!(false),
                    },
                );
                f(out, "/isRouting", json!(i.is_routing()));
                f(out, "/supportedDataRates", json!(i.data_rates()));
                f(out, "/protocolVersion", json!(i.protocol_version()));
                f(
                    out,
                    "/optionalFunctionality",
                    json!(i.optional_functionality()),
                );
                f(out, "/nodeType", json!(u8::from(!i.is_controller())));
                f(out, "/supportsSecurity", json!(i.supports_security()));
                f(out, "/supportsBeaming", json!(i.supports_beaming()));
                f(out, "/basicDeviceClass", json!(i.device_class.basic));
                f(out, "/genericDeviceClass", json!(i.device_class.generic));
                f(out, "/specificDeviceClass", json!(i.device_class.specific));
                "GetNodeProtocolInfoResponse"
            }
            Response::SendData { was_sent } => {
                f(out, "/wasSent", json!(was_sent));
                "SendDataResponse"
            }
            Response::RequestNodeInfo { was_sent } => {
                f(out, "/wasSent", json!(was_sent));
                "RequestNodeInfoResponse"
            }
            Response::RemoveFailedNode { status } => {
                f(out, "/removeStatus", json!(status));
                "RemoveFailedNodeResponse"
            }
            Response::IsFailedNode { failed } => {
                f(out, "/result", json!(failed));
                "IsFailedNodeResponse"
            }
            Response::NvmBackupRestore {
                status,
                offset_or_size,
                data,
            } => {
                f(out, "/status", json!(status.to_byte()));
                f(out, "/offsetOrSize", json!(offset_or_size));
                f(out, "/buffer", json!(to_hex(&data)));
                "NVMOperationsResponse"
            }
            Response::NvmId {
                manufacturer_id,
                memory_type,
                memory_size,
                ..
            } => {
                f(out, "/nvmManufacturerId", json!(manufacturer_id));
                f(out, "/memoryType", json!(memory_type));
                f(out, "/memorySize", json!(memory_size));
                "GetNVMIdResponse"
            }
            Response::NvmExtReadLongBuffer { data } => {
                f(out, "/buffer", json!(to_hex(&data)));
                "ExtNVMReadLongBufferResponse"
            }
            Response::Unknown(u) => {
                f(out, "/payload", json!(to_hex(&u.payload)));
                "Message"
            }
        },
        Inbound::Callback(c) => {
            f(out, "/callbackId", json!(c.callback_id()));
            match c {
                Callback::SendData { status, report, .. } => {
                    f(out, "/transmitStatus", json!(status.to_byte()));
                    match report {
                        None => f(out, "/txReport", J::Null),
                        Some(r) => {
                            f(out, "/txReport/txTicks", json!(r.tx_ticks));
                            f(out, "/txReport/txChannelNo", json!(r.tx_channel));
                            f(
                                out,
                                "/txReport/routeSchemeState",
                                json!(r.route_scheme_state),
                            );
                            f(out, "/txReport/repeaterNodeIds", json!(r.repeaters()));
                            f(out, "/txReport/beam1000ms", json!(r.beam_1000ms));
                            f(out, "/txReport/beam250ms", json!(r.beam_250ms));
                            f(out, "/txReport/routeSpeed", json!(r.route_speed));
                            f(out, "/txReport/routingAttempts", json!(r.routing_attempts));
                            f(
                                out,
                                "/txReport/failedRouteLastFunctionalNodeId",
                                r.failed_route_last_functional_node
                                    .map_or(J::Null, |v| json!(v)),
                            );
                            f(
                                out,
                                "/txReport/failedRouteFirstNonFunctionalNodeId",
                                r.failed_route_first_non_functional_node
                                    .map_or(J::Null, |v| json!(v)),
                            );
                            // zwave-js leaves out ACK fields for NoAck and an unavailable ACK RSSI,
                            // and the Long Range fields on classic channels.
                            if status != TransmitStatus::NoAck {
                                f(out, "/txReport/ackRepeaterRSSI", json!(r.hop_rssi()));
                                if r.ack_rssi != 127 {
                                    f(out, "/txReport/ackRSSI", json!(r.ack_rssi));
                                    f(out, "/txReport/ackChannelNo", json!(r.ack_channel));
                                }
                            }
                            if r.tx_channel >= 3 {
                                f(
                                    out,
                                    "/txReport/txPower",
                                    r.tx_power
                                        .filter(|v| (-127..=126).contains(v))
                                        .map_or(J::Null, |v| json!(v)),
                                );
                                f(
                                    out,
                                    "/txReport/measuredNoiseFloor",
                                    r.measured_noise_floor.map_or(J::Null, |v| json!(v)),
                                );
                            }
                        }
                    }
                    "SendDataRequestTransmitReport"
                }
                Callback::AddNode { status, .. } => {
                    let code = match &status {
                        AddNodeStatus::Ready => 1,
                        AddNodeStatus::NodeFound => 2,
                        AddNodeStatus::AddingEndNode(_) => 3,
                        AddNodeStatus::AddingController(_) => 4,
                        AddNodeStatus::ProtocolDone => 5,
                        AddNodeStatus::Done { .. } => 6,
                        AddNodeStatus::Failed => 7,
                        AddNodeStatus::Other { status, .. } => *status,
                    };
                    f(out, "/status", json!(code));
                    match status {
                        AddNodeStatus::AddingEndNode(n) | AddNodeStatus::AddingController(n) => {
                            let dc = n.device_class.unwrap_or_default();
                            f(out, "/statusContext/nodeId", json!(n.node_id));
                            f(out, "/statusContext/basicDeviceClass", json!(dc.basic));
                            f(out, "/statusContext/genericDeviceClass", json!(dc.generic));
                            f(
                                out,
                                "/statusContext/specificDeviceClass",
                                json!(dc.specific),
                            );
                            f(
                                out,
                                "/statusContext/supportedCCs",
                                json!(n.command_classes.supported),
                            );
                            f(
                                out,
                                "/statusContext/controlledCCs",
                                json!(n.command_classes.controlled),
                            );
                        }
                        AddNodeStatus::Done { node_id } => {
                            f(out, "/statusContext/nodeId", json!(node_id))
                        }
                        _ => {}
                    }
                    "AddNodeToNetworkRequestStatusReport"
                }
                Callback::RemoveNode { status, .. } => {
                    let (code, node) = match status {
                        RemoveNodeStatus::Ready => (1, None),
                        RemoveNodeStatus::NodeFound => (2, None),
                        RemoveNodeStatus::RemovingEndNode { node_id } => (3, Some(node_id)),
                        RemoveNodeStatus::RemovingController { node_id } => (4, Some(node_id)),
                        RemoveNodeStatus::Done { .. } => (6, None),
                        RemoveNodeStatus::Failed => (7, None),
                        RemoveNodeStatus::Other { status, .. } => (status, None),
                    };
                    f(out, "/status", json!(code));
                    if let Some(n) = node {
                        f(out, "/statusContext/nodeId", json!(n));
                    }
                    "RemoveNodeFromNetworkRequestStatusReport"
                }
                Callback::RemoveFailedNode { status, .. } => {
                    f(out, "/removeStatus", json!(status.to_byte()));
                    "RemoveFailedNodeRequestStatusReport"
                }
                Callback::Other { .. } => "?",
            }
        }
        Inbound::Unsolicited(u) => match u {
            Unsolicited::ApplicationCommand(a) => {
                f(out, "/nodeId", json!(a.source));
                f(out, "/routedBusy", json!(a.status.routed_busy()));
                f(
                    out,
                    "/frameType",
                    json!(match a.status.frame_type() {
                        RxFrameType::Singlecast => "singlecast",
                        RxFrameType::Broadcast => "broadcast",
                        RxFrameType::Multicast => "multicast",
                    }),
                );
                f(out, "/isExploreFrame", json!(a.status.explore()));
                f(out, "/isForeignFrame", json!(a.status.foreign_frame()));
                f(out, "/fromForeignHomeId", json!(a.status.foreign_home_id()));
                f(out, "/serializedCC", json!(to_hex(&a.payload)));
                "ApplicationCommandRequest"
            }
            Unsolicited::BridgeApplicationCommand(b) => {
                f(out, "/nodeId", json!(b.source));
                let multicast = b.status.frame_type() == RxFrameType::Multicast;
                f(
                    out,
                    "/frameType",
                    json!(if multicast { "multicast" } else { "singlecast" }),
                );
                if multicast {
                    let ids: Vec<u16> = fieldgate_zwave::message::SerialApiInitData {
                        api_version: 0,
                        capabilities: 0,
                        node_bitmask: b.multicast_mask.clone(),
                        chip: None,
                    }
                    .node_ids()
                    .into_iter()
                    .map(u16::from)
                    .collect();
                    f(out, "/targetNodeId", json!(ids));
                } else {
                    f(out, "/targetNodeId", json!(b.destination));
                }
                f(out, "/rssi", b.rssi.map_or(J::Null, |r| json!(r)));
                f(out, "/serializedCC", json!(to_hex(&b.payload)));
                "BridgeApplicationCommandRequest"
            }
            Unsolicited::ApplicationUpdate(a) => {
                let (name, ty, info) = match &a {
                    ApplicationUpdate::NodeInfoReceived(i) => {
                        ("ApplicationUpdateRequestNodeInfoReceived", 0x84, Some(i))
                    }
                    ApplicationUpdate::NodeAdded(i) => {
                        ("ApplicationUpdateRequestNodeAdded", 0x40, Some(i))
                    }
                    ApplicationUpdate::NodeInfoRequestFailed { .. } => {
                        ("ApplicationUpdateRequestNodeInfoRequestFailed", 0x81, None)
                    }
                    ApplicationUpdate::NodeRemoved { node_id } => {
                        f(out, "/nodeId", json!(node_id));
                        ("ApplicationUpdateRequestNodeRemoved", 0x20, None)
                    }
                    _ => ("?", 0, None),
                };
                f(out, "/updateType", json!(ty));
                if let Some(i) = info {
                    let dc = i.device_class.unwrap_or_default();
                    f(out, "/nodeInformation/nodeId", json!(i.node_id));
                    f(out, "/nodeInformation/basicDeviceClass", json!(dc.basic));
                    f(
                        out,
                        "/nodeInformation/genericDeviceClass",
                        json!(dc.generic),
                    );
                    f(
                        out,
                        "/nodeInformation/specificDeviceClass",
                        json!(dc.specific),
                    );
                    f(
                        out,
                        "/nodeInformation/supportedCCs",
                        json!(i.command_classes.supported),
                    );
                    f(
                        out,
                        "/nodeInformation/controlledCCs",
                        json!(i.command_classes.controlled),
                    );
                }
                name
            }
            Unsolicited::SerialApiStarted(s) => {
                f(out, "/wakeUpReason", json!(s.wake_up_reason.to_byte()));
                f(out, "/watchdogEnabled", json!(s.watchdog_started));
                f(out, "/isListening", json!(s.listening));
                f(out, "/genericDeviceClass", json!(s.generic));
                f(out, "/specificDeviceClass", json!(s.specific));
                f(out, "/supportedCCs", json!(s.command_classes.supported));
                f(out, "/controlledCCs", json!(s.command_classes.controlled));
                f(
                    out,
                    "/supportsLongRange",
                    json!(s.protocols.is_some_and(|p| p & 1 != 0)),
                );
                "SerialAPIStartedRequest"
            }
            Unsolicited::Unknown(u) => {
                f(out, "/payload", json!(to_hex(&u.payload)));
                "Message"
            }
        },
    }
}
