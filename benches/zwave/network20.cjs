// zwave-js mock-server configuration for benches/zwave_interview.py: a controller (node 1,
// home id 0xbe0c4a01) and 20 always-listening nodes (2..21) with a few command classes
// each, so that both hosts interview the same network:
// - even nodes: a metering plug (Version, Manufacturer Specific, Z-Wave Plus Info, Binary
//   Switch v2, Meter v3 electric kWh + W);
// - odd nodes: a sensor on mains (Version, Manufacturer Specific, Z-Wave Plus Info,
//   Multilevel Sensor v11 temperature + humidity).
// Every command class a host sends to a node is printed as `host->node N: <CC name>`, so
// that the bench can say how much each host asked. Manufacturer 0x7e57 matches no device file, so zwave-js applies no device quirks.
// Loaded by tests/peers/zwave/mock-server.cjs (`-c`), which hands over its own `require`.
"use strict";

module.exports.default = ({ require }) => {
  const { CommandClasses } = require("@zwave-js/core");
  const { ccCaps } = require("@zwave-js/testing");

  const common = [
    CommandClasses.Version,
    CommandClasses["Manufacturer Specific"],
    CommandClasses["Z-Wave Plus Info"],
  ];
  const plug = [
    ...common,
    ccCaps({ ccId: CommandClasses["Binary Switch"], isSupported: true, version: 2, defaultValue: false }),
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
  ];
  const sensor = [
    ...common,
    ccCaps({
      ccId: CommandClasses["Multilevel Sensor"],
      isSupported: true,
      version: 11,
      sensors: { 1: { supportedScales: [0] }, 5: { supportedScales: [0] } },
      getValue: (type) => (type === 1 ? 21.5 : 40),
    }),
  ];

  // Prints what a node received; answers nothing itself (the mock's own behaviours do).
  const trace = {
    handleCC(controller, self, received) {
      process.stdout.write(`host->node ${self.id}: ${received.constructor.name}\n`);
      return undefined;
    },
  };

  const nodes = [];
  for (let id = 2; id <= 21; id++) {
    const isPlug = id % 2 === 0;
    nodes.push({
      id,
      capabilities: {
        isListening: true,
        manufacturerId: 0x7e57,
        productType: isPlug ? 0x0001 : 0x0002,
        productId: id,
        genericDeviceClass: isPlug ? 0x10 : 0x21,
        specificDeviceClass: 0x01,
        commandClasses: isPlug ? plug : sensor,
      },
      behaviors: [trace],
    });
  }
  return { controller: { homeId: 0xbe0c4a01, ownNodeId: 1 }, nodes };
};
