// Runs a MicroPython script on the WebAssembly port of MicroPython (32-bit: a word, an object
// header and a GC block have an ESP32's sizes) under node, for host_tools/bench/heap32.py.
// Usage: node mp32.mjs PACKAGE_DIR HEAP_BYTES LIB_DIR ROMFS_IMAGE|- SCRIPT
//   LIB_DIR is copied into the port's in-memory filesystem at /lib (as deploy copies files);
//   ROMFS_IMAGE is handed to the port as its ROM partition: it lives in the wasm memory outside
//   the GC heap, as a board's ROM partition lives in flash, and the port mounts it at /rom.
// The script's parts separated by `#@step` lines run one after the other.
// Exit status 1 when the script raises (its traceback on stdout).
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const [pkg, heap, lib, romfsPath, script] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(path.join(pkg, "micropython.mjs")).href);
const options = { heapsize: parseInt(heap, 10), stdout: (s) => process.stdout.write(s + "\n") };
if (romfsPath !== "-") {
  options.romfs = new Uint8Array(fs.readFileSync(romfsPath));
}
const mp = await loadMicroPython(options);

function copyTree(src, dst) {
  mp.FS.mkdirTree(dst);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    if (e.isDirectory()) {
      copyTree(s, dst + "/" + e.name);
    } else {
      mp.FS.writeFile(dst + "/" + e.name, fs.readFileSync(s));
    }
  }
}

if (lib !== "-") {
  copyTree(lib, "/lib");
}
mp.FS.mkdirTree("/work");
// Each `#@step` part runs as its own top-level run: the port collects garbage only between
// two (host_tools/bench/mp/heap_probe.py).
try {
  for (const step of fs.readFileSync(script, "utf8").split("\n#@step\n")) {
    mp.runPython(step);
  }
} catch (err) {
  process.stdout.write(String(err.message || err) + "\n");
  process.exit(1);
}
