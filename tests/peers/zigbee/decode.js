#!/usr/bin/env node
// Differential peer for fieldgate's Zigbee codec: decodes frames with zigbee-herdsman's own
// codec modules and prints one JSON line per input line.
//
// Input (stdin, JSON lines): {"mt": "<hex of one MT frame>"} or {"zcl": "<hex>", "cluster": N}
// Output: {"type","subsystem","cmd","name","payload"} for MT, {"header","command","payload"} for
// ZCL, or {"error": "..."}; BigInt as decimal text, Buffer as hex, NaN and ±Infinity as
// "NaN", "Infinity", "-Infinity". With `--bench N` it decodes every input N times and prints
// {"frames": F, "ns_per_frame": X} instead.
//
// zigbee-herdsman has no `exports` map, so its codec modules can be deep-required from the
// unpacked npm tarball without installing its dependencies (reference/zigbee.md §4.1);
// tests/peers/zigbee/setup.sh puts it in ./node_modules.
'use strict';

const path = require('path');
const ZH = path.join(__dirname, 'node_modules', 'zigbee-herdsman', 'dist');
const {Frame} = require(`${ZH}/adapter/z-stack/unpi`);
const {ZpiObject} = require(`${ZH}/adapter/z-stack/znp/zpiObject`);
const Zcl = require(`${ZH}/zspec/zcl`);

// JSON has no NaN or Infinity (JSON.stringify writes null); spell them as fieldgate's JSON
// does, so non-finite floats compare exactly.
function plain(v) {
    if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
    if (typeof v === 'bigint') return v.toString();
    if (Buffer.isBuffer(v)) return v.toString('hex');
    if (Array.isArray(v)) return v.map(plain);
    if (v && typeof v === 'object') {
        const o = {};
        for (const [k, x] of Object.entries(v)) o[k] = plain(x);
        return o;
    }
    return v;
}

function decodeMt(hex) {
    const b = Buffer.from(hex, 'hex');
    const f = Frame.fromBuffer(b[1], 4 + b[1], b);
    const o = ZpiObject.fromUnpiFrame(f);
    return {type: f.type, subsystem: f.subsystem, cmd: f.commandID, name: o.command.name, payload: o.payload};
}

function decodeZcl(hex, cluster) {
    const b = Buffer.from(hex, 'hex');
    const header = Zcl.Header.fromBuffer(b);
    if (!header) throw new Error('ZCL header too short');
    const fr = Zcl.Frame.fromBuffer(cluster, header, b, {});
    return {header: fr.header, command: fr.command.name, payload: fr.payload};
}

function decode(line) {
    const inp = JSON.parse(line);
    return inp.mt !== undefined ? decodeMt(inp.mt) : decodeZcl(inp.zcl, inp.cluster);
}

const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter((l) => l.trim());
const bench = process.argv.indexOf('--bench');
if (bench >= 0) {
    const rounds = Number(process.argv[bench + 1] || 10);
    const inputs = lines.map((l) => JSON.parse(l)).map((i) =>
        i.mt !== undefined ? {mt: Buffer.from(i.mt, 'hex')} : {zcl: Buffer.from(i.zcl, 'hex'), cluster: i.cluster});
    // What a host does per frame: MT frame + named payload, and the ZCL inside AF messages.
    const run = () => {
        let n = 0;
        for (const i of inputs) {
            try {
                if (i.mt) {
                    const f = Frame.fromBuffer(i.mt[1], 4 + i.mt[1], i.mt);
                    const o = ZpiObject.fromUnpiFrame(f);
                    if (o.command.name === 'incomingMsg') {
                        const d = o.payload.data;
                        Zcl.Frame.fromBuffer(o.payload.clusterid, Zcl.Header.fromBuffer(d), d, {});
                    }
                } else {
                    Zcl.Frame.fromBuffer(i.cluster, Zcl.Header.fromBuffer(i.zcl), i.zcl, {});
                }
            } catch (e) { /* counted like any other frame */ }
            n++;
        }
        return n;
    };
    run(); // warm-up (JIT)
    const t0 = process.hrtime.bigint();
    let frames = 0;
    for (let r = 0; r < rounds; r++) frames += run();
    const ns = Number(process.hrtime.bigint() - t0);
    console.log(JSON.stringify({frames, ns_per_frame: ns / frames}));
} else {
    for (const line of lines) {
        let out;
        try {
            out = plain(decode(line));
        } catch (e) {
            out = {error: String(e && e.message || e)};
        }
        console.log(JSON.stringify(out));
    }
}
