use super::*;

fn code(op: &str, payload: &[u8]) -> &'static str {
    match parse(op, payload).request {
        Ok(_) => "ok",
        Err(r) => r.code,
    }
}

#[test]
fn valid_requests_parse() {
    let p = parse(
        "permit_join",
        br#"{"correlation_id":"c1","radio":"zb0","seconds":60}"#,
    );
    assert_eq!(p.correlation_id.as_deref(), Some("c1"));
    assert_eq!(
        p.request,
        Ok(Request::PermitJoin {
            radio: "zb0".into(),
            seconds: 60
        })
    );
    let p = parse("info", br#"{"correlation_id":"c2","client_id":"ops-1"}"#);
    assert_eq!(p.client_id.as_deref(), Some("ops-1"));
    assert_eq!(p.request, Ok(Request::Info));
    assert_eq!(
        code("remove", br#"{"correlation_id":"c","device":"zigbee:0x1"}"#),
        "ok"
    );
    assert_eq!(
        parse(
            "remove",
            br#"{"correlation_id":"c","device":"zigbee:0x00124b0001abcdef","block":true}"#
        )
        .request,
        Ok(Request::Remove {
            device: DeviceId::parse("zigbee:0x00124b0001abcdef").unwrap(),
            block: true
        })
    );
    // A block by friendly name is checked when the name is looked up.
    assert_eq!(
        code(
            "remove",
            br#"{"correlation_id":"c","device":"hall-lamp","block":true}"#
        ),
        "ok"
    );
    assert_eq!(
        code(
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":true}}"#
        ),
        "ok"
    );
    assert_eq!(
        code("get", br#"{"correlation_id":"c","device":"zigbee:0x1"}"#),
        "ok"
    );
    assert_eq!(
        code(
            "policy",
            br#"{"correlation_id":"c","version":3,"document":{"version":3}}"#
        ),
        "ok"
    );
}

#[test]
fn install_code_and_rotation_requests_parse_strictly_without_echoing_the_code() {
    let spec = "83FED3407A939723A5C639B26916D505C3B5";
    let p = parse(
        "install_code",
        format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124B0001ABCDEF","code":"{spec}"}}"#).as_bytes(),
    );
    let Ok(Request::AddInstallCode {
        device,
        code: sealed,
    }) = &p.request
    else {
        panic!("{:?}", p.request);
    };
    assert_eq!(device.as_str(), "zigbee:0x00124b0001abcdef");
    assert_eq!(sealed.0.len(), 18);
    assert!(!format!("{:?}", p.request).contains("131"));
    assert_eq!(
        parse(
            "install_code",
            br#"{"correlation_id":"c","action":"remove","device":"zigbee:0x00124b0001abcdef"}"#
        )
        .request,
        Ok(Request::RemoveInstallCode {
            device: DeviceId::parse("zigbee:0x00124b0001abcdef").unwrap()
        })
    );
    assert_eq!(
        parse(
            "rotate_network_key",
            br#"{"correlation_id":"c","radio":"zb0"}"#
        )
        .request,
        Ok(Request::RotateNetworkKey {
            radio: "zb0".into()
        })
    );
    let cases: Vec<(String, &str)> = vec![
        (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":"{}"}}"#, &spec[..35]), "invalid_install_code"),
        (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":83123}"#.into(), "invalid_request"),
        (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":["83FED340"]}"#.into(), "invalid_request"),
        (r#"{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef"}"#.into(), "invalid_request"),
        (format!(r#"{{"correlation_id":"c","action":"remove","device":"zigbee:0x00124b0001abcdef","code":"{spec}"}}"#), "invalid_request"),
        (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:nope","code":"{spec}"}}"#), "bad_device_id"),
        (format!(r#"{{"correlation_id":"c","action":"add","device":"lora:0x00124b0001abcdef","code":"{spec}"}}"#), "bad_device_id"),
        (format!(r#"{{"correlation_id":"c","action":"add","device":"zigbee:0x00124b0001abcdef","code":"{spec}","extra":1}}"#), "invalid_request"),
        (r#"{"correlation_id":"c","action":"replace","device":"zigbee:0x00124b0001abcdef"}"#.into(), "invalid_request"),
    ];
    for (body, want) in cases {
        let r = parse("install_code", body.as_bytes()).request.unwrap_err();
        assert_eq!(r.code, want, "{body}: {r:?}");
        let upper = r.message.to_ascii_uppercase();
        assert!(
            !upper.contains("83FED340") && !upper.contains("83123"),
            "{body}: {}",
            r.message
        );
    }
    for body in [
        br#"{"correlation_id":"c"}"#.as_slice(),
        br#"{"correlation_id":"c","radio":"zb0","key":"00"}"#,
        br#"{"correlation_id":"c","radio":7}"#,
    ] {
        assert_eq!(code("rotate_network_key", body), "invalid_request");
    }
    assert_eq!(
        code(
            "rotate_network_key",
            br#"{"correlation_id":"c","radio":"zb0/#"}"#
        ),
        "unknown_radio"
    );
}

#[test]
fn malformed_requests_get_codes() {
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("info", b"", "empty_payload"),
        ("info", b"\xff\xfe\x00garbage", "not_utf8"),
        ("info", b"{not json", "bad_json"),
        ("info", b"[1,2]", "not_an_object"),
        ("info", b"{}", "missing_correlation_id"),
        ("info", br#"{"correlation_id":7}"#, "invalid_correlation_id"),
        (
            "info",
            br#"{"correlation_id":""}"#,
            "invalid_correlation_id",
        ),
        (
            "info",
            br#"{"correlation_id":"c","extra":1}"#,
            "invalid_request",
        ),
        ("nope", br#"{"correlation_id":"c"}"#, "unknown_operation"),
        (
            "permit_join",
            br#"{"correlation_id":"c","radio":"zb0","seconds":"60"}"#,
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c","radio":"zb0","seconds":0}"#,
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c","radio":"zb0","seconds":-5}"#,
            "invalid_request",
        ),
        (
            "permit_join",
            br#"{"correlation_id":"c","seconds":5}"#,
            "invalid_request",
        ),
        (
            "remove",
            br#"{"correlation_id":"c","device":"bo/gus"}"#,
            "bad_device_id",
        ),
        (
            "remove",
            br#"{"correlation_id":"c","device":"zigbee:0x1234","block":true}"#,
            "bad_device_id",
        ),
        (
            "remove",
            br#"{"correlation_id":"c","device":"ble:zz:zz","block":true}"#,
            "bad_device_id",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{}}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":{"x":1}}}"#,
            "invalid_request",
        ),
        (
            "policy",
            br#"{"correlation_id":"c","version":0,"document":{}}"#,
            "invalid_request",
        ),
        ("info", &big, "payload_too_large"),
        (
            "info",
            br#"{"correlation_id":"c","correlation_id":"d"}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":true,"on":false}}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"level":101}}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":"yes"}}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"on":false,"level":30}}"#,
            "invalid_request",
        ),
        (
            "set",
            br#"{"correlation_id":"c","device":"zigbee:0x1","state":{"hue":30}}"#,
            "not_supported",
        ),
    ];
    for (op, payload, want) in cases {
        assert_eq!(
            code(op, payload),
            want,
            "{op} {:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn duplicate_keys_are_found_at_any_depth_and_named_printably() {
    assert_eq!(
        duplicate_key(r#"{"a":1,"b":{"c":[{"d":1,"d":2}]}}"#).as_deref(),
        Some("d")
    );
    assert_eq!(duplicate_key(r#"{"a":1,"b":{"a":2}}"#), None);
    let p = parse(
        "info",
        "{\"correlation_id\":\"c\",\"x\u{202e}\":1,\"x\u{202e}\":2}".as_bytes(),
    );
    let r = p.request.unwrap_err();
    assert_eq!(r.code, "invalid_request");
    assert!(!r.message.contains('\u{202e}'), "{}", r.message);
    assert_eq!(p.correlation_id.as_deref(), Some("c"));
}

/// A client key (or certificate) of the wrong JSON type is refused without quoting it:
/// serde's type errors name the value.
#[test]
fn a_client_key_of_the_wrong_type_is_not_echoed() {
    for body in [
        r#"{"correlation_id":"c","cert_pem":"x","key_pem":987654321987654321}"#,
        r#"{"correlation_id":"c","cert_pem":987654321987654321,"key_pem":"x"}"#,
        r#"{"correlation_id":"c","cert_pem":"x","key_pem":"987654321987654321","extra":1}"#,
    ] {
        let Err(r) = parse("rotate_client_cert", body.as_bytes()).request else {
            panic!("accepted: {body}");
        };
        assert_eq!(r.code, "invalid_request");
        assert!(!r.message.contains("987654321"), "{}", r.message);
    }
}

/// A correlation id has to show something: blanks and zero-width characters alone are
/// refused; an id with them among visible characters is fine.
#[test]
fn a_correlation_id_that_shows_nothing_is_refused() {
    for id in [
        "\u{200b}",
        "\u{feff}",
        "\u{00ad}",
        "\u{2028}",
        " ",
        "\u{200b} \u{2060}",
    ] {
        let body = serde_json::json!({"correlation_id": id}).to_string();
        assert_eq!(
            code("info", body.as_bytes()),
            "invalid_correlation_id",
            "{id:?}"
        );
    }
    let body = serde_json::json!({"correlation_id": "a\u{200b}b"}).to_string();
    assert_eq!(code("info", body.as_bytes()), "ok");
}

#[test]
fn a_number_no_float_holds_is_out_of_range_under_its_correlation_id() {
    let huge = "9".repeat(5_000);
    let body =
        format!(r#"{{"correlation_id":"lv2","device":"hall lamp","state":{{"level":{huge}}}}}"#);
    let p = parse("set", body.as_bytes());
    assert_eq!(p.correlation_id.as_deref(), Some("lv2"));
    let e = p.request.unwrap_err();
    assert_eq!(e.code, "invalid_request", "{}", e.message);
    // Broken JSON is still bad_json.
    assert_eq!(code("set", br#"{"correlation_id":"x","#), "bad_json");
}
