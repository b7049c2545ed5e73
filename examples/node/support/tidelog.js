// A real tidelog broker with its gateway for the tests: `tidelog serve` as a child process,
// in-memory storage, ephemeral ports (the gateway's URL is read from the banner, so no port
// is chosen before it is bound), stopped by its PID.

import { spawn } from "node:child_process";

const START_TIMEOUT_MS = 30_000;

export async function startTidelog() {
  const bin = process.env.TIDELOG_BIN || "tidelog";
  const child = spawn(bin, ["serve", "--storage", "memory", "--port", "0", "--http-port", "0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let output = "";
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tidelog did not start:\n${output}`)), START_TIMEOUT_MS);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${bin} (set TIDELOG_BIN): ${err.message}`));
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`tidelog exited with ${code}:\n${output}`));
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/^\s*http\s+(http:\/\/\S+)/m);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  await waitReady(url);
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      process.kill(child.pid, "SIGTERM");
      const timer = setTimeout(() => process.kill(child.pid, "SIGKILL"), START_TIMEOUT_MS);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

async function waitReady(url) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      if ((await fetch(url + "/ready")).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url}/ready never answered 200`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
