// zwave-js's own Driver (npm zwave-js, pinned in package.json) as the host of a Z-Wave
// controller reached over TCP, e.g. `fieldgate emulate zwave --listen`:
//
//   node driver-host.cjs tcp://127.0.0.1:PORT CACHE_DIR TIMEOUT_SECONDS [MIN_REPORTS] [NVM_OUT] [membership]
//
// Prints one JSON object per line on stdout: {"event":"driver ready"}, one "node ready" per
// node with what the interview found, one "value" per value a node reported (command class,
// property, key, value) and one "notification" per notification event; then {"event":"done"}
// once every node is ready and every listening node reported MIN_REPORTS values after it
// was ready (or {"event":"timeout"}). With `membership`, zwave-js then includes the node
// waiting to join ({"event":"node added"}, its "node ready") and excludes it again ({"event":
// "node removed"}; the emulator must press its button). With NVM_OUT, zwave-js then reads the controller's NVM
// through the Serial API (Controller.backupNVMRaw), writes it there, and prints what
// @zwave-js/nvmedit parses from it ({"event":"nvm"}). zwave-js's own log lines are printed
// too (not JSON). Exit code 0 on done.
//
// Run it only inside a network namespace with nothing but loopback (see run-driver.sh):
// zwave-js must not reach any network from a test.
"use strict";
const { Driver, NodeStatus, InclusionStrategy, ExclusionStrategy } = require("zwave-js");

const fs = require("node:fs");
const { nvmToJSON } = require("@zwave-js/nvmedit");

const [url, cacheDir, timeoutArg, minReportsArg, nvmOut, membership] = process.argv.slice(2);
if (!url || !cacheDir) {
  console.error("usage: driver-host.cjs tcp://HOST:PORT CACHE_DIR [TIMEOUT_S] [MIN_REPORTS]");
  process.exit(2);
}
const timeoutMs = Number(timeoutArg || 120) * 1000;
const minReports = Number(minReportsArg || 1);

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const ready = new Set();
const reportsAfterReady = new Map();
let finished = false;

const driver = new Driver(url, {
  logConfig: { enabled: true, level: "info", forceConsole: true, logToFile: false },
  storage: { cacheDir, throttle: "slow" },
  // No firmware update or config checks, no statistics: nothing that wants a network.
  features: { softReset: true },
});

function finish(event, code) {
  if (finished) return;
  finished = true;
  out({ event, ready: [...ready].sort((a, b) => a - b) });
  driver
    .destroy()
    .catch(() => {})
    .finally(() => process.exit(code));
}

function listeningIds() {
  return [...driver.controller.nodes.values()]
    .filter((n) => !n.isControllerNode && n.isListening)
    .map((n) => n.id);
}

function checkDone() {
  const nodes = [...driver.controller.nodes.values()].filter((n) => !n.isControllerNode);
  if (nodes.length === 0 || !nodes.every((n) => ready.has(n.id))) return;
  if (!listeningIds().every((id) => (reportsAfterReady.get(id) || 0) >= minReports)) return;
  if (afterReady) return;
  afterReady = true;
  (async () => {
    if (membership === "membership") await includeAndExclude();
    if (nvmOut) await backupNvm();
  })().then(
    () => finish("done", 0),
    (e) => {
      out({ event: "error", message: String(e && e.message ? e.message : e) });
      finish("failed", 1);
    },
  );
}

let afterReady = false;

function once(emitter, name, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${name}" within ${ms} ms`)), ms);
    emitter.once(name, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

async function includeAndExclude() {
  const added = once(driver.controller, "node added", 30000);
  if (!(await driver.controller.beginInclusion({ strategy: InclusionStrategy.Insecure }))) {
    throw new Error("inclusion did not start");
  }
  const [node] = await added;
  out({ event: "node added", node: node.id });
  watch(node);
  if (!ready.has(node.id)) await once(node, "ready", 60000);
  const removed = once(driver.controller, "node removed", 30000);
  if (!(await driver.controller.beginExclusion({ strategy: ExclusionStrategy.ExcludeOnly }))) {
    throw new Error("exclusion did not start");
  }
  const [gone] = await removed;
  out({ event: "node removed", node: gone.id });
  ready.delete(gone.id);
}

async function backupNvm() {
  const nvm = await driver.controller.backupNVMRaw();
  fs.writeFileSync(nvmOut, nvm);
  const json = await nvmToJSON(nvm);
  const nodes = {};
  for (const [id, n] of Object.entries(json.nodes)) {
    nodes[id] = {
      isListening: n.isListening,
      isFrequentListening: n.isFrequentListening,
      genericDeviceClass: n.genericDeviceClass,
      specificDeviceClass: n.specificDeviceClass,
    };
  }
  out({
    event: "nvm",
    bytes: nvm.length,
    homeId: json.controller.homeId,
    nodeId: json.controller.nodeId,
    nodes,
  });
}

function plain(v) {
  if (v === undefined) return null;
  if (typeof v === "bigint") return Number(v);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  return v;
}

function watch(node) {
  node.on("ready", () => {
    ready.add(node.id);
    out({
      event: "node ready",
      node: node.id,
      status: NodeStatus[node.status],
      manufacturerId: node.manufacturerId,
      productType: node.productType,
      productId: node.productId,
      isListening: node.isListening,
      isFrequentListening: node.isFrequentListening,
      commandClasses: node.getSupportedCCInstances().map((cc) => cc.ccId),
      interviewStage: node.interviewStage,
    });
    checkDone();
  });
  const onValue = (_node, args) => {
    out({
      event: "value",
      node: node.id,
      ready: ready.has(node.id),
      commandClass: args.commandClass,
      property: args.property,
      propertyKey: plain(args.propertyKey),
      value: plain(args.newValue ?? args.value),
    });
    if (ready.has(node.id)) {
      reportsAfterReady.set(node.id, (reportsAfterReady.get(node.id) || 0) + 1);
      checkDone();
    }
  };
  node.on("value updated", onValue);
  node.on("value added", onValue);
  node.on("value notification", onValue);
  node.on("notification", (_node, ccId, args) => {
    out({ event: "notification", node: node.id, commandClass: ccId, args });
  });
  node.on("wake up", () => out({ event: "wake up", node: node.id }));
  node.on("sleep", () => out({ event: "sleep", node: node.id }));
}

driver.on("error", (e) => {
  out({ event: "error", message: String(e && e.message ? e.message : e) });
});

driver.once("driver ready", () => {
  out({
    event: "driver ready",
    homeId: driver.controller.homeId,
    ownNodeId: driver.controller.ownNodeId,
    nodes: [...driver.controller.nodes.keys()],
    sdkVersion: driver.controller.sdkVersion,
  });
  for (const node of driver.controller.nodes.values()) {
    if (!node.isControllerNode) watch(node);
  }
});

setTimeout(() => finish("timeout", 1), timeoutMs).unref();
driver.start().catch((e) => {
  out({ event: "error", message: String(e && e.message ? e.message : e) });
  finish("failed", 1);
});
