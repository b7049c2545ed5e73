// The writer service: produces events to a tidelog topic over the HTTP gateway's REST API,
// one record per request (`produceOne`) or many in one request (`produceBatch`).
//
//   node src/writer.js http://127.0.0.1:8080 events 100
//
// Only Node's built-in fetch is used. Every error the gateway answers is a JSON body
// {error_code, message}; it is raised as a GatewayError carrying both.

import { pathToFileURL } from "node:url";

export class GatewayError extends Error {
  constructor(status, body) {
    super(`${status} ${body.error_code}: ${body.message}`);
    this.status = status;
    this.errorCode = body.error_code;
  }
}

/** One JSON request to the gateway; an error answer rejects with a GatewayError. */
export async function call(baseUrl, method, path, body) {
  const response = await fetch(baseUrl + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : null;
  if (!response.ok) throw new GatewayError(response.status, parsed ?? {});
  return parsed;
}

/** Create `topic` with `partitions` partitions; an existing topic is fine. */
export async function ensureTopic(baseUrl, topic, partitions = 1) {
  try {
    await call(baseUrl, "POST", "/v1/topics", { name: topic, partitions });
  } catch (err) {
    if (!(err instanceof GatewayError && err.errorCode === "topic_exists")) throw err;
  }
}

/**
 * Produce one record: `{key, value, headers, partition}` (value as JSON). Resolves to its
 * `{partition, offset, timestamp}`; a record the broker refused rejects.
 */
export async function produceOne(baseUrl, topic, record, { acks = "all" } = {}) {
  const [result] = await produceBatch(baseUrl, topic, [record], { acks });
  return result;
}

/**
 * Produce many records in one request. Resolves to one `{partition, offset, timestamp}` per
 * record, in order; if any record failed it rejects with the first failure (the others are
 * written: the gateway answers each record on its own).
 */
export async function produceBatch(baseUrl, topic, records, { acks = "all" } = {}) {
  const path = `/v1/topics/${encodeURIComponent(topic)}/records?acks=${acks}`;
  const answer = await call(baseUrl, "POST", path, { format: "json", records });
  if (answer.failed > 0) {
    const bad = answer.results.find((r) => r.error_code !== null);
    throw new GatewayError(200, { error_code: bad.error_code, message: bad.message });
  }
  return answer.results;
}

/** The writer as a program: `count` order events, the first alone, the rest in batches. */
export async function main(baseUrl, topic, count, batchSize = 50) {
  await ensureTopic(baseUrl, topic);
  const event = (i) => ({ key: `order-${i}`, value: { order: i, amount: i * 10 } });
  const first = await produceOne(baseUrl, topic, event(0));
  console.log(`wrote order 0 at ${topic}[${first.partition}]@${first.offset}`);
  for (let start = 1; start < count; start += batchSize) {
    const batch = [];
    for (let i = start; i < Math.min(count, start + batchSize); i++) batch.push(event(i));
    const results = await produceBatch(baseUrl, topic, batch);
    console.log(`wrote ${batch.length} orders, offsets ${results[0].offset}..${results.at(-1).offset}`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [baseUrl = "http://127.0.0.1:8080", topic = "orders", count = "100"] = process.argv.slice(2);
  main(baseUrl, topic, Number(count)).catch((err) => {
    console.error(err.message);
    process.exitCode = 1;
  });
}
