// zwave-js's Driver (the version pinned in tests/peers/zwave/package.json) as the host of
// the mock network, for benches/zwave_interview.py:
//
//   node benches/zwave/zwavejs_interview.cjs tcp://127.0.0.1:PORT CACHE_DIR
//
// Starts the Driver with an empty cache (so every node is interviewed), prints
// {"event":"all nodes ready","nodes":N} once zwave-js says so and stays up until it is
// terminated, so that the caller can read this process's peak RSS first. Logging is off
// (the daemon it is compared with logs warnings only). Run it inside a network namespace
// with only loopback.
"use strict";
const path = require("node:path");
const { createRequire } = require("node:module");

const peerRequire = createRequire(
  path.join(__dirname, "../../tests/peers/zwave/package.json"),
);
const { Driver } = peerRequire("zwave-js");

const [url, cacheDir] = process.argv.slice(2);
if (!url || !cacheDir) {
  console.error("usage: zwavejs_interview.cjs tcp://HOST:PORT CACHE_DIR");
  process.exit(2);
}

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const driver = new Driver(url, {
  logConfig: { enabled: false },
  storage: { cacheDir },
  features: { softReset: true },
});

driver.on("error", (e) => out({ event: "error", message: String(e && e.message ? e.message : e) }));
driver.once("all nodes ready", () => {
  const nodes = [...driver.controller.nodes.values()].filter((n) => !n.isControllerNode);
  out({
    event: "all nodes ready",
    nodes: nodes.length,
    interviewed: nodes.filter((n) => n.manufacturerId !== undefined).length,
  });
});

const stop = () => driver.destroy().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
driver.start().catch((e) => {
  out({ event: "error", message: String(e && e.message ? e.message : e) });
  process.exit(1);
});
