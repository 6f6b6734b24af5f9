// amqplib over amqps:// (run by tests/node.rs `amqplib_over_tls`): the
// broker verified against the test CA, publish and consume; mutual TLS
// with a client certificate and SASL EXTERNAL (amqplib's
// credentials.external()); EXTERNAL refused without a certificate; a
// client that does not trust the broker refused. The broker takes the
// EXTERNAL user from the certificate's common name (guest).
//
//   WARREN_AMQP_HOST, WARREN_AMQPS_PORT, WARREN_TLS_CA,
//   WARREN_TLS_CLIENT_CERT, WARREN_TLS_CLIENT_KEY
//
// Exits 0 when every case passes, 1 otherwise.

'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const amqp = require('amqplib');

const HOST = process.env.WARREN_AMQP_HOST || '127.0.0.1';
const PORT = Number(process.env.WARREN_AMQPS_PORT);
const CA = fs.readFileSync(process.env.WARREN_TLS_CA);
const CERT = fs.readFileSync(process.env.WARREN_TLS_CLIENT_CERT);
const KEY = fs.readFileSync(process.env.WARREN_TLS_CLIENT_KEY);
// The certificate names localhost and 127.0.0.1.
const SERVERNAME = 'localhost';

async function roundTrip(conn, n) {
  const ch = await conn.createConfirmChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  for (let i = 0; i < n; i++) {
    ch.sendToQueue(queue, Buffer.from(`m${i}`));
  }
  await ch.waitForConfirms();
  const got = [];
  await new Promise((resolve) => {
    ch.consume(queue, (m) => {
      got.push(m.content.toString());
      ch.ack(m);
      if (got.length === n) resolve();
    });
  });
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => `m${i}`));
  await ch.close();
}

async function main() {
  // Server verified, PLAIN.
  let conn = await amqp.connect(`amqps://guest:guest@${HOST}:${PORT}`, {
    ca: [CA],
    servername: SERVERNAME,
  });
  await roundTrip(conn, 200);
  await conn.close();

  // Mutual TLS and EXTERNAL.
  conn = await amqp.connect(
    { protocol: 'amqps', hostname: HOST, port: PORT },
    {
      ca: [CA],
      cert: CERT,
      key: KEY,
      servername: SERVERNAME,
      credentials: amqp.credentials.external(),
    },
  );
  await roundTrip(conn, 50);
  await conn.close();

  // EXTERNAL without a certificate: not offered, refused.
  await assert.rejects(
    amqp.connect(
      { protocol: 'amqps', hostname: HOST, port: PORT },
      { ca: [CA], servername: SERVERNAME, credentials: amqp.credentials.external() },
    ),
  );

  // A client that does not trust the broker's CA refuses it.
  await assert.rejects(amqp.connect(`amqps://guest:guest@${HOST}:${PORT}`, { servername: SERVERNAME }));

  // Still served.
  conn = await amqp.connect(`amqps://guest:guest@${HOST}:${PORT}`, { ca: [CA], servername: SERVERNAME });
  await roundTrip(conn, 5);
  await conn.close();
  console.log('tls.js: all cases passed');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
