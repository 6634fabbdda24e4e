#!/usr/bin/env node
// Runs zwave-js's own mock-server (node_modules/zwave-js/bin/mock-server.cjs, same
// arguments) with two changes for fieldgate's tests:
// - host bytes reach the mock controller one ACK/NAK/CAN or one complete frame at a time.
//   The stock server hands each TCP chunk to the mock as one message, so an ACK and the next
//   frame that TCP happened to deliver together (a busy machine, Nagle on the other side)
//   crash it. Bytes that are neither are passed on alone, so a host framing bug still
//   crashes the mock (a test failure);
// - no mDNS announcement (the stock server always advertises `_zwave._tcp`). The tests run
//   inside a network namespace with only loopback anyway.
"use strict";

const net = require("node:net");
const path = require("node:path");

const ciao = require("@homebridge/ciao");
ciao.getResponder = () => ({
  createService: () => ({
    advertise: async () => {},
    end: async () => {},
    destroy: async () => {},
  }),
  shutdown: async () => {},
});

const SOF = 0x01;
const CONTROL = new Set([0x06, 0x15, 0x18]);

function reframing(onChunk) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length > 0) {
      let n;
      if (CONTROL.has(buf[0])) n = 1;
      else if (buf[0] === SOF) {
        if (buf.length < 2 || buf.length < buf[1] + 2) return;
        n = buf[1] + 2;
      } else n = 1;
      const piece = buf.subarray(0, n);
      buf = buf.subarray(n);
      onChunk(Buffer.from(piece));
    }
  };
}

const createServer = net.createServer;
net.createServer = (...args) => {
  const listener = args.find((a) => typeof a === "function");
  const wrapped = (socket) => {
    const on = socket.on.bind(socket);
    socket.on = (event, fn) => (event === "data" ? on("data", reframing(fn)) : on(event, fn));
    listener(socket);
  };
  return createServer(...args.map((a) => (a === listener ? wrapped : a)));
};

require(path.join(__dirname, "node_modules/zwave-js/bin/mock-server.cjs"));
