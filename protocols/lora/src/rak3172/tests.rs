//! AT dialogue tests: the reference's lines (RUI3 manual and the migration guide's
//! pre-RUI3 format), chunking, noise and overlong lines.

use super::*;

fn events(input: &str) -> Vec<Event> {
    AtParser::new().feed(input.as_bytes())
}

#[test]
fn commands() {
    let p2p = P2pConfig {
        freq_hz: 868_000_000,
        sf: 7,
        bw_khz: 125,
        cr: 0,
        preamble: 10,
        tx_power_dbm: 14,
    };
    assert_eq!(
        Command::P2p(p2p).line().unwrap(),
        "AT+P2P=868000000:7:125:0:10:14\r\n"
    );
    assert_eq!(
        Command::NetworkMode(NetworkMode::P2p).line().unwrap(),
        "AT+NWM=0\r\n"
    );
    assert_eq!(
        Command::Receive(RxMode::Continuous).line().unwrap(),
        "AT+PRECV=65534\r\n"
    );
    assert_eq!(
        Command::Receive(RxMode::Stop).line().unwrap(),
        "AT+PRECV=0\r\n"
    );
    assert_eq!(
        Command::Receive(RxMode::UntilPacket).line().unwrap(),
        "AT+PRECV=65535\r\n"
    );
    assert_eq!(
        Command::Receive(RxMode::Window(3000)).line().unwrap(),
        "AT+PRECV=3000\r\n"
    );
    assert_eq!(
        Command::Send(vec![0xaa, 0xbb, 0x0c]).line().unwrap(),
        "AT+PSEND=AABB0C\r\n"
    );
    assert_eq!(
        Command::SyncWord(0x3444).line().unwrap(),
        "AT+SYNCWORD=3444\r\n"
    );
    assert_eq!(Command::Ping.line().unwrap(), "AT\r\n");
    assert_eq!(Command::Version.line().unwrap(), "AT+VER=?\r\n");
    assert!(Command::Send(vec![]).line().is_err());
    assert!(Command::Send(vec![0; 257]).line().is_err());
    assert!(Command::Receive(RxMode::Window(0)).line().is_err());
    assert!(Command::Receive(RxMode::Window(65534)).line().is_err());
    for bad in [
        P2pConfig { sf: 13, ..p2p },
        P2pConfig { bw_khz: 0, ..p2p },
        P2pConfig { cr: 4, ..p2p },
        P2pConfig {
            tx_power_dbm: 30,
            ..p2p
        },
        P2pConfig {
            freq_hz: 2_400_000_000,
            ..p2p
        },
        P2pConfig { preamble: 1, ..p2p },
    ] {
        assert!(Command::P2p(bad).line().is_err(), "{bad:?}");
    }
}

#[test]
fn statuses() {
    assert_eq!(
        events("\r\nOK\r\n\r\nAT_ERROR\r\nAT_PARAM_ERROR\r\nAT_BUSY_ERROR\r\nAT_NO_NETWORK_JOINED\r\nAT_MODE_NO_SUPPORT\r\nAT_SOMETHING_NEW\r\n"),
        vec![
            Event::Ok,
            Event::Error(StatusError::Generic),
            Event::Error(StatusError::Param),
            Event::Error(StatusError::Busy),
            Event::Error(StatusError::NoNetworkJoined),
            Event::Error(StatusError::ModeNotSupported),
            Event::Error(StatusError::Other("AT_SOMETHING_NEW".into())),
        ]
    );
}

