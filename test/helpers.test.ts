import test from "ava";
import { startPostgres } from "./helpers/postgres";

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
