// Tether's shared connection: one Socket.IO connection for every tab of this origin, held by
// this SharedWorker (see app/src/worker.rs and client/src/hub.rs). Tabs connect with
// `new SharedWorker("/tether-worker.js?pkg=/pkg/tether", { type: "module", name: "tether" })`.
const pkg = new URL(self.location.href).searchParams.get("pkg") || "/pkg/tether";

// Ports that connect while the wasm is still loading wait here.
const early = [];
let accept = (port) => early.push(port);
self.addEventListener("connect", (event) => accept(event.ports[0]));

import(`${pkg}.js`)
  .then(async (bindings) => {
    await bindings.default({ module_or_path: `${pkg}.wasm` });
    accept = bindings.worker_accept;
    early.splice(0).forEach((port) => accept(port));
  })
  .catch((error) => {
    // Tabs that hear nothing from the hub fall back to their own connection.
    console.error("tether worker failed to start", error);
  });
