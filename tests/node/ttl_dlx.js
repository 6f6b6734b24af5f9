// Message TTL and dead-lettering through amqplib (the Node.js client), checking
// the x-death header as amqplib decodes it. Written against RabbitMQ 3.10,
// then run against warren by tests/node.rs.
//
//   WARREN_AMQP_HOST (default 127.0.0.1), WARREN_AMQP_PORT (default 5672)
//
// Exits 0 when every test passes, 1 otherwise.

'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const amqp = require('amqplib');

const HOST = process.env.WARREN_AMQP_HOST || '127.0.0.1';
const PORT = Number(process.env.WARREN_AMQP_PORT || 5672);
const URL = `amqp://guest:guest@${HOST}:${PORT}`;
const WAIT_MS = 5000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const unique = (base) => `${base}-${crypto.randomBytes(6).toString('hex')}`;

// Everything a test declares, deleted at the end.
const queues = [];
const exchanges = [];

function queueName(base) {
  const q = unique(base);
  queues.push(q);
  return q;
}

function exchangeName(base) {
  const x = unique(base);
  exchanges.push(x);
  return x;
}

// basic.get (no-ack) until a message arrives or the wait is over.
async function get(ch, queue, waitMs = WAIT_MS) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (m || Date.now() >= deadline) return m;
    await sleep(10);
  }
}

async function messageCount(ch, queue) {
  return (await ch.checkQueue(queue)).messageCount;
}

// A dead-letter exchange (fanout) with one queue bound to it.
async function deadLetterPair(ch, kind = 'fanout', key = '') {
  const dlx = exchangeName('dlx');
  const dlq = queueName('dlq');
  await ch.assertExchange(dlx, kind, { durable: false });
  await ch.assertQueue(dlq, { durable: false });
  await ch.bindQueue(dlq, dlx, key);
  return { dlx, dlq };
}

