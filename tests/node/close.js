// Closing right after publishing (issue: "await conn.close()" died with
// EPIPE or never resolved against warren): a burst of publishes, then
// close(), for 10, 100 and 1000 messages, on a plain channel and on a
// confirm channel without waiting for the confirms. close() must resolve
// with no 'error' event. Closing the connection at once, amqplib's frame
// mux sends connection.close ahead of the channel's publishes, and the
// broker drops what follows a close (RabbitMQ 3.10 queues none of them):
// only "at most n" can be asserted there. Closing the channel first, every
// message must be queued. Written against RabbitMQ 3.10, run against
// warren by tests/node.rs.
//
//   WARREN_AMQP_HOST (default 127.0.0.1), WARREN_AMQP_PORT (default 5672)
//
// Exits 0 when every case passes, 1 otherwise.

'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const amqp = require('amqplib');

const HOST = process.env.WARREN_AMQP_HOST || '127.0.0.1';
const PORT = Number(process.env.WARREN_AMQP_PORT || 5672);
const URL = `amqp://guest:guest@${HOST}:${PORT}`;
const CLOSE_MS = 5000;

const unique = (base) => `${base}-${crypto.randomBytes(6).toString('hex')}`;

function withTimeout(p, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function publishThenClose(n, confirm, channelFirst) {
  const queue = unique('close');
  const setup = await amqp.connect(URL);
  const sch = await setup.createChannel();
  await sch.assertQueue(queue, { durable: false });
  const errors = [];
  const conn = await amqp.connect(URL);
  conn.on('error', (e) => errors.push(e));
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.on('error', (e) => errors.push(e));
  const body = Buffer.alloc(512, 'x');
  for (let i = 0; i < n; i++) {
    ch.sendToQueue(queue, body);
  }
  const started = Date.now();
  if (channelFirst) {
    await withTimeout(ch.close(), CLOSE_MS, `channel close after ${n} publishes`);
  }
  await withTimeout(conn.close(), CLOSE_MS, `close after ${n} publishes`);
  const ms = Date.now() - started;
  assert.deepEqual(errors, [], `errors while closing after ${n} publishes`);
  // RabbitMQ routes asynchronously: the count may take a moment.
  let count = 0;
  for (const deadline = Date.now() + (channelFirst ? CLOSE_MS : 200); Date.now() < deadline; ) {
    count = (await sch.checkQueue(queue)).messageCount;
    if (count === n) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (channelFirst) {
    assert.equal(count, n, `messages queued after channel and connection close (${n} published)`);
  } else {
    assert.ok(count <= n, `${count} messages queued after close (${n} published)`);
  }
  await sch.deleteQueue(queue);
  await setup.close();
  return ms;
}

async function main() {
  let failed = 0;
  for (const channelFirst of [false, true]) {
    for (const confirm of [false, true]) {
      for (const n of [10, 100, 1000]) {
        for (let round = 0; round < 5; round++) {
          const how = channelFirst ? 'close channel and connection' : 'close connection';
          const name = `publish ${n} then ${how} (confirm channel: ${confirm}), round ${round + 1}`;
          try {
            const ms = await publishThenClose(n, confirm, channelFirst);
            if (round === 0) console.log(`ok   ${name}: close took ${ms} ms`);
          } catch (e) {
            failed++;
            console.log(`FAIL ${name}: ${e.stack || e}`);
          }
        }
      }
    }
  }
  process.exit(failed ? 1 : 0);
}

process.on('unhandledRejection', (e) => {
  console.log(`FAIL unhandled rejection: ${e.stack || e}`);
  process.exit(1);
});
process.on('uncaughtException', (e) => {
  console.log(`FAIL uncaught exception: ${e.stack || e}`);
  process.exit(1);
});

main();
