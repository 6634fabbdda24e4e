#!/usr/bin/env node
// Differential peer for fieldgate's Zigbee device definitions: writes each frame with
// zigbee-herdsman's own ZCL writer, reads it back as herdsman's controller does, and runs it
// through zigbee-herdsman-converters' `fromZigbee` converters of the device's definition
// (found by zigbee-herdsman-converters from the Basic cluster model id and manufacturer name).
//
// Input (stdin, JSON lines):
//   {"id", "model_id", "manufacturer", "cluster", "frame"} where frame is one of
//   {"report": [{"attr", "type", "value"}]}            attribute report (global 0x0A)
//   {"report": [{"attr", "type", "struct": [[index, type, value], ...]}]}
//                                                       a Xiaomi struct in a char string
//   {"zone_status": N}                                  IAS zone status change notification
//   {"tuya": [{"dp", "type", "value"}]}                 Tuya dataReport on 0xEF00
// Output, per line: {"id", "hex" (the frame herdsman wrote), "model" (the definition that
// zigbee-herdsman-converters chose), "values" (the merged converter outputs)} or {"id","error"}.
'use strict';

const path = require('path');
const NM = path.join(__dirname, 'node_modules');
const ZHC = path.join(NM, 'zigbee-herdsman-converters');
// zigbee-herdsman-converters' own zigbee-herdsman (its dependency), so the frames are the
// ones the converters are written against.
const ZH = path.dirname(require.resolve('zigbee-herdsman/package.json', {paths: [ZHC]}));
const Zcl = require(`${ZH}/dist/zspec/zcl`);
const {BuffaloZcl} = require(`${ZH}/dist/zspec/zcl/buffaloZcl`);
const {attributeKeyValue} = require(`${ZH}/dist/controller/helpers/zclFrameConverter`);
const zhc = require(ZHC);

// Never let a converter's timer (occupancy timeouts) or a logger hold the process.
zhc.setLogger({debug() {}, info() {}, warning() {}, error() {}});

// zigbee-herdsman-converters tells devices and endpoints apart by their class names.
class Device {}
class Endpoint {}

function fakeDevice(modelID, manufacturerName) {
    const device = Object.assign(new Device(), {
        ieeeAddr: '0x00124b0000000001',
        networkAddress: 0x1234,
        modelID,
        manufacturerName,
        manufacturerID: 0x1234,
        type: 'EndDevice',
        powerSource: 'Battery',
        interviewCompleted: true,
        meta: {},
        customClusters: {},
        endpoints: [],
        save() {},
        getEndpoint(id) { return this.endpoints.find((e) => e.ID === id); },
    });
    const endpoint = Object.assign(new Endpoint(), {
        ID: 1,
        deviceIeeeAddress: device.ieeeAddr,
        inputClusters: [],
        outputClusters: [],
        clusters: {},
        getDevice() { return device; },
        getClusterAttributeValue() { return undefined; },
        saveClusterAttributeKeyValue() {},
        supportsInputCluster() { return true; },
        supportsOutputCluster() { return false; },
        async read() { return {}; },
        async write() {},
        async command() {},
        async configureReporting() {},
        async bind() {},
    });
    device.endpoints.push(endpoint);
    return device;
}

function miStruct(records) {
    const b = new BuffaloZcl(Buffer.alloc(200));
    for (const [index, type, value] of records) {
        b.writeUInt8(index);
        b.writeUInt8(type);
        b.write(type, value, {});
    }
    const body = b.getWritten();
    return Buffer.concat([Buffer.from([body.length]), body]);
}

function tuyaData(type, value) {
    switch (type) {
        case 1: case 4: return Buffer.from([Number(value)]);
        case 2: { const d = Buffer.alloc(4); d.writeInt32BE(value); return d; }
        default: throw new Error(`Tuya datapoint type ${type} not generated`);
    }
}

let tsn = 0;
function write(cluster, spec) {
    tsn = (tsn + 1) & 0xff;
    const S2C = Zcl.Direction.SERVER_TO_CLIENT;
    if (spec.report) {
        const payload = spec.report.map((r) => ({
            attrId: r.attr,
            dataType: r.type,
            attrData: r.struct ? miStruct(r.struct) : r.value,
        }));
        return Zcl.Frame.create(Zcl.FrameType.GLOBAL, S2C, true, undefined, tsn, 'report', cluster, payload, {});
    }
    if (spec.zone_status !== undefined) {
        const payload = {zonestatus: spec.zone_status, extendedstatus: 0, zoneID: 1, delay: 0};
        return Zcl.Frame.create(Zcl.FrameType.SPECIFIC, S2C, true, undefined, tsn, 'statusChangeNotification', cluster, payload, {});
    }
    if (spec.tuya) {
        const dpValues = spec.tuya.map((d) => ({dp: d.dp, datatype: d.type, data: tuyaData(d.type, d.value)}));
        return Zcl.Frame.create(Zcl.FrameType.SPECIFIC, S2C, true, undefined, tsn, 'dataReport', cluster, {seq: tsn, dpValues}, {});
    }
    throw new Error(`unknown frame spec ${JSON.stringify(spec)}`);
}

function msgType(frame) {
    if (frame.header.isGlobal) {
        return {report: 'attributeReport', readRsp: 'readResponse'}[frame.command.name] || frame.command.name;
    }
    const n = frame.command.name;
    return `command${n[0].toUpperCase()}${n.slice(1)}`;
}

async function convert(inp) {
    const out = write(inp.cluster, inp.frame).toBuffer();
    const header = Zcl.Header.fromBuffer(out);
    const frame = Zcl.Frame.fromBuffer(inp.cluster, header, out, {});
    const device = fakeDevice(inp.model_id, inp.manufacturer);
    // findDefinition, not findByDevice: the latter renames white-label models (a Tuya
    // TS0601 sold as ZTH01); the converters are the same.
    const found = await zhc.findDefinition(device);
    const definition = found && zhc.prepareDefinition(found);
    if (!definition) return {id: inp.id, hex: out.toString('hex'), model: null, values: {}};
    const endpoint = device.endpoints[0];
    const type = msgType(frame);
    const msg = {
        type,
        cluster: frame.cluster.name,
        data: frame.header.isGlobal ? attributeKeyValue(frame, device.manufacturerID, {}) : frame.payload,
        device,
        endpoint,
        linkquality: 200,
        groupID: 0,
        meta: {zclTransactionSequenceNumber: frame.header.transactionSequenceNumber, manufacturerCode: undefined, frameControl: frame.header.frameControl},
    };
    const values = {};
    const meta = {state: {}, device, deviceExposesChanged() {}};
    for (const c of definition.fromZigbee || []) {
        if (c.cluster !== msg.cluster || ![].concat(c.type).includes(type)) continue;
        const r = await c.convert(definition, msg, () => {}, {}, meta);
        if (r && typeof r === 'object') Object.assign(values, r);
    }
    return {id: inp.id, hex: out.toString('hex'), model: definition.model, values};
}

(async () => {
    const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter((l) => l.trim());
    for (const line of lines) {
        const inp = JSON.parse(line);
        let res;
        try {
            res = await convert(inp);
        } catch (e) {
            res = {id: inp.id, error: String(e && e.stack || e)};
        }
        process.stdout.write(`${JSON.stringify(res)}\n`);
    }
    process.exit(0);
})();
