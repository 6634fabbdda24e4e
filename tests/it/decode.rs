//! `fieldgate decode zwave|ble|lora`: the real binary on known vectors (each from its codec
//! crate's own vector tests, source named), and what it does with bad input: a clear error
//! on stderr, exit code 1, never a key echoed.

use serde_json::Value;

use crate::common::{fieldgate, stderr};

fn json_ok(args: &[&str]) -> Value {
    let out = fieldgate(args);
    assert!(out.status.success(), "{args:?} failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// Exit code 1 and the error on stderr (nothing on stdout); returns stderr.
fn fails(args: &[&str]) -> String {
    let out = fieldgate(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn zwave_stream_frames_command_classes_and_readings() {
    // fieldgate-zwave tests/vectors.rs: zwave-js#7815's SendData (node 52, Binary Switch
    // Set off), the RES answering it, then the reference mock's sensor report from node 3
    // (21.5 °C), each after the ACK that acknowledges it.
    let v = json_ok(&[
        "decode",
        "zwave",
        "01 0b 00 13 34 04 25 01 00 ff 25 88 a1",
        "06 01 04 01 13 01 e8",
        "06 01 0c 00 04 00 03 06 31 05 01 22 00 d7 32",
    ]);
    let frames = v["frames"].as_array().unwrap();
    let kinds: Vec<&str> = frames.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["data", "ack", "data", "ack", "data"]);

    let send = &frames[0];
    assert_eq!(send["function"], 0x13);
    assert_eq!(send["function_name"], "SendData");
    assert_eq!(send["direction"], "host_to_controller");
    assert_eq!(send["message_class"], "request");
    assert_eq!(send["message"]["send_data"]["node_id"], 52);
    assert_eq!(send["message"]["send_data"]["callback_id"], 0x88);
    assert_eq!(
        send["command_class"]["cc"]["binary_switch"]["set"]["value"],
        0
    );

    assert_eq!(frames[2]["message_class"], "response");
    assert_eq!(frames[2]["direction"], "controller_to_host");
    assert_eq!(frames[2]["message"]["send_data"]["was_sent"], true);

    let report = &frames[4];
    assert_eq!(report["function_name"], "ApplicationCommandHandler");
    assert_eq!(report["message"]["application_command"]["source"], 3);
    let cc = &report["command_class"];
    assert_eq!(cc["cc_id"], 0x31);
    assert_eq!(
        cc["cc"]["multilevel_sensor"]["report"]["value"]["value"],
        21.5
    );
    assert_eq!(cc["readings"][0]["name"], "temperature");
    assert_eq!(cc["readings"][0]["value"], 21.5);
    assert_eq!(cc["readings"][0]["unit"], "°C");
    assert_eq!(v["parser"]["frames"], 3);
    assert_eq!(v["parser"]["acks"], 2);
}

#[test]
fn zwave_nested_encapsulation_and_bad_frames_are_reported() {
    // fieldgate-zwave tests/vectors.rs encapsulation_and_security: Multi Channel from
    // endpoint 2 around a door-open Notification, inside ApplicationCommandHandler from
    // node 5; line noise before it, a frame with a broken checksum after it.
    let v = json_ok(&[
        "decode",
        "zwave",
        "--from",
        "controller",
        "aa bb",
        "01 13 00 04 00 05 0d 60 0d 02 01 71 05 00 00 00 ff 06 16 00 15",
        "01 03 01 13 00",
    ]);
    let frames = v["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 2, "{v:#}");
    let cc = &frames[0]["command_class"];
    assert_eq!(cc["endpoint"], 2);
    let inner = &cc["cc"]["multi_channel"]["encapsulation"]["encapsulated"];
    assert_eq!(inner["notification"]["report"]["event"]["event"], 0x16);
    assert_eq!(cc["readings"][0]["name"], "contact");
    assert_eq!(cc["readings"][0]["value"], false);
    assert_eq!(frames[1]["kind"], "rejected");
    assert!(frames[1]["reason"]["bad_checksum"].is_object(), "{v:#}");
    assert!(v["parser"]["dropped_bytes"].as_u64().unwrap() >= 2, "{v:#}");

    // Nothing but noise, or not hex: errors.
    let err = fails(&["decode", "zwave", "aa bb cc"]);
    assert!(err.contains("no Serial API frame"), "{err}");
    let err = fails(&["decode", "zwave", "01 0g"]);
    assert!(err.contains("invalid hex"), "{err}");
}

#[test]
fn ble_bthome_encrypted_spec_example() {
    // fieldgate-ble bthome/tests.rs spec_encryption_example_decodes (bthome.io
    // encryption.html): 25.06 °C and 50.55 % under the spec's key and counter.
    const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
    let sd = "fcd2=41e445f3c9962b332211006c7c4519";
    let mac = "54:48:E6:8F:80:A5";
    let out = fieldgate(&[
        "decode",
        "ble",
        "--service-data",
        sd,
        "--mac",
        mac,
        "--bindkey",
        KEY,
        "--rssi",
        "-70",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(KEY), "the bindkey was printed");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "bthome");
    assert_eq!(v["readings"][0]["name"], "temperature");
    assert_eq!(v["readings"][0]["value"], 25.06);
    assert_eq!(v["readings"][0]["unit"], "°C");
    assert_eq!(v["readings"][1]["name"], "humidity");
    assert_eq!(v["readings"][1]["unit"], "%");
    assert_eq!(v["meta"]["encrypted"], true);
    assert_eq!(v["meta"]["counter"], 0x0011_2233);
    assert_eq!(v["meta"]["device_address"], mac);

    // Each security failure is an error that names itself, and never shows the key.
    let base = ["decode", "ble", "--service-data", sd, "--mac", mac];
    let err = fails(&base);
    assert!(err.contains("no key") && err.contains("--bindkey"), "{err}");
    let wrong = "00112233445566778899aabbccddeeff";
    let err = fails(&[&base[..], &["--bindkey", wrong]].concat());
    assert!(err.contains("integrity check failed"), "{err}");
    assert!(!err.contains(wrong));
    let err = fails(&[&base[..], &["--bindkey", KEY, "--last-counter", "1122867"]].concat());
    assert!(err.contains("replayed"), "{err}");
    let err = fails(&[&base[..], &["--bindkey", "231d39c1d7cc1ab1"]].concat());
    assert!(
        err.contains("--bindkey") && err.contains("8 bytes"),
        "{err}"
    );
    assert!(!err.contains("231d39c1"), "{err}");
}

#[test]
fn ble_ruuvi_unknown_and_bad_input() {
    // fieldgate-ble ruuvi.rs official_valid_data (ruuvi dataformat_05.md "valid data").
    let v = json_ok(&[
        "decode",
        "ble",
        "--manufacturer-data",
        "0x0499=0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F",
    ]);
    assert_eq!(v["format"], "ruuvi_rawv2");
    assert_eq!(v["readings"][0]["name"], "temperature");
    assert_eq!(v["readings"][0]["value"], 24.3);
    assert_eq!(v["meta"]["packet_id"], 205);
    let v = json_ok(&["decode", "ble", "--service-data", "feed=0001"]);
    assert_eq!(v, serde_json::json!({"format": "unknown"}));

    let err = fails(&["decode", "ble", "--service-data", "fcd=40"]);
    assert!(err.contains("not a UUID"), "{err}");
    let err = fails(&["decode", "ble", "--service-data", "fcd2=4g"]);
    assert!(err.contains("not hex"), "{err}");
    let err = fails(&["decode", "ble", "--manufacturer-data", "acme=00"]);
    assert!(err.contains("company id"), "{err}");
    let err = fails(&[
        "decode",
        "ble",
        "--service-data",
        "fcd2=40",
        "--mac",
        "54:48",
    ]);
    assert!(err.contains("--mac"), "{err}");
    let err = fails(&["decode", "ble"]);
    assert!(err.contains("no advertisement data"), "{err}");
}

#[test]
fn lora_uplink_with_session_keys() {
    // fieldgate-lora lorawan/data.rs lora_packet_readme_uplink (lora-packet README):
    // DevAddr 49be7df1, FCnt 2, FPort 1, MIC 2b11ff0d, payload "test".
    const NWK: &str = "44024241ed4ce9a68c6a8bc055233fd3";
    const APP: &str = "ec925802ae430ca77fd3dd73cb2cc588";
    let phy = "40F17DBE4900020001954378762B11FF0D";
    let v = json_ok(&["decode", "lora", phy]);
    assert_eq!(v["mhdr"]["mtype"], "unconfirmed_data_up");
    assert_eq!(v["dev_addr"], "49be7df1");
    assert_eq!(v["fcnt"], 2);
    assert_eq!(v["fport"], 1);
    assert_eq!(v["mic"], "2b11ff0d");
    assert_eq!(v["fctrl"]["adr"], false);
    assert!(v.get("mic_verified").is_none());

    let out = fieldgate(&["decode", "lora", phy, "--nwkskey", NWK, "--appskey", APP]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(NWK) && !text.contains(APP),
        "a key was printed"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["mic_verified"], true);
    assert_eq!(v["frm_payload_plaintext"], "74657374");
    // Wrong upper counter bits: the MIC does not verify, which is reported, not fatal.
    let v = json_ok(&[
        "decode",
        "lora",
        phy,
        "--nwkskey",
        NWK,
        "--appskey",
        APP,
        "--fcnt-msb",
        "1",
    ]);
    assert_eq!(v["mic_verified"], false);
    assert_eq!(v["fcnt_full"], 0x1_0002);
}

#[test]
fn lora_join_accept_and_bad_input() {
    // fieldgate-lora lorawan/join.rs lorawan_crate_join_accept (the lorawan crate's docs).
    const APP_KEY: &str = "00112233445566778899aabbccddeeff";
    let v = json_ok(&[
        "decode",
        "lora",
        "20493eeb51fba2116f810edb3742975142",
        "--appkey",
        APP_KEY,
    ]);
    assert_eq!(v["mhdr"]["mtype"], "join_accept");
    assert_eq!(v["decrypted"]["dev_addr"], "02031980");
    assert_eq!(v["decrypted"]["net_id"], "221101");
    assert_eq!(v["decrypted"]["mic_verified"], true);

    let phy = "40F17DBE4900020001954378762B11FF0D";
    let err = fails(&["decode", "lora", "40zz"]);
    assert!(err.contains("invalid hex"), "{err}");
    let err = fails(&["decode", "lora", "40F17D"]);
    assert!(err.contains("not a LoRaWAN frame"), "{err}");
    let err = fails(&["decode", "lora", phy, "--nwkskey", "44024241ed4c"]);
    assert!(
        err.contains("--nwkskey") && err.contains("32 hex digits"),
        "{err}"
    );
    assert!(!err.contains("44024241"), "{err}");
    let err = fails(&["decode", "lora", phy, "--appkey", APP_KEY]);
    assert!(err.contains("--appkey"), "{err}");
    let err = fails(&["decode", "lora", phy, "--fcnt-msb", "65536"]);
    assert!(err.contains("--fcnt-msb"), "{err}");
}
