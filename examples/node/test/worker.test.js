// The queue worker against a real broker and gateway (node --test).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { deadLetters, lease, PermanentError, work } from "../src/worker.js";
import { call, ensureTopic, GatewayError, produceBatch } from "../src/writer.js";
import { startTidelog } from "../support/tidelog.js";

let tidelog;
before(async () => {
  tidelog = await startTidelog();
});
after(async () => {
  assert.equal(await tidelog?.stop(), 0);
});

test("the worker acks what it handled, retries failures and dead-letters the rest", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "emails");
  await call(url, "PATCH", "/v1/queues/mailer/settings", { set: { max_delivery_attempts: 2 } });
  const jobs = [{ to: "a" }, { to: "flaky" }, { to: "poison" }, { to: "bad" }, { to: "b" }];
  await produceBatch(url, "emails", jobs.map((value) => ({ value })));

  const handled = [];
  const handler = async (message) => {
    const { to } = message.value;
    if (to === "flaky" && message.delivery_count === 1) throw new Error("smtp timeout");
    if (to === "poison") throw new Error(`cannot send (delivery ${message.delivery_count})`);
    if (to === "bad") throw new PermanentError("no such address");
    handled.push(to);
  };
  const stats = await work(url, "mailer", ["emails"], handler, {
    retryDelayMs: 0,
    signal: AbortSignal.timeout(60_000), // a bound: the stats below fail if it ends the work
    until: (s) => s.acked === 3 && s.rejected === 1 && s.nacked === 3,
  });
  assert.deepEqual(handled.sort(), ["a", "b", "flaky"]);
  assert.deepEqual(stats, { acked: 3, nacked: 3, rejected: 1, failedSettlements: 0 });

  const { dead_letters: letters } = await deadLetters(url, "mailer", "emails");
  const why = letters.map((l) => [l.value.to, l.reason, l.error, l.delivery_count]);
  assert.deepEqual(why.sort(), [
    ["bad", "rejected", "no such address", 1],
    ["poison", "max_attempts", "cannot send (delivery 2)", 2],
  ]);
  assert.deepEqual((await lease(url, "mailer", ["emails"], { waitMs: 0 })).messages, []);
});

test("a settled receipt is refused", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "once");
  await produceBatch(url, "once", [{ value: 1 }]);
  const [message] = (await lease(url, "once-group", ["once"])).messages;
  await call(url, "POST", "/v1/queues/once-group/reject", { receipt: message.receipt });
  await assert.rejects(call(url, "POST", "/v1/queues/once-group/renew", { receipt: message.receipt }), (err) => {
    assert.ok(err instanceof GatewayError);
    assert.equal(err.errorCode, "unknown_receipt");
    return true;
  });
});
