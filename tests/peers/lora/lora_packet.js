#!/usr/bin/env node
// Differential peer for fieldgate's LoRaWAN codec: npm lora-packet (pinned in package.json
// and package-lock.json; install with ./setup.sh). Reads JSON lines on stdin, answers one
// JSON line per input line, in order.
//
// Decode ops (frames we built; lora-packet parses, verifies and decrypts them):
//   {"op":"data","hex","nwk","app","fcnt"}  fcnt = full 32-bit counter
//   {"op":"join_request","hex","appkey"}
//   {"op":"join_accept","hex","appkey","devnonce"}  devnonce as shown (big-endian hex)
// Build ops (lora-packet builds, we parse):
//   {"op":"build_data","mtype","devaddr","fctrl":{adr,adr_ack_req,ack,f_pending},"fcnt",
//    "fopts","fport"|null,"payload","nwk","app"}
//   {"op":"build_join_accept","appnonce","netid","devaddr","dlsettings","rxdelay","cflist","appkey"}
// Hex everywhere; ids big-endian as lora-packet shows them. Errors: {"error": "..."}.
//
// `--bench ROUNDS`: stdin holds data ops only; each round verifies the MIC of and decrypts
// every frame (parsing included), and one line {"frames","seconds","per_sec"} is printed.
'use strict';

const path = require('path');
const lora = require(path.join(__dirname, 'node_modules', 'lora-packet'));

const hex = (b) => (b ? Buffer.from(b).toString('hex') : null);
const buf = (h) => Buffer.from(h || '', 'hex');

// The two high bytes of the 32-bit counter, in the order B0/A_i carry them (little-endian).
function fcntMsb(fcnt) {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(Math.floor(fcnt / 0x10000) & 0xffff, 0);
    return b;
}

function decodeData(inp) {
    const p = lora.fromWire(buf(inp.hex));
    const nwk = buf(inp.nwk);
    const app = buf(inp.app);
    const msb = fcntMsb(inp.fcnt);
    const port = p.getFPort();
    const out = {
        mtype: p.getMType(),
        dir: p.getDir(),
        devaddr: hex(p.DevAddr),
        fcnt: p.getFCnt(),
        fport: port,
        fctrl: {
            adr: p.getFCtrlADR(),
            adr_ack_req: p.getFCtrlADRACKReq(),
            ack: p.getFCtrlACK(),
            f_pending: p.getFCtrlFPending(),
        },
        fopts: hex(p.FOpts),
        mic: hex(p.MIC),
        mic_ok: lora.verifyMIC(p, nwk, undefined, msb),
        payload: null,
    };
    if (port !== null && p.FRMPayload && p.FRMPayload.length > 0) {
        out.payload = hex(lora.decrypt(p, app, nwk, msb));
    } else if (port !== null) {
        out.payload = '';
    }
    return out;
}

function decodeJoinRequest(inp) {
    const p = lora.fromWire(buf(inp.hex));
    return {
        mtype: p.getMType(),
        appeui: hex(p.AppEUI),
        deveui: hex(p.DevEUI),
        devnonce: hex(p.DevNonce),
        mic_ok: lora.verifyMIC(p, undefined, buf(inp.appkey)),
    };
}

function decodeJoinAccept(inp) {
    const appKey = buf(inp.appkey);
    const enc = lora.fromWire(buf(inp.hex));
    const p = lora.fromWire(lora.decryptJoinAccept(enc, appKey));
    const keys = lora.generateSessionKeys(appKey, p.NetID, p.AppNonce, buf(inp.devnonce));
    return {
        mtype: p.getMType(),
        appnonce: hex(p.AppNonce),
        netid: hex(p.NetID),
        devaddr: hex(p.DevAddr),
        dlsettings: hex(p.DLSettings),
        rxdelay: hex(p.RxDelay),
        cflist: hex(p.CFList),
        mic_ok: lora.verifyMIC(p, undefined, appKey),
        nwkskey: hex(keys.NwkSKey),
        appskey: hex(keys.AppSKey),
    };
}

function buildData(inp) {
    const fields = {
        MType: inp.mtype,
        DevAddr: buf(inp.devaddr),
        FCtrl: {
            ADR: inp.fctrl.adr,
            ADRACKReq: inp.fctrl.adr_ack_req,
            ACK: inp.fctrl.ack,
            FPending: inp.fctrl.f_pending,
        },
        FCnt: inp.fcnt % 0x10000,
        FOpts: buf(inp.fopts),
        payload: buf(inp.payload),
    };
    if (inp.fport !== null) fields.FPort = inp.fport;
    const msb = fcntMsb(inp.fcnt);
    const p = lora.fromFields(fields, buf(inp.app), buf(inp.nwk), undefined, msb);
    // fromFields signs only frames with an FPort (it leaves EEEEEEEE in the MIC of a
    // FOpts-only frame); lora-packet's own recalculateMIC signs those.
    if (inp.fport === null) lora.recalculateMIC(p, buf(inp.nwk), undefined, msb);
    return {hex: hex(p.getPHYPayload())};
}

function buildJoinAccept(inp) {
    const p = lora.fromFields(
        {
            MType: 'Join Accept',
            AppNonce: buf(inp.appnonce),
            NetID: buf(inp.netid),
            DevAddr: buf(inp.devaddr),
            DLSettings: buf(inp.dlsettings),
            RxDelay: buf(inp.rxdelay),
            CFList: buf(inp.cflist),
        },
        undefined,
        undefined,
        buf(inp.appkey),
    );
    return {hex: hex(p.getPHYPayload())};
}

const OPS = {
    data: decodeData,
    join_request: decodeJoinRequest,
    join_accept: decodeJoinAccept,
    build_data: buildData,
    build_join_accept: buildJoinAccept,
};

function answer(line) {
    try {
        const inp = JSON.parse(line);
        const op = OPS[inp.op];
        if (!op) return {error: `unknown op ${inp.op}`};
        return op(inp);
    } catch (e) {
        return {error: String(e && e.message ? e.message : e)};
    }
}

const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter((l) => l.trim());
const bench = process.argv.indexOf('--bench');
if (bench >= 0) {
    const rounds = Number(process.argv[bench + 1] || 5);
    const frames = lines.map((l) => JSON.parse(l)).map((i) => ({
        wire: buf(i.hex), nwk: buf(i.nwk), app: buf(i.app), msb: fcntMsb(i.fcnt),
    }));
    let ok = 0;
    const run = () => {
        for (const f of frames) {
            const p = lora.fromWire(f.wire);
            if (lora.verifyMIC(p, f.nwk, undefined, f.msb)) ok++;
            lora.decrypt(p, f.app, f.nwk, f.msb);
        }
    };
    run(); // warm-up
    ok = 0;
    const start = process.hrtime.bigint();
    for (let r = 0; r < rounds; r++) run();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const n = frames.length * rounds;
    process.stdout.write(JSON.stringify({frames: n, verified: ok, seconds, per_sec: n / seconds}) + '\n');
} else {
    process.stdout.write(lines.map((l) => JSON.stringify(answer(l))).join('\n') + '\n');
}
