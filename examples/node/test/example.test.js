// The writer and the reader against a real broker and gateway (node --test).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { readStream } from "../src/reader.js";
import { ensureTopic, GatewayError, produceBatch, produceOne } from "../src/writer.js";
import { startTidelog } from "../support/tidelog.js";

let tidelog;
before(async () => {
  tidelog = await startTidelog();
});
after(async () => {
  assert.equal(await tidelog?.stop(), 0);
});

const order = (i) => ({ key: `order-${i}`, value: { order: i }, headers: [{ name: "source", value: "test" }] });

test("the reader gets what the writer wrote, in order, and commits it", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "orders");
  const first = await produceOne(url, "orders", order(0));
  assert.deepEqual([first.partition, first.offset], [0, 0]);
  const batch = await produceBatch(url, "orders", Array.from({ length: 99 }, (_, i) => order(i + 1)));
  assert.deepEqual(batch.map((r) => r.offset), Array.from({ length: 99 }, (_, i) => i + 1));

  const seen = [];
  const { records } = await readStream(url, "orders", { group: "billing", count: 100, onRecord: (r) => seen.push(r.value.order) });
  assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(records.map((r) => r.offset), seen);
  assert.equal(records[5].key, "order-5");
  assert.deepEqual(records[5].headers, [{ name: "source", value: "test" }]);

  // The group committed every record handled: nothing is left to read for it.
  const group = await (await fetch(`${url}/v1/groups/billing`)).json();
  assert.deepEqual(
    group.offsets.map((o) => [o.topic, o.partition, o.committed, o.lag]),
    [["orders", 0, 100, 0]],
  );

  // A new member of the group resumes after the commit: it gets only what is written next.
  await produceOne(url, "orders", order(100));
  const resumed = await readStream(url, "orders", { group: "billing", count: 1 });
  assert.deepEqual(resumed.records.map((r) => [r.offset, r.value.order]), [[100, 100]]);
});

test("a reader without a group resumes from explicit offsets", async () => {
  const url = tidelog.url;
  await ensureTopic(url, "audit", 2);
  await produceBatch(url, "audit", Array.from({ length: 10 }, (_, i) => ({ value: i, partition: i % 2 })));
  const part = await readStream(url, "audit", { count: 4, start: "earliest" });
  assert.equal(part.records.length, 4);
  const offsets = ["audit/0", "audit/1"].map((tp) => ({ topic: "audit", partition: Number(tp.at(-1)), offset: part.next.get(tp) ?? 0 }));
  const rest = await readStream(url, "audit", { offsets, count: 6 });
  for (const partition of [0, 1]) {
    const got = [...part.records, ...rest.records].filter((r) => r.partition === partition);
    assert.deepEqual(got.map((r) => r.offset), [0, 1, 2, 3, 4]); // in order, none skipped or repeated
    assert.deepEqual(got.map((r) => r.value), [0, 2, 4, 6, 8].map((v) => v + partition));
  }
});

test("the writer raises the gateway's error", async () => {
  await assert.rejects(produceOne(tidelog.url, "no-such-topic-here", { value: 1, partition: 7 }), (err) => {
    assert.ok(err instanceof GatewayError);
    assert.match(err.errorCode, /unknown_topic_or_partition/);
    return true;
  });
});
