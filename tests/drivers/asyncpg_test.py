"""asyncpg through pgmux in transaction mode: asyncpg prepares every query as a named statement
and caches it per connection. Usage: python3 asyncpg_test.py host port db user password clients"""
import asyncio
import sys

import asyncpg

host, port, db, user, password, clients = sys.argv[1:7]
clients = int(clients)


async def client(cid: int) -> int:
    conn = await asyncpg.connect(host=host, port=int(port), database=db, user=user,
                                 password=password, ssl=False)
    checks = 0
    try:
        for i in range(8):
            v = await conn.fetchval("select $1::int + $2::int", i, cid)
            assert v == i + cid, (v, i, cid)
            checks += 1
        stmt = await conn.prepare("select $1::text || $2::text")
        for i in range(5):
            assert await stmt.fetchval("a", str(i)) == f"a{i}"
            checks += 1
        async with conn.transaction():
            for i in range(5):
                await conn.execute("insert into drv(client, i) values ($1, $2)", cid + 100000, i)
                n = await conn.fetchval("select count(*) from drv where client = $1", cid + 100000)
                assert n == i + 1, (n, i)
                checks += 1
        await conn.executemany("insert into drv(client, i) values ($1, $2)",
                               [(cid + 100000, i) for i in range(10, 20)])
        n = await conn.fetchval("select count(*) from drv where client = $1", cid + 100000)
        assert n == 15, n
        checks += 1
    finally:
        await conn.close()
    return checks


async def main() -> int:
    results = await asyncio.gather(*(client(c) for c in range(clients)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for f in failures[:5]:
        print("failure:", repr(f))
    checks = sum(r for r in results if isinstance(r, int))
    print(f"asyncpg: clients={clients} checks={checks} failures={len(failures)}")
    return 0 if not failures and checks == clients * 19 else 1


sys.exit(asyncio.run(main()))