// One x-death entry, exactly as RabbitMQ writes it.
function assertDeath(entry, { reason, queue, exchange, routingKeys, count = 1, extra = {} }) {
  const keys = ['count', 'exchange', 'queue', 'reason', 'routing-keys', 'time', ...Object.keys(extra)];
  assert.deepEqual(Object.keys(entry).sort(), keys.sort());
  assert.equal(entry.count, count);
  assert.equal(entry.reason, reason);
  assert.equal(entry.queue, queue);
  assert.equal(entry.exchange, exchange);
  assert.deepEqual(entry['routing-keys'], routingKeys);
  // amqplib decodes AMQP timestamps (seconds) as {'!': 'timestamp', value}
  assert.equal(entry.time['!'], 'timestamp');
  assert.ok(Math.abs(entry.time.value - Date.now() / 1000) < 60, `time ${entry.time.value}`);
  for (const [k, v] of Object.entries(extra)) assert.equal(entry[k], v);
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('queue TTL expires messages into the dead-letter exchange with x-death', async (ch) => {
  const { dlx, dlq } = await deadLetterPair(ch);
  const q = queueName('ttl');
  await ch.assertQueue(q, { durable: false, messageTtl: 50, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('expire me'), {
    contentType: 'text/plain',
    messageId: 'm-1',
    headers: { custom: 'kept' },
  });
  const m = await get(ch, dlq);
  assert.ok(m, 'dead-lettered message');
  assert.equal(m.content.toString(), 'expire me');
  assert.equal(m.fields.exchange, dlx);
  assert.equal(m.fields.routingKey, q);
  assert.equal(m.properties.contentType, 'text/plain');
  assert.equal(m.properties.messageId, 'm-1');
  assert.equal(m.properties.expiration, undefined);
  const h = m.properties.headers;
  assert.equal(h.custom, 'kept');
  assert.equal(h['x-first-death-reason'], 'expired');
  assert.equal(h['x-first-death-queue'], q);
  assert.equal(h['x-first-death-exchange'], '');
  assert.equal(h['x-death'].length, 1);
  assertDeath(h['x-death'][0], { reason: 'expired', queue: q, exchange: '', routingKeys: [q] });
  assert.equal(await messageCount(ch, q), 0);
});

test('per-message expiration: original-expiration recorded, dead-letter routing key used', async (ch) => {
  const { dlx, dlq } = await deadLetterPair(ch, 'direct', 'dead');
  const src = exchangeName('src');
  await ch.assertExchange(src, 'topic', { durable: false });
  const q = queueName('msg-ttl');
  await ch.assertQueue(q, { durable: false, deadLetterExchange: dlx, deadLetterRoutingKey: 'dead' });
  await ch.bindQueue(q, src, 'a.*');
  ch.publish(src, 'a.b', Buffer.from('short-lived'), { expiration: '40' });
  const m = await get(ch, dlq);
  assert.ok(m, 'dead-lettered message');
  assert.equal(m.fields.routingKey, 'dead');
  assert.equal(m.properties.expiration, undefined);
  const h = m.properties.headers;
  assert.equal(h['x-first-death-exchange'], src);
  assertDeath(h['x-death'][0], {
    reason: 'expired',
    queue: q,
    exchange: src,
    routingKeys: ['a.b'],
    extra: { 'original-expiration': '40' },
  });
});

test('expired messages are never delivered and leave the queue without a consumer', async (ch) => {
  const q = queueName('ttl-gone');
  await ch.assertQueue(q, { durable: false, messageTtl: 100 });
  for (let i = 0; i < 3; i++) ch.sendToQueue(q, Buffer.from(`m${i}`));
  const deadline = Date.now() + WAIT_MS;
  while ((await messageCount(ch, q)) !== 0 && Date.now() < deadline) await sleep(20);
  assert.equal(await messageCount(ch, q), 0);
  const got = [];
  const { consumerTag } = await ch.consume(q, (m) => got.push(m), { noAck: true });
  await sleep(200);
  await ch.cancel(consumerTag);
  assert.deepEqual(got, []);
});

test('rejections dead-letter, and x-death counts repeated deaths', async (ch) => {
  const q = queueName('reject-cycle');
  // dead-letters to itself through the default exchange: not a cycle that is
  // broken, because each round has a rejection in it
  await ch.assertQueue(q, { durable: false, deadLetterExchange: '', deadLetterRoutingKey: q });
  ch.sendToQueue(q, Buffer.from('boomerang'));
  for (let n = 1; n <= 2; n++) {
    let m = null;
    const deadline = Date.now() + WAIT_MS;
    while (!m && Date.now() < deadline) m = await ch.get(q, { noAck: false });
    assert.ok(m, `delivery ${n}`);
    ch.reject(m, false);
  }
  const m = await get(ch, q);
  assert.ok(m, 'third delivery');
  const h = m.properties.headers;
  assert.equal(h['x-death'].length, 1);
  assertDeath(h['x-death'][0], { reason: 'rejected', queue: q, exchange: '', routingKeys: [q], count: 2 });
  assert.equal(h['x-first-death-reason'], 'rejected');
});

test('x-max-length drop-head dead-letters the oldest with reason maxlen', async (ch) => {
  const { dlx, dlq } = await deadLetterPair(ch);
  const q = queueName('maxlen');
  await ch.assertQueue(q, { durable: false, maxLength: 1, deadLetterExchange: dlx });
  ch.sendToQueue(q, Buffer.from('old'));
  ch.sendToQueue(q, Buffer.from('new'));
  const m = await get(ch, dlq);
  assert.ok(m, 'dead-lettered message');
  assert.equal(m.content.toString(), 'old');
  assertDeath(m.properties.headers['x-death'][0], { reason: 'maxlen', queue: q, exchange: '', routingKeys: [q] });
  const kept = await get(ch, q);
  assert.equal(kept.content.toString(), 'new');
});

async function cleanup() {
  let conn;
  try {
    conn = await amqp.connect(URL);
    const ch = await conn.createChannel();
    for (const q of queues) await ch.deleteQueue(q);
    for (const x of exchanges) await ch.deleteExchange(x);
  } catch (e) {
    console.error('cleanup:', e.message);
  } finally {
    if (conn) await conn.close().catch(() => {});
  }
}

async function main() {
  const timer = setTimeout(() => {
    console.error('node tests timed out');
    process.exit(1);
  }, 60000);
  let failed = 0;
  for (const { name, fn } of tests) {
    const started = Date.now();
    let conn;
    try {
      conn = await amqp.connect(URL);
      const ch = await conn.createChannel();
      await fn(ch);
      console.log(`ok   ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}\n${e.stack}`);
    } finally {
      if (conn) await conn.close().catch(() => {});
    }
  }
  await cleanup();
  clearTimeout(timer);
  console.log(`${tests.length - failed} passed, ${failed} failed (broker ${HOST}:${PORT})`);
  process.exitCode = failed ? 1 : 0;
}

main();
