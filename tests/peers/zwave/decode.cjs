#!/usr/bin/env node
// Differential peer for fieldgate's Z-Wave codec: parses Serial API frames and command
// classes with zwave-js's own parsers (@zwave-js/serial, @zwave-js/cc) and prints one JSON
// line per input line.
//
// Input (stdin, JSON lines): {"frame": "<hex of one frame>", "origin": "controller"|"host"}
// or {"cc": "<hex of one command class>"}.
// Output: the parsed message's or CC's class name and own fields (byte arrays as hex,
// durations as {value, unit}, encapsulated CCs nested), or {"error": "...", "code": N}.
// With `--bench N` it parses every input N times and prints {"items": I, "ns_per_item": X}.
//
// zwave-js parsers take a context object instead of a driver; this is the minimal one its
// own tests pass (packages/zwave-js/src/lib/test/cc/*.test.ts use `{ sourceNodeId } as any`;
// Message.parse needs the origin, because a REQ of SendData / AddNode / RemoveNode means a
// request from the host but a callback from the controller). No security manager: S0/S2
// frames fail with ZW0109, which the Rust side expects.
'use strict';

const { Message, MessageOrigin } = require('@zwave-js/serial');
// Registers the Serial API message classes with Message.parse.
require('@zwave-js/serial/serialapi');
const { CommandClass } = require('@zwave-js/cc');

function context(origin) {
    return {
        origin,
        nodeIdType: 1, // 8-bit node ids
        ownNodeId: 1,
        sourceNodeId: 2,
        frameType: 'singlecast',
        requestStorage: new Map(),
        sdkVersion: undefined,
        getSupportedCCVersion: () => 8,
        getHighestSecurityClass: () => undefined,
        hasSecurityClass: () => false,
        setSecurityClass: () => {},
        getDeviceConfig: () => undefined,
    };
}
const CONTROLLER = context(MessageOrigin.Controller);
const HOST = context(MessageOrigin.Host);
const CC_CTX = CONTROLLER;

const SKIP = new Set(['nodeId', 'endpointIndex', 'encapsulatingCC', 'encapsulationFlags', 'payload', 'expectedResponse',
    'expectedCallback', 'ignoreNodeUpdate', 'nodeUpdateTimeout', 'prematureNodeUpdate']);

function plain(v, depth) {
    if (v === undefined) return null;
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
    if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
    if (v && typeof v === 'object') {
        if (depth > 6) return '…';
        if (v.constructor && v.constructor.name === 'Duration') return { value: v.value, unit: v.unit };
        if (typeof v.ccId === 'number' && 'ccCommand' in v) return ccPlain(v, depth + 1);
        if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x, depth + 1)]));
        const o = {};
        for (const [k, x] of Object.entries(v)) {
            if (!k.startsWith('_')) o[k] = plain(x, depth + 1);
        }
        return o;
    }
    return v;
}

function ccPlain(cc, depth = 0) {
    const o = { name: cc.constructor.name, ccId: cc.ccId, ccCommand: cc.ccCommand ?? null };
    for (const [k, x] of Object.entries(cc)) {
        if (!SKIP.has(k) && !k.startsWith('_')) o[k] = plain(x, depth + 1);
    }
    if (cc.constructor.name === 'CommandClass' || cc.constructor.name.endsWith('CC')) {
        o.payload = Buffer.from(cc.payload).toString('hex');
    }
    return o;
}

function messagePlain(m) {
    const o = { name: m.constructor.name, type: m.type, functionType: m.functionType,
        callbackId: m.callbackId ?? null, nodeId: (m.getNodeId && m.getNodeId()) ?? null };
    for (const [k, x] of Object.entries(m)) {
        if (!SKIP.has(k) && !k.startsWith('_') && !(k in o)) o[k] = plain(x, 0);
    }
    if (m.constructor.name === 'Message') o.payload = Buffer.from(m.payload).toString('hex');
    return o;
}

async function decode(input) {
    if (input.cc !== undefined) {
        return ccPlain(await CommandClass.parse(Buffer.from(input.cc, 'hex'), CC_CTX));
    }
    const ctx = input.origin === 'host' ? HOST : CONTROLLER;
    return messagePlain(Message.parse(Buffer.from(input.frame, 'hex'), ctx));
}

async function main() {
    const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter((l) => l.trim());
    const inputs = lines.map((l) => JSON.parse(l));
    const bench = process.argv.indexOf('--bench');
    if (bench >= 0) {
        const rounds = Number(process.argv[bench + 1] || 10);
        const bufs = inputs.map((i) => ({ cc: i.cc !== undefined, host: i.origin === 'host',
            bytes: Buffer.from(i.cc ?? i.frame, 'hex') }));
        // What a host does per item: the frame, and the CC inside node traffic; or the CC.
        const run = async () => {
            let n = 0;
            for (const i of bufs) {
                try {
                    if (i.cc) {
                        await CommandClass.parse(i.bytes, CC_CTX);
                    } else {
                        const m = Message.parse(i.bytes, i.host ? HOST : CONTROLLER);
                        if (m.serializedCC) await CommandClass.parse(m.serializedCC, CC_CTX);
                    }
                } catch (e) { /* counted like any other item */ }
                n++;
            }
            return n;
        };
        await run(); // warm-up (JIT)
        const t0 = process.hrtime.bigint();
        let items = 0;
        for (let r = 0; r < rounds; r++) items += await run();
        const ns = Number(process.hrtime.bigint() - t0);
        console.log(JSON.stringify({ items, ns_per_item: ns / items }));
        return;
    }
    const out = [];
    for (const input of inputs) {
        try {
            out.push(JSON.stringify(await decode(input)));
        } catch (e) {
            out.push(JSON.stringify({ error: String((e && e.message) || e), code: e && e.code }));
        }
    }
    process.stdout.write(out.join('\n') + '\n');
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
