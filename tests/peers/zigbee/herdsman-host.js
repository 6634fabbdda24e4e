#!/usr/bin/env node
// zigbee-herdsman as the host stack of fieldgate's coordinator emulator: herdsman's own
// Controller with its zstack adapter on `tcp://127.0.0.1:PORT` (`fieldgate emulate zigbee
// --listen 127.0.0.1:0`), a temporary database and coordinator backup.
//
//   node herdsman-host.js PORT DIR MODELS
//
// MODELS: the comma-separated Basic modelIds of the devices that must join (e.g.
// FG-TH01,FG-PLUG01). Two runs on the same emulator process:
//   1. "form": a factory-new coordinator; herdsman forms a network (start() = "reset"),
//      permits joining, every device joins and is interviewed; reporting is configured on
//      the sensor's temperature and the plug's RMS voltage, and their reports arrive.
//   2. "resume": a new Controller on the same database and backup; start() must resume the
//      formed network ("resumed"), and the devices it knows keep reporting.
//   3. "restore", when REPLACEMENT_PORT names a second, factory-new emulator (another
//      stick): a new Controller on the same database and backup restores the backup onto
//      it ("restored"); the new stick runs the backup's network and the devices answer
//      on it without joining again, as a replaced coordinator's network does.
// Prints JSON lines: {"step": ..., ...} as it goes, {"done": true} at the end, or
// {"error": "...", "step": "...", "requests": [the last MT exchanges]} and exit code 1.
'use strict';

const fs = require('fs');
const path = require('path');
const ZH = require('zigbee-herdsman');

const [port, dir, modelsArg] = process.argv.slice(2);
if (!port || !dir || !modelsArg) {
    console.error('usage: herdsman-host.js PORT DIR MODELS');
    process.exit(2);
}
const models = modelsArg.split(',').filter((m) => m);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

// The last MT exchanges herdsman logged ("--> SYS - ping ...", "<-- ..."), to name the
// request where it and the emulator part ways.
const exchanges = [];
let step = 'init';
const text = (m) => (typeof m === 'function' ? m() : String(m));
ZH.setLogger({
    debug: (m, ns) => {
        if (ns === 'zh:zstack:znp') {
            exchanges.push(text(m));
            if (exchanges.length > 30) exchanges.shift();
        }
        if (process.env.HERDSMAN_DEBUG) console.error(`${ns}: ${text(m)}`);
    },
    info: (m, ns) => console.error(`${ns}: ${text(m)}`),
    warning: (m, ns) => console.error(`${ns}: ${text(m)}`),
    error: (m, ns) => {
        console.error(`${ns}: ${text(m)}`);
        exchanges.push(`error ${ns}: ${text(m)}`);
    },
});

function fail(e) {
    say({error: e && e.stack ? e.stack.split('\n')[0] : String(e), step, requests: exchanges.slice(-15)});
    process.exit(1);
}

function deadline(ms, what) {
    return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref());
}

function controller(onPort = port) {
    return new ZH.Controller({
        network: {
            panID: 0x1a2b,
            extendedPanID: [0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd],
            channelList: [15],
            networkKey: [1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 13],
        },
        transport: {path: `tcp://127.0.0.1:${onPort}`, adapter: 'zstack'},
        databasePath: path.join(dir, 'database.db'),
        databaseBackupPath: path.join(dir, 'database.db.backup'),
        backupPath: path.join(dir, 'coordinator_backup.json'),
        adapter: {disableLED: false},
        acceptJoiningDeviceHandler: async () => true,
    });
}

// Reports of the values the emulated devices send: {model, cluster, attribute, value}.
function watchReports(c, onReport) {
    c.on('message', (m) => {
        if (m.type !== 'attributeReport' && m.type !== 'readResponse') return;
        for (const [attribute, value] of Object.entries(m.data)) {
            if (typeof value === 'number') {
                onReport({model: m.device.modelID, ieee: m.device.ieeeAddr, type: m.type, cluster: m.cluster, attribute, value});
            }
        }
    });
}

// What each model reports once configured.
const REPORTING = {
    'FG-TH01': ['msTemperatureMeasurement', 'measuredValue', 10],
    'FG-PLUG01': ['haElectricalMeasurement', 'rmsVoltage', 1],
};

