// Generates the Z-Wave controller emulator's NVM image with zwave-js's own NVM editor
// (@zwave-js/nvmedit, pinned in package.json): the network the emulator starts with.
//
//   node tests/peers/zwave/make-nvm.cjs protocols/zwave/src/emulator/nvm.bin
//
// The home id, node ids and device classes below must match the emulator's defaults
// (protocols/zwave/src/emulator/nodes.rs: `HOME_ID` and `default_nodes`); the emulator's unit
// tests check the image's size, and the peer test reads it back through the Serial API and
// parses it with nvmedit. Re-run only when the default network changes.
"use strict";
const fs = require("node:fs");
const { jsonToNVM } = require("@zwave-js/nvmedit");

const SDK = "7.18.1";
const listening = {
  isListening: true,
  isFrequentListening: false,
};

function node(props) {
  return {
    isVirtual: false,
    isRouting: true,
    supportedDataRates: [9600, 40000, 100000],
    protocolVersion: 3,
    optionalFunctionality: true,
    nodeType: 1, // end node
    supportsSecurity: false,
    supportsBeaming: true,
    neighbors: [],
    sucUpdateIndex: 0,
    appRouteLock: false,
    routeSlaveSUC: false,
    sucPendingUpdate: false,
    pendingDiscovery: false,
    lwr: null,
    nlwr: null,
    ...props,
  };
}

const json = {
  format: 1,
  controller: {
    protocolVersion: SDK,
    applicationVersion: SDK,
    homeId: "0xfa116a7e",
    nodeId: 1,
    lastNodeId: 6,
    staticControllerNodeId: 1,
    sucLastIndex: 0,
    controllerConfiguration: 0x28, // SIS present, this controller is the SUC
    sucUpdateEntries: [],
    maxNodeId: 6,
    reservedId: 0,
    systemState: 0,
    isListening: true,
    optionalFunctionality: false,
    genericDeviceClass: 0x02,
    specificDeviceClass: 0x07,
    commandClasses: {
      includedInsecurely: [0x5e, 0x86, 0x72],
      includedSecurelyInsecureCCs: [],
      includedSecurelySecureCCs: [],
    },
    rfConfig: {
      rfRegion: 0, // Europe
      txPower: 0,
      measured0dBm: 0,
      enablePTI: null,
      maxTXPower: null,
      nodeIdType: null,
    },
  },
  nodes: {
    1: node({ ...listening, nodeType: 0, genericDeviceClass: 0x02, specificDeviceClass: 0x07, optionalFunctionality: false, neighbors: [2, 3, 4, 6] }),
    2: node({ ...listening, genericDeviceClass: 0x10, specificDeviceClass: 0x01, neighbors: [1, 3, 4] }),
    3: node({ ...listening, genericDeviceClass: 0x21, specificDeviceClass: 0x01, neighbors: [1, 2] }),
    4: node({ ...listening, genericDeviceClass: 0x07, specificDeviceClass: 0x01, neighbors: [1, 2] }),
    5: node({ isListening: false, isFrequentListening: false, genericDeviceClass: 0x21, specificDeviceClass: 0x01, neighbors: [1] }),
    6: node({ isListening: false, isFrequentListening: "1000ms", genericDeviceClass: 0x10, specificDeviceClass: 0x01, neighbors: [1] }),
  },
};

async function main() {
  const out = process.argv[2];
  if (!out) throw new Error("usage: make-nvm.cjs OUT.bin");
  const nvm = await jsonToNVM(json, SDK);
  fs.writeFileSync(out, nvm);
  console.log(`${out}: ${nvm.length} bytes, home id ${json.controller.homeId}, nodes 1-6`);
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
