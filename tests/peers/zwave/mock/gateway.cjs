// zwave-js mock-server configuration for fieldgate's Z-Wave driver tests
// (tests/it/zwave_mock/). Run by node_modules/zwave-js/bin/mock-server.cjs, inside a
// network namespace with only loopback (the mock always advertises itself over mDNS).
//
// Network (home id 0xc0ffee01, controller node 1):
// - node 2: a metering plug (Binary Switch, Meter electric kWh + W), always listening;
//   sends a Meter report every 2 s once the host is connected, and one S2-encapsulated
//   frame the host cannot decrypt;
// - node 3: a battery multisensor (Multilevel Sensor temperature, Battery, Wake Up,
//   Association), not listening; sends Wake Up Notification every 3 s. Its first Version
//   Get is left unanswered, as if it fell asleep mid-interview;
// - node 4: a switch the "technician" excludes: the controller behaviour below completes
//   RemoveNodeFromNetwork with it (the stock mock only ever answers Ready / Failed);
// - node 7: pending inclusion (a Binary Switch), added when the host starts AddNode.
//
// Every CC the host sends to a node is printed as `host->node N: <CC name>` so the test
// can check what was (and was not) sent.
"use strict";

const { CommandClasses } = require("@zwave-js/core");
const cc = require("@zwave-js/cc");
const serial = require("@zwave-js/serial");
const { ccCaps, createMockZWaveRequestFrame } = require("@zwave-js/testing");

const HOME_ID = 0xc0ffee01;
const EXCLUDED_NODE = 4;

function log(line) {
  process.stdout.write(`${line}\n`);
}

// Prints every CC a node receives; answers nothing itself.
const trace = {
  handleCC(controller, self, received) {
    log(`host->node ${self.id}: ${received.constructor.name}`);
    return undefined;
  },
};

// Battery, Wake Up and Association: the mock has no behaviour for them.
const batteryNode = [
  trace,
  {
    handleCC(controller, self, received) {
      if (received instanceof cc.BatteryCCGet) {
        return {
          action: "sendCC",
          cc: new cc.BatteryCCReport({ nodeId: controller.ownNodeId, level: 87 }),
        };
      }
      if (received instanceof cc.WakeUpCCIntervalSet) {
        self.state.set("wakeUpInterval", received.wakeUpInterval);
        return { action: "ok" };
      }
      if (received instanceof cc.WakeUpCCIntervalGet) {
        const seconds = self.state.get("wakeUpInterval") ?? 300;
        const report = new cc.WakeUpCCIntervalReport({
          nodeId: controller.ownNodeId,
          wakeUpInterval: seconds,
          controllerNodeId: controller.ownNodeId,
        });
        // zwave-js only parses this report: its payload is set here (u24 seconds, node).
        report.payload = Buffer.from([
          (seconds >> 16) & 0xff,
          (seconds >> 8) & 0xff,
          seconds & 0xff,
          controller.ownNodeId,
        ]);
        return { action: "sendCC", cc: report };
      }
      if (received instanceof cc.AssociationCCSet) {
        log(`node ${self.id}: lifeline group ${received.groupId} -> ${received.nodeIds.join(",")}`);
        return { action: "ok" };
      }
      if (received instanceof cc.WakeUpCCNoMoreInformation) {
        return { action: "ok" };
      }
      if (received instanceof cc.VersionCCGet && !self.state.get("versionAsked")) {
        // Asleep before answering: the host must try again at the next wake-up.
        self.state.set("versionAsked", true);
        return { action: "stop" };
      }
      return undefined;
    },
  },
];

// Completes an exclusion of EXCLUDED_NODE, as a real controller does once the device's
// button is pressed.
const exclusion = {
  async onHostMessage(controller, msg) {
    if (!(msg instanceof serial.RemoveNodeFromNetworkRequest)) return false;
    const report = (status, nodeId) =>
      controller.sendMessageToHost(
        new serial.RemoveNodeFromNetworkRequestStatusReport({
          callbackId: msg.callbackId,
          status,
          nodeId,
        }),
      );
    if (msg.removeNodeType === serial.RemoveNodeType.Stop) {
      log("controller: exclusion stopped");
      if (msg.callbackId !== 0) await report(serial.RemoveNodeStatus.Failed);
      return true;
    }
    log("controller: exclusion started");
    await report(serial.RemoveNodeStatus.Ready);
    const node = controller.nodes.get(EXCLUDED_NODE);
    if (node) {
      setTimeout(async () => {
        await report(serial.RemoveNodeStatus.NodeFound);
        await report(serial.RemoveNodeStatus.RemovingSlave, EXCLUDED_NODE);
        controller.removeNode(node);
        await report(serial.RemoveNodeStatus.Done, EXCLUDED_NODE);
        log(`controller: node ${EXCLUDED_NODE} excluded`);
      }, 300);
    }
    return true;
  },
};

