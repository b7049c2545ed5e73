// The queue worker over a WebSocket (docs/HTTP.md, "WebSocket queue mode"): the gateway pushes
// the jobs of a tidelog queue as they come, each with its receipt, at most `prefetch` not yet
// settled; the worker settles each one on the same socket: ack when the handler returns, nack
// with the error text when it throws, reject (to the dead letters) on a PermanentError. A job
// still in hand when the socket closes goes straight back to the queue.
//
//   node src/socketworker.js http://127.0.0.1:8080 mailer emails
//
// Uses the `ws` package (Node's own WebSocket arrived in Node 22).

import { pathToFileURL } from "node:url";
import WebSocket from "ws";

import { PermanentError } from "./worker.js";

/** The URL of a queue socket: `/v1/queues/{group}/ws?topics=...&prefetch=...`. */
export function queueSocketUrl(baseUrl, group, topics, prefetch = 10) {
  const query = new URLSearchParams(topics.map((t) => ["topics", t]));
  query.set("prefetch", String(prefetch));
  query.set("format", "json");
  return `${baseUrl.replace(/^http/, "ws")}/v1/queues/${encodeURIComponent(group)}/ws?${query}`;
}

/**
 * Run `handler(message)` on every job pushed until `until(stats)` is true or `signal` aborts;
 * jobs are handled one after the other, in the order they come. Resolves to the stats:
 * `{acked, nacked, rejected, failedSettlements}`.
 */
export function workSocket(baseUrl, group, topics, handler, options = {}) {
  const { until = () => false, signal, retryDelayMs, prefetch = 10 } = options;
  const stats = { acked: 0, nacked: 0, rejected: 0, failedSettlements: 0 };
  const ws = new WebSocket(queueSocketUrl(baseUrl, group, topics, prefetch));
  const pending = new Map(); // op id -> resolve: one answer frame per op
  let ops = 0;
  const settle = (op) =>
    new Promise((resolve) => {
      const id = `${op.op}-${++ops}`;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ ...op, id }));
    });

  return new Promise((resolve, reject) => {
    let chain = Promise.resolve();
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      ws.close(1000);
      if (err) reject(err);
      else resolve(stats);
    };
    if (until(stats)) return finish();
    signal?.addEventListener("abort", () => finish(), { once: true });
    ws.on("error", finish);
    ws.on("close", (code) => finish(new Error(`the socket closed (${code})`)));
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === "messages") {
        chain = chain.then(() => handle(frame.messages)).catch(finish);
      } else if (frame.id !== null && pending.has(frame.id)) {
        const answered = pending.get(frame.id);
        pending.delete(frame.id);
        answered(frame);
      } else if (frame.type === "error") {
        finish(new Error(`${frame.error_code}: ${frame.message}`)); // the socket ends
      }
    });

    async function handle(messages) {
      for (const message of messages) {
        if (done) return;
        const receipt = message.receipt;
        let answer;
        try {
          await handler(message);
          answer = await settle({ op: "ack", receipts: [receipt] });
          stats.acked += answer.acked?.length ?? 0;
          stats.failedSettlements += answer.failed?.length ?? 0;
        } catch (err) {
          if (err instanceof PermanentError) {
            answer = await settle({ op: "reject", receipt, reason: err.message });
            if (answer.type === "rejected") stats.rejected += 1;
          } else {
            const op = { op: "nack", receipt, error: String(err?.message ?? err) };
            if (retryDelayMs !== undefined) op.delay_ms = retryDelayMs;
            answer = await settle(op);
            if (answer.type === "nacked") stats.nacked += 1;
          }
          if (answer.type === "error") stats.failedSettlements += 1; // lock ended: comes again
        }
        if (until(stats)) return finish();
      }
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [baseUrl = "http://127.0.0.1:8080", group = "mailer", topic = "emails"] = process.argv.slice(2);
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  const handler = async (message) => {
    console.log(`job ${message.topic}[${message.partition}]@${message.offset} (delivery ${message.delivery_count}):`, message.value);
  };
  workSocket(baseUrl, group, [topic], handler, { signal: stop.signal }).then(
    (stats) => console.log(stats),
    (err) => {
      console.error(err.message);
      process.exitCode = 1;
    },
  );
}
