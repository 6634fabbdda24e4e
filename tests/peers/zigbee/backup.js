#!/usr/bin/env node
// Differential peer for fieldgate's Zigbee network backup: runs zigbee-herdsman's own backup
// code (`AdapterBackup.createBackup` over `AdapterNvMemory`) against fieldgate's coordinator
// emulator, and parses fieldgate's backup file with herdsman's `fromUnifiedBackup`.
//
// Protocol (JSON lines): the first stdin line is {"ours": <fieldgate backup JSON>}. Then for
// every ZNP request herdsman makes, this prints {"mt": "<request frame hex>"} and reads back
// {"mt": "<SRSP frame hex>"} (the test feeds the request to the emulator and returns its
// answer). At the end it prints {"done": {"herdsman": {...}, "from_unified": {...}}} with
// both results in the same plain shape, or {"error": "..."}.
'use strict';

const path = require('path');
const readline = require('readline');
const ZH = path.join(__dirname, 'node_modules', 'zigbee-herdsman', 'dist');
const {Frame} = require(`${ZH}/adapter/z-stack/unpi`);
const {ZpiObject} = require(`${ZH}/adapter/z-stack/znp/zpiObject`);
const {AdapterNvMemory} = require(`${ZH}/adapter/z-stack/adapter/adapter-nv-memory`);
const {AdapterBackup} = require(`${ZH}/adapter/z-stack/adapter/adapter-backup`);
const {fromUnifiedBackup} = require(`${ZH}/utils/backup`);

// herdsman logs to stdout by default; keep stdout for the protocol.
require(`${ZH}/utils/logger`).setLogger({
    debug: () => {},
    info: () => {},
    warning: (m, ns) => console.error(`${ns}: ${m}`),
    error: (m, ns) => console.error(`${ns}: ${m}`),
});

const lines = readline.createInterface({input: process.stdin})[Symbol.asyncIterator]();

async function exchange(subsystem, command, payload) {
    const req = ZpiObject.createRequest(subsystem, command, payload);
    process.stdout.write(`${JSON.stringify({mt: req.unpiFrame.toBuffer().toString('hex')})}\n`);
    const {value, done} = await lines.next();
    if (done) throw new Error(`no answer to ${command}`);
    const b = Buffer.from(JSON.parse(value).mt, 'hex');
    return ZpiObject.fromUnpiFrame(Frame.fromBuffer(b[1], 4 + b[1], b));
}

// The internal backup model both paths produce, reduced to comparable plain values.
function plain(b) {
    return {
        panId: b.networkOptions.panId,
        extendedPanId: b.networkOptions.extendedPanId.toString('hex'),
        channelList: b.networkOptions.channelList,
        networkKey: b.networkOptions.networkKey.toString('hex'),
        logicalChannel: b.logicalChannel,
        sequenceNumber: b.networkKeyInfo.sequenceNumber,
        frameCounter: b.networkKeyInfo.frameCounter,
        securityLevel: b.securityLevel,
        networkUpdateId: b.networkUpdateId,
        coordinatorIeeeAddress: b.coordinatorIeeeAddress.toString('hex'),
        tclkSeed: b.znp?.trustCenterLinkKeySeed ? b.znp.trustCenterLinkKeySeed.toString('hex') : null,
        devices: b.devices
            .map((d) => ({
                ieee: d.ieeeAddress.toString('hex'),
                nwk: d.networkAddress,
                isChild: d.isDirectChild,
                linkKey: d.linkKey
                    ? {key: d.linkKey.key.toString('hex'), rxCounter: d.linkKey.rxCounter, txCounter: d.linkKey.txCounter}
                    : null,
            }))
            .sort((x, y) => (x.ieee < y.ieee ? -1 : x.ieee > y.ieee ? 1 : 0)),
    };
}

async function main() {
    const first = await lines.next();
    const ours = JSON.parse(first.value).ours;
    const znp = {request: exchange, requestWithReply: exchange};
    const nv = new AdapterNvMemory(znp);
    // Sizes the struct layout from ZCD_NV_NWKKEY (21 bytes packed, 24 aligned), which the
    // inline tables (ADDRMGR on Z-Stack 3.0.x, the security manager table) are read in.
    await nv.init();
    const backup = await new AdapterBackup(znp, nv, path.join(__dirname, 'no-such-backup.json')).createBackup([]);
    return {herdsman: plain(backup), from_unified: plain(fromUnifiedBackup(ours))};
}

main().then(
    (done) => {
        process.stdout.write(`${JSON.stringify({done})}\n`);
        process.exit(0);
    },
    (e) => {
        process.stdout.write(`${JSON.stringify({error: String((e && e.stack) || e)})}\n`);
        process.exit(0);
    },
);
