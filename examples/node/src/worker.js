// The queue worker: takes jobs from a tidelog queue (a share group) over the HTTP gateway and
// settles each one by its receipt: acked when the handler returns, nacked with the error text
// when it throws (delivered again, after `retryDelayMs` or the group's backoff, until the
// group's max_delivery_attempts sends it to the dead letters), rejected straight to the dead
// letters when it throws a PermanentError.
//
//   node src/worker.js http://127.0.0.1:8080 mailer emails
//
// Only Node's built-in fetch is used; no state but the receipts of the jobs in hand.

import { pathToFileURL } from "node:url";

import { call } from "./writer.js";

/** Thrown by a handler for a job that can never succeed: it is rejected, not retried. */
export class PermanentError extends Error {}

const queuePath = (group, op) => `/v1/queues/${encodeURIComponent(group)}${op}`;

/**
 * Lease up to `maxRecords` jobs of `topics`, waiting up to `waitMs` for the first. Resolves to
 * `{messages, lock_duration_ms}`; each message has `receipt`, `value`, `delivery_count`, ...
 */
export function lease(baseUrl, group, topics, { maxRecords = 10, waitMs = 5000 } = {}) {
  const body = { topics, max_records: maxRecords, wait_ms: waitMs, format: "json" };
  return call(baseUrl, "POST", queuePath(group, "/lease"), body);
}

/**
 * Run `handler(message)` on every job until `until(stats)` is true or `signal` aborts; the
 * jobs of one lease are handled one after the other, the acks of a lease go in one request.
 * Resolves to the stats: `{acked, nacked, rejected, failedSettlements}`.
 */
export async function work(baseUrl, group, topics, handler, options = {}) {
  const { until = () => false, signal, retryDelayMs, maxRecords, waitMs } = options;
  const stats = { acked: 0, nacked: 0, rejected: 0, failedSettlements: 0 };
  while (!until(stats) && !signal?.aborted) {
    const { messages } = await lease(baseUrl, group, topics, { maxRecords, waitMs });
    const done = [];
    for (const message of messages) {
      try {
        await handler(message);
        done.push(message.receipt);
      } catch (err) {
        const receipt = message.receipt;
        if (err instanceof PermanentError) {
          await call(baseUrl, "POST", queuePath(group, "/reject"), { receipt, reason: err.message });
          stats.rejected += 1;
        } else {
          const body = { receipt, error: String(err?.message ?? err) };
          if (retryDelayMs !== undefined) body.delay_ms = retryDelayMs;
          await call(baseUrl, "POST", queuePath(group, "/nack"), body);
          stats.nacked += 1;
        }
      }
    }
    if (done.length > 0) {
      const answer = await call(baseUrl, "POST", queuePath(group, "/ack"), { receipts: done });
      stats.acked += answer.acked.length;
      stats.failedSettlements += answer.failed.length; // lock ended: the job comes again
    }
  }
  return stats;
}

/** The group's dead letters (for the source `topic`), first page. */
export function deadLetters(baseUrl, group, topic) {
  return call(baseUrl, "GET", queuePath(group, `/dlq?topic=${encodeURIComponent(topic)}`));
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [baseUrl = "http://127.0.0.1:8080", group = "mailer", topic = "emails"] = process.argv.slice(2);
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  const handler = async (message) => {
    console.log(`job ${message.topic}[${message.partition}]@${message.offset} (delivery ${message.delivery_count}):`, message.value);
  };
  work(baseUrl, group, [topic], handler, { signal: stop.signal }).then(
    (stats) => console.log(stats),
    (err) => {
      console.error(err.message);
      process.exitCode = 1;
    },
  );
}
