// node-postgres through pgmux in transaction mode, with named queries (prepared once per
// connection by the driver). Usage: node node_test.js host port db user password clients
const { Client } = require('pg');

const [host, port, database, user, password, clientsArg] = process.argv.slice(2);
const clients = parseInt(clientsArg, 10);

async function one(cid) {
  const c = new Client({ host, port: parseInt(port, 10), database, user, password, ssl: false });
  await c.connect();
  let checks = 0;
  try {
    for (let i = 0; i < 8; i++) {
      const r = await c.query({ name: 'add', text: 'select $1::int + $2::int as v', values: [i, cid] });
      if (r.rows[0].v !== i + cid) throw new Error(`wrong result ${r.rows[0].v}`);
      checks++;
    }
    await c.query('BEGIN');
    for (let i = 0; i < 5; i++) {
      await c.query({ name: 'ins', text: 'insert into drv(client, i) values ($1, $2)', values: [cid + 300000, i] });
      const r = await c.query({ name: 'cnt', text: 'select count(*)::int as n from drv where client = $1', values: [cid + 300000] });
      if (r.rows[0].n !== i + 1) throw new Error(`wrong count ${r.rows[0].n}`);
      checks++;
    }
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
  return checks;
}

(async () => {
  const results = await Promise.allSettled([...Array(clients).keys()].map(one));
  const failures = results.filter((r) => r.status === 'rejected');
  failures.slice(0, 5).forEach((f) => console.log('failure:', f.reason));
  const checks = results.filter((r) => r.status === 'fulfilled').reduce((a, r) => a + r.value, 0);
  console.log(`node-postgres: clients=${clients} checks=${checks} failures=${failures.length}`);
  process.exit(failures.length === 0 && checks === clients * 13 ? 0 : 1);
})();