const switchCaps = [
  CommandClasses.Version,
  CommandClasses["Manufacturer Specific"],
  ccCaps({ ccId: CommandClasses["Binary Switch"], isSupported: true, version: 2, defaultValue: false }),
];

module.exports.default = {
  controller: { homeId: HOME_ID, ownNodeId: 1, behaviors: [exclusion] },
  nodes: [
    {
      id: 2,
      capabilities: {
        isListening: true,
        manufacturerId: 0x0086,
        productType: 0x0003,
        productId: 0x0060,
        genericDeviceClass: 0x10,
        specificDeviceClass: 0x01,
        commandClasses: [
          ...switchCaps,
          ccCaps({
            ccId: CommandClasses.Meter,
            isSupported: true,
            version: 3,
            meterType: 1,
            supportedScales: [0, 2],
            supportedRateTypes: [1],
            supportsReset: false,
            getValue: (scale) => (scale === 2 ? 12.5 : 3.25),
          }),
        ],
      },
      behaviors: [trace],
    },
    {
      id: 3,
      capabilities: {
        isListening: false,
        isFrequentListening: false,
        manufacturerId: 0x0371,
        productType: 0x0002,
        productId: 0x0005,
        genericDeviceClass: 0x21,
        specificDeviceClass: 0x01,
        commandClasses: [
          CommandClasses.Version,
          CommandClasses["Manufacturer Specific"],
          ccCaps({
            ccId: CommandClasses["Multilevel Sensor"],
            isSupported: true,
            version: 11,
            sensors: { 1: { supportedScales: [0] } },
            getValue: () => 21.5,
          }),
          ccCaps({ ccId: CommandClasses.Battery, isSupported: true, version: 1 }),
          ccCaps({ ccId: CommandClasses["Wake Up"], isSupported: true, version: 2 }),
          ccCaps({ ccId: CommandClasses.Association, isSupported: true, version: 2 }),
        ],
      },
      behaviors: batteryNode,
    },
    {
      id: EXCLUDED_NODE,
      capabilities: {
        isListening: true,
        genericDeviceClass: 0x10,
        specificDeviceClass: 0x01,
        commandClasses: switchCaps,
      },
      behaviors: [trace],
    },
  ],
  onInit(controller, nodes) {
    controller.nodePendingInclusion = {
      id: 7,
      capabilities: {
        isListening: true,
        genericDeviceClass: 0x10,
        specificDeviceClass: 0x01,
        commandClasses: switchCaps,
      },
    };
    const send = (node, report) =>
      node
        .sendToController(createMockZWaveRequestFrame(report, { ackRequested: false }))
        .catch((e) => log(`send failed: ${e}`));
    const plug = nodes.find((n) => n.id === 2);
    const sensor = nodes.find((n) => n.id === 3);
    let started = false;
    // Unsolicited traffic only while a host is connected (the mock cannot send otherwise).
    // One S2-encapsulated frame (as a secure device sends), before the first Meter report:
    // the host cannot decrypt it and must count it, not guess at it.
    let s2Sent = false;
    const s2 = () =>
      new cc.CommandClass({
        nodeId: controller.ownNodeId,
        ccId: CommandClasses["Security 2"],
        ccCommand: 0x03,
        payload: Buffer.from([0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04]),
      });
    setInterval(async () => {
      if (!started) return;
      if (!s2Sent) {
        s2Sent = true;
        await send(plug, s2());
      }
      send(plug, new cc.MeterCCReport({
        nodeId: controller.ownNodeId,
        type: 1,
        scale: 2,
        value: 12.5,
        rateType: 1,
      }));
    }, 2000);
    setInterval(() => {
      if (!started) return;
      log("node 3: wake up notification");
      send(sensor, new cc.WakeUpCCWakeUpNotification({ nodeId: controller.ownNodeId }));
    }, 3000);
    // The first host frame starts the clock.
    const start = { onHostMessage() { started = true; return false; } };
    controller.defineBehavior(start);
  },
};
