"""psycopg 3 through pgmux in transaction mode, with prepare_threshold=0 (every query becomes a
named prepared statement) and with pipeline mode.
Usage: python3 psycopg_test.py host port db user password clients"""
import asyncio
import sys

import psycopg

host, port, db, user, password, clients = sys.argv[1:7]
clients = int(clients)
dsn = f"host={host} port={port} dbname={db} user={user} password={password} sslmode=disable"


async def client(cid: int) -> int:
    checks = 0
    async with await psycopg.AsyncConnection.connect(dsn, prepare_threshold=0,
                                                     autocommit=True) as conn:
        for i in range(8):
            cur = await conn.execute("select %s::int + %s::int", (i, cid))
            assert (await cur.fetchone())[0] == i + cid
            checks += 1
        async with conn.transaction():
            for i in range(5):
                await conn.execute("insert into drv(client, i) values (%s, %s)", (cid + 200000, i))
                cur = await conn.execute("select count(*) from drv where client = %s", (cid + 200000,))
                assert (await cur.fetchone())[0] == i + 1
                checks += 1
        # pipeline mode: several queries in flight, one Sync each
        async with conn.pipeline():
            curs = [await conn.execute("select %s::int * 2", (i,)) for i in range(10)]
        for i, cur in enumerate(curs):
            assert (await cur.fetchone())[0] == i * 2
            checks += 1
    return checks


async def main() -> int:
    results = await asyncio.gather(*(client(c) for c in range(clients)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for f in failures[:5]:
        print("failure:", repr(f))
    checks = sum(r for r in results if isinstance(r, int))
    print(f"psycopg: clients={clients} checks={checks} failures={len(failures)}")
    return 0 if not failures and checks == clients * 23 else 1


sys.exit(asyncio.run(main()))