#[test]
fn rx_events_in_both_firmware_formats() {
    // RUI3 (reference §4.1; the brief's example).
    assert_eq!(
        events("+EVT:RXP2P:-40:10:48656c6c6f\r\n"),
        vec![Event::RxP2p {
            rssi: -40,
            snr: 10,
            payload: b"Hello".to_vec()
        }]
    );
    assert_eq!(
        events("+EVT:RXP2P:-60:11:AABBCCDD\r\n"),
        vec![Event::RxP2p {
            rssi: -60,
            snr: 11,
            payload: vec![0xaa, 0xbb, 0xcc, 0xdd]
        }]
    );
    // Third-party variants: a length field, "RSSI -52" text, a negative SNR.
    assert_eq!(
        events("+EVT:RXP2P:RSSI -52:SNR -7:2:0102\r\n"),
        vec![Event::RxP2p {
            rssi: -52,
            snr: -7,
            payload: vec![1, 2]
        }]
    );
    // Pre-RUI3 two-line format (RAK3172 AT manual: "+EVT:RXP2P, RSSI -54, SNR 12" then
    // "+EVT:30313334"), LF-only line ends as that firmware prints them.
    assert_eq!(
        events("+EVT:RXP2P, RSSI -54, SNR 12\n+EVT:30313334\n"),
        vec![Event::RxP2p {
            rssi: -54,
            snr: 12,
            payload: b"0134".to_vec()
        }]
    );
    assert_eq!(
        events("+EVT:RXP2P,RSSI -40, SNR 10\r\n+EVT:48656c6c6f\r\n"),
        vec![Event::RxP2p {
            rssi: -40,
            snr: 10,
            payload: b"Hello".to_vec()
        }]
    );
    assert_eq!(
        events("+EVT:TXP2P DONE\r\n+EVT:RXP2P RECEIVE TIMEOUT\r\n+EVT:RXP2P RECEIVE ERROR\r\n+EVT:JOINED\r\n"),
        vec![Event::TxDone, Event::RxTimeout, Event::RxError, Event::OtherEvent("JOINED".into())]
    );
    // A header whose payload line never comes is reported, and the next line still counts.
    assert_eq!(
        events("+EVT:RXP2P, RSSI -54, SNR 12\r\nOK\r\n"),
        vec![Event::Garbage { bytes: 0 }, Event::Ok]
    );
    // An odd-length payload is not a frame.
    assert_eq!(
        events("+EVT:RXP2P:-40:10:123\r\n"),
        vec![Event::OtherEvent("RXP2P:-40:10:123".into())]
    );
}

#[test]
fn banner_replies_and_text() {
    let e = events("RAKwireless RAK3172-E Example\r\n------------------------------------------------------\r\nVersion: RUI_4.0.4_RAK3172-E\r\nCurrent Work Mode: LoRa P2P.\r\nAT+P2P=868000000:7:125:0:10:14\r\nV1.0.4\r\n");
    assert_eq!(
        e,
        vec![
            Event::Banner("RAKwireless RAK3172-E Example".into()),
            Event::Banner("------------------------------------------------------".into()),
            Event::Banner("Version: RUI_4.0.4_RAK3172-E".into()),
            Event::WorkMode(WorkMode::P2p),
            Event::Reply("AT+P2P=868000000:7:125:0:10:14".into()),
            Event::Text("V1.0.4".into()),
        ]
    );
    assert_eq!(
        events("Current Work Mode: LoRaWAN.\n"),
        vec![Event::WorkMode(WorkMode::LoRaWan)]
    );
}

#[test]
fn chunking_noise_and_overlong_lines() {
    let input = b"\xff\xfe+EVT:TXP2P DONE\r\nO\x00OK\r\n+EVT:RXP2P:-1:2:0A\r\n";
    let whole = AtParser::new().feed(input);
    assert_eq!(
        whole,
        vec![
            Event::Garbage { bytes: 2 },
            Event::TxDone,
            Event::Garbage { bytes: 2 },
            Event::Ok,
            Event::RxP2p {
                rssi: -1,
                snr: 2,
                payload: vec![10]
            },
        ]
    );
    for chunk in 1..input.len() {
        let mut p = AtParser::new();
        let got: Vec<Event> = input.chunks(chunk).flat_map(|c| p.feed(c)).collect();
        assert_eq!(got, whole, "chunk {chunk}");
    }
    let mut long = "+EVT:RXP2P:-1:2:".to_string();
    long.push_str(&"00".repeat(400));
    long.push_str("\r\nOK\r\n");
    let e = events(&long);
    assert!(matches!(e[0], Event::Garbage { bytes } if bytes == long.len() - 6));
    assert_eq!(e[1], Event::Ok);
}

