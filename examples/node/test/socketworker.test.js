// The WebSocket queue worker against a real broker and gateway (node --test).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { queueSocketUrl, workSocket } from "../src/socketworker.js";
import { deadLetters, lease, PermanentError } from "../src/worker.js";
import { call, ensureTopic, produceBatch } from "../src/writer.js";
import { startTidelog } from "../support/tidelog.js";

let tidelog;
before(async () => {
  tidelog = await startTidelog();
});
after(async () => {
  assert.equal(await tidelog?.stop(), 0);
});

test("the socket worker acks what it handled, retries failures and dead-letters the rest", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "sms");
  await call(url, "PATCH", "/v1/queues/texter/settings", { set: { max_delivery_attempts: 2 } });
  const jobs = [{ to: "a" }, { to: "flaky" }, { to: "poison" }, { to: "bad" }, { to: "b" }];
  await produceBatch(url, "sms", jobs.map((value) => ({ value })));

  const handled = [];
  const handler = async (message) => {
    const { to } = message.value;
    if (to === "flaky" && message.delivery_count === 1) throw new Error("gsm timeout");
    if (to === "poison") throw new Error(`cannot send (delivery ${message.delivery_count})`);
    if (to === "bad") throw new PermanentError("no such number");
    handled.push(to);
  };
  const stats = await workSocket(url, "texter", ["sms"], handler, {
    prefetch: 2,
    retryDelayMs: 0,
    signal: AbortSignal.timeout(60_000), // a bound: the stats below fail if it ends the work
    until: (s) => s.acked === 3 && s.rejected === 1 && s.nacked === 3,
  });
  assert.deepEqual(handled.sort(), ["a", "b", "flaky"]);
  assert.deepEqual(stats, { acked: 3, nacked: 3, rejected: 1, failedSettlements: 0 });

  const { dead_letters: letters } = await deadLetters(url, "texter", "sms");
  const why = letters.map((l) => [l.value.to, l.reason, l.error, l.delivery_count]);
  assert.deepEqual(why.sort(), [
    ["bad", "rejected", "no such number", 1],
    ["poison", "max_attempts", "cannot send (delivery 2)", 2],
  ]);
});

test("a job in hand when its socket closes goes to the next worker", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "pings");
  await produceBatch(url, "pings", [{ value: "ping" }]);
  const first = await new Promise((resolve, reject) => {
    const ws = new WebSocket(queueSocketUrl(url, "pinger", ["pings"]));
    ws.on("error", reject);
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type !== "messages") return;
      ws.close(1000); // not acked
      resolve(frame.messages[0]);
    });
  });
  const seen = [];
  await workSocket(url, "pinger", ["pings"], async (m) => seen.push(m), {
    signal: AbortSignal.timeout(60_000),
    until: (s) => s.acked === 1,
  });
  assert.deepEqual(seen.map((m) => [m.offset, m.delivery_count]), [[first.offset, 2]]);
  assert.deepEqual((await lease(url, "pinger", ["pings"], { waitMs: 0 })).messages, []);
});
