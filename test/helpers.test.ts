import test from "ava";
import * as net from "node:net";
import { startPostgres } from "../support/postgres";
import { freePort } from "../support/ports";

test("the PostgreSQL test fixture starts a real server, survives a restart and answers SQL", async (t) => {
  const pg = await startPostgres();
  try {
    t.is(pg.sql("select 1+1").trim(), "2");
    pg.restart();
    t.is(pg.sql("select current_database()").trim(), "testdb");
  } finally {
    pg.destroy();
  }
});

test("the PostgreSQL fixture moves to another port when its port is taken before the server binds it", async (t) => {
  const port = await freePort();
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(port, "127.0.0.1", resolve));
  try {
    const pg = await startPostgres(port);
    try {
      t.not(pg.port, port);
      t.is(pg.sql("select 1").trim(), "1");
    } finally {
      pg.destroy();
    }
  } finally {
    squatter.close();
  }
});