async function waitReports(reports, wanted, ms, what) {
    const start = Date.now();
    for (;;) {
        const missing = wanted.filter((w) => !reports.some((r) => r.model === w[0] && r.attribute === w[1]));
        if (missing.length === 0) return;
        if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms: ${what}: no report of ${JSON.stringify(missing)}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

async function form() {
    step = 'form: start';
    const c = controller();
    const interviewed = new Map();
    const joined = new Set();
    const reports = [];
    c.on('deviceJoined', (e) => joined.add(e.device.ieeeAddr));
    c.on('deviceInterview', (e) => {
        if (e.status === 'successful') interviewed.set(e.device.ieeeAddr, e.device);
        if (e.status === 'failed') say({step, interviewFailed: e.device.ieeeAddr});
    });
    watchReports(c, (r) => reports.push(r));
    const result = await Promise.race([c.start(), deadline(120000, 'Controller.start()')]);
    say({step, result});
    if (result !== 'reset') throw new Error(`start() on a factory-new coordinator gave "${result}", not "reset"`);
    const params = await c.getNetworkParameters();
    say({step: 'form: network', panID: params.panID, channel: params.channel, extendedPanID: params.extendedPanID});
    step = 'form: permit join';
    await c.permitJoin(254);
    step = 'form: join and interview';
    const start = Date.now();
    for (;;) {
        const have = [...interviewed.values()].map((d) => d.modelID);
        if (models.every((m) => have.includes(m))) break;
        if (Date.now() - start > 90000) {
            throw new Error(`timed out after 90 s: interviewed ${JSON.stringify(have)} of ${JSON.stringify(models)} (joined: ${joined.size})`);
        }
        await new Promise((r) => setTimeout(r, 100));
    }
    for (const d of interviewed.values()) {
        say({step, joined: joined.has(d.ieeeAddr), ieee: d.ieeeAddr, model: d.modelID, manufacturer: d.manufacturerName, power: d.powerSource, type: d.type, endpoints: d.endpoints.map((e) => e.ID)});
    }
    step = 'form: configure reporting';
    const wanted = [];
    for (const d of interviewed.values()) {
        const r = REPORTING[d.modelID];
        if (!r) continue;
        const [cluster, attribute, change] = r;
        await d.getEndpoint(1).configureReporting(cluster, [{attribute, minimumReportInterval: 1, maximumReportInterval: 60, reportableChange: change}]);
        wanted.push([d.modelID, attribute]);
    }
    step = 'form: reports';
    await waitReports(reports, wanted, 30000, 'reports after configuring reporting');
    for (const r of reports) say({step, report: r});
    await c.permitJoin(0);
    step = 'form: stop';
    await c.stop();
    return wanted;
}

async function resume(wanted) {
    step = 'resume: start';
    const c = controller();
    const reports = [];
    watchReports(c, (r) => reports.push(r));
    const result = await Promise.race([c.start(), deadline(120000, 'Controller.start() after a restart')]);
    say({step, result});
    if (result !== 'resumed') throw new Error(`start() on the formed network gave "${result}", not "resumed"`);
    const known = c.getDevices().filter((d) => d.type !== 'Coordinator').map((d) => d.modelID);
    say({step: 'resume: devices', known});
    step = 'resume: reports';
    await waitReports(reports, wanted, 30000, 'reports on the resumed network');
    for (const r of reports) say({step, report: r});
    // What zigbee2mqtt's network map, binding and group features send.
    step = 'resume: network map';
    const coordinator = c.getDevicesByType('Coordinator')[0];
    const plug = c.getDevices().find((d) => d.modelID === 'FG-PLUG01');
    const within = (p, what) => Promise.race([p, deadline(15000, what)]);
    const neighbors = await within(coordinator.lqi(), 'coordinator lqi');
    const plugNeighbors = await within(plug.lqi(), 'plug lqi');
    const routes = await within(plug.routingTable(), 'plug routing table');
    const bindings = await within(plug.bindingTable(), 'plug binding table');
    say({step, neighbors: neighbors.length, plugNeighbors: plugNeighbors.length, routes: routes.length, bindings: bindings.length});
    step = 'resume: bind and unbind';
    const target = coordinator.getEndpoint(1);
    await within(plug.getEndpoint(1).bind('genOnOff', target), 'bind');
    await within(plug.getEndpoint(1).unbind('genOnOff', target), 'unbind');
    say({step, unbound: true});
    step = 'resume: group command';
    const group = c.createGroup(5);
    const ep = plug.getEndpoint(1);
    await within(ep.command('genOnOff', 'off', {}), 'plug off');
    await within(ep.addToGroup(group), 'add to group');
    await within(group.command('genOnOff', 'on', {}), 'group command');
    await new Promise((r) => setTimeout(r, 300));
    const onOff = (await within(ep.read('genOnOff', ['onOff']), 'read onOff')).onOff;
    await within(ep.removeFromGroup(group), 'remove from group');
    say({step, sent: true, onOff});
    step = 'resume: stop';
    await c.stop();
}

async function restore(replacementPort) {
    step = 'restore: start';
    const before = JSON.parse(fs.readFileSync(path.join(dir, 'coordinator_backup.json'), 'utf8'));
    const c = controller(replacementPort);
    const result = await Promise.race([c.start(), deadline(120000, 'Controller.start() on a replacement stick')]);
    say({step, result});
    if (result !== 'restored') throw new Error(`start() on a factory-new stick with a backup gave "${result}", not "restored"`);
    const params = await c.getNetworkParameters();
    say({step: 'restore: network', panID: params.panID, channel: params.channel, extendedPanID: params.extendedPanID, backup: {panID: Number.parseInt(before.pan_id, 16), channel: before.channel, extendedPanID: before.extended_pan_id}});
    step = 'restore: devices answer';
    const within = (p, what) => Promise.race([p, deadline(15000, what)]);
    const plug = c.getDevices().find((d) => d.modelID === 'FG-PLUG01');
    const sensor = c.getDevices().find((d) => d.modelID === 'FG-TH01');
    await within(plug.getEndpoint(1).command('genOnOff', 'on', {}), 'plug on');
    const onOff = (await within(plug.getEndpoint(1).read('genOnOff', ['onOff']), 'read plug onOff')).onOff;
    const temperature = (await within(sensor.getEndpoint(1).read('msTemperatureMeasurement', ['measuredValue']), 'read sensor temperature')).measuredValue;
    say({step, onOff, temperature});
    step = 'restore: stop';
    await c.stop();
    const after = JSON.parse(fs.readFileSync(path.join(dir, 'coordinator_backup.json'), 'utf8'));
    say({step, backupDevices: before.devices.length, devicesAfter: after.devices.length, sameNetwork: after.pan_id === before.pan_id && after.extended_pan_id === before.extended_pan_id && after.network_key.key === before.network_key.key});
}

(async () => {
    fs.mkdirSync(dir, {recursive: true});
    const wanted = await form();
    await resume(wanted);
    if (process.env.REPLACEMENT_PORT) await restore(process.env.REPLACEMENT_PORT);
    say({done: true});
    process.exit(0);
})().catch(fail);