/// A line that never ends (a wrong device, a stuck modem) is reported every
/// `JUNK_REPORT` bytes as it comes, every byte accounted for, and the next real line
/// after its end still parses.
#[test]
fn a_line_that_never_ends_is_reported_as_it_comes() {
    let mut p = AtParser::new();
    let junk = vec![b'A'; 3 * JUNK_REPORT + 10];
    let mut got = Vec::new();
    for c in junk.chunks(1000) {
        got.extend(p.feed(c));
    }
    let reported: usize = got
        .iter()
        .map(|e| match e {
            Event::Garbage { bytes } => *bytes,
            other => panic!("{other:?}"),
        })
        .sum();
    assert!(got.len() >= 2, "{got:?}");
    assert!(p.buffered() < JUNK_REPORT);
    let end = p.feed(b"\r\nOK\r\n");
    let total = reported
        + end
            .iter()
            .map(|e| match e {
                Event::Garbage { bytes } => *bytes,
                _ => 0,
            })
            .sum::<usize>();
    assert_eq!(total, junk.len());
    assert_eq!(end.last(), Some(&Event::Ok));
    // Binary noise without a line end too.
    let mut p = AtParser::new();
    let got = p.feed(&vec![0u8; JUNK_REPORT]);
    assert_eq!(got, vec![Event::Garbage { bytes: JUNK_REPORT }]);
}

/// The RUI3 manual's P2P encryption examples: `AT+ENCKEY=0102...0708` (32 hex digits),
/// `AT+CRYPIV=0011...6677`, `AT+ENCRY=1`, and the read-back `AT+ENCRY=1`. The key and IV
/// never show in `Debug` or in what a log is given.
#[test]
fn encryption_commands_and_their_secrets_stay_out_of_logs() {
    let key = Secret16([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let iv = Secret16([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
        0x77,
    ]);
    assert_eq!(
        Command::EncryptionKey(key.clone()).line().unwrap(),
        "AT+ENCKEY=01020304050607080102030405060708\r\n"
    );
    assert_eq!(
        Command::EncryptionIv(iv.clone()).line().unwrap(),
        "AT+CRYPIV=00112233445566770011223344556677\r\n"
    );
    assert_eq!(Command::Encryption(true).line().unwrap(), "AT+ENCRY=1\r\n");
    assert_eq!(Command::Encryption(false).line().unwrap(), "AT+ENCRY=0\r\n");
    assert_eq!(Command::QueryEncryption.line().unwrap(), "AT+ENCRY=?\r\n");
    assert_eq!(
        events("AT+ENCRY=1\r\nOK\r\nAT_COMMAND_NOT_FOUND\r\n"),
        [
            Event::Reply("AT+ENCRY=1".into()),
            Event::Ok,
            Event::Error(StatusError::CommandNotFound)
        ]
    );
    for c in [Command::EncryptionKey(key), Command::EncryptionIv(iv)] {
        let debug = format!("{c:?}");
        let shown = c.shown();
        for text in [&debug, &shown] {
            assert!(
                !text.contains("0102030405060708") && !text.contains("0011223344556677"),
                "{text}"
            );
        }
        assert!(shown.ends_with("=<redacted>"), "{shown}");
    }
    assert_eq!(redact("at+enckey=00ff"), "AT+ENCKEY=<redacted>");
    assert_eq!(redact("AT+ENCKEY=?"), "AT+ENCKEY=?");
    assert_eq!(
        redact("AT+P2P=868000000:7:125:0:8:14"),
        "AT+P2P=868000000:7:125:0:8:14"
    );
}
