// The reader service: streams a topic over the gateway's WebSocket (/v1/ws) and commits what
// it has processed.
//
//   node src/reader.js http://127.0.0.1:8080 orders billing 100
//
// Two ways to keep its place (docs/HTTP.md, "WebSocket"):
//   - as a member of a consumer group (`group`): the gateway starts each partition at the
//     group's committed offset; after handling a frame the reader commits the next offset of
//     every partition in it, so a restart resumes after the last processed record;
//   - with explicit `offsets` (no group): the caller keeps the next offsets itself and passes
//     them back on reconnect.
// Uses the `ws` package (Node's own WebSocket arrived in Node 22).

import { pathToFileURL } from "node:url";
import WebSocket from "ws";

/**
 * Stream `topic` until `count` records have been handled (or `signal` aborts). `onRecord` is
 * called once per record, in offset order per partition (it may be async). Resolves to
 * `{records, next}`: the records handled and the next offset per partition ("topic/partition"
 * -> offset). In group mode every frame is committed before the next frame is handled.
 */
export function readStream(baseUrl, topic, { group, offsets, start = "earliest", count = Infinity, onRecord = () => {}, signal } = {}) {
  const ws = new WebSocket(baseUrl.replace(/^http/, "ws") + "/v1/ws");
  const records = [];
  const next = new Map();
  let ops = 0;
  const pending = new Map(); // op id -> {resolve, reject}: one answer frame per op
  const send = (op) =>
    new Promise((resolve, reject) => {
      const id = `${op.op}-${++ops}`;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ ...op, id }));
    });

  return new Promise((resolve, reject) => {
    let chain = Promise.resolve(); // frames are handled one after another, in order
    const fail = (err) => {
      ws.terminate();
      reject(err);
    };
    const finish = () => {
      ws.close(1000);
      resolve({ records, next });
    };
    signal?.addEventListener("abort", finish, { once: true });
    ws.on("error", fail);
    ws.on("close", (code) => {
      if (records.length < count && !signal?.aborted) fail(new Error(`the socket closed (${code})`));
    });
    ws.on("open", () => {
      const subscribe = { op: "subscribe", topics: [topic], start, format: "json" };
      if (group) subscribe.group = group;
      if (offsets) subscribe.offsets = offsets;
      send(subscribe).catch(fail);
    });
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === "records") {
        chain = chain.then(() => handle(frame.records)).catch(fail);
        return;
      }
      const waiter = pending.get(frame.id);
      if (!waiter) return fail(new Error(`unexpected frame ${data}`));
      pending.delete(frame.id);
      if (frame.type === "error") waiter.reject(new Error(`${frame.error_code}: ${frame.message}`));
      else waiter.resolve(frame);
    });

    async function handle(batch) {
      const done = new Map();
      for (const record of batch) {
        if (records.length >= count) break;
        await onRecord(record);
        records.push(record);
        done.set(`${record.topic}/${record.partition}`, record.offset + 1);
      }
      for (const [tp, offset] of done) next.set(tp, offset);
      if (group && done.size > 0) {
        const commit = [...done].map(([tp, offset]) => {
          const cut = tp.lastIndexOf("/");
          return { topic: tp.slice(0, cut), partition: Number(tp.slice(cut + 1)), offset };
        });
        // The subscription's id is that of its subscribe op: the first op sent.
        await send({ op: "commit", subscription: "subscribe-1", offsets: commit });
      }
      if (records.length >= count) finish();
    }
  });
}

/** The reader as a program: print `count` orders as a member of `group`. */
export async function main(baseUrl, topic, group, count) {
  const { next } = await readStream(baseUrl, topic, {
    group,
    count,
    onRecord: (r) => console.log(`${r.topic}[${r.partition}]@${r.offset} ${r.key} ${JSON.stringify(r.value)}`),
  });
  console.log(`committed: ${JSON.stringify(Object.fromEntries(next))}`);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [baseUrl = "http://127.0.0.1:8080", topic = "orders", group = "billing", count = "100"] = process.argv.slice(2);
  main(baseUrl, topic, group, Number(count)).catch((err) => {
    console.error(err.message);
    process.exitCode = 1;
  });
}
