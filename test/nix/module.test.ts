// nix/modules/messages.nix, evaluated by real nix with a stand-in for nixpkgs' `lib` (mocked:
// nixpkgs cannot be fetched here, so the NixOS module system is not available). What the module
// computes is then used for real: its DATABASE_URL and ExecStart lines run the real db-writer and
// db_reader against a real PostgreSQL reached over a Unix socket, with a role and database of the
// user's name that owns its database, as ensureDBOwnership sets it up. The option defaults are
// checked against the ports the stacks' probe specs send to.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import { startPostgres } from "../../support/postgres";
import { freePort } from "../../support/ports";
import { buildReader, get, startService } from "../apps/reader-helpers";
import { nix, REPO } from "./nixfiles";

const STUB_LIB = `rec {
  mkEnableOption = description: { inherit description; default = false; };
  mkOption = attrs: attrs;
  types = { str = "str"; bool = "bool"; port = "port"; package = "package"; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  mkIf = cond: value: if cond then value else { };
}`;

interface ModuleEval {
  options: { services: { messages: Record<string, any> } };
  config: Record<string, any>;
}

async function evalModule(cfg: Record<string, unknown>): Promise<ModuleEval> {
  const expr = `(import ./nix/modules/messages.nix) {
    lib = ${STUB_LIB};
    pkgs = { db-writer = "/nix/store/00000000000000000000000000000000-db-writer"; db-reader = "/nix/store/00000000000000000000000000000000-db-reader"; };
    config.services.messages = builtins.fromJSON ${JSON.stringify(JSON.stringify(cfg))};
  }`;
  const r = await nix("nix-instantiate", ["--eval", "--strict", "--json", "-E", expr]);
  if (r.code !== 0) throw new Error(`evaluating nix/modules/messages.nix failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ModuleEval;
}

const enabled = (writerPort: number, readerPort: number, pkgs = { w: "/W", r: "/R" }) => ({
  enable: true,
  user: "messages",
  openFirewall: true,
  writer: { port: writerPort, package: pkgs.w },
  reader: { port: readerPort, package: pkgs.r },
});

const writerBinary = path.join(REPO, "apps", "db-writer", "build", "db-writer");

/** scripts/build-apps.sh builds the writer before the tests (npm test); a build in progress gets 3 minutes. */
async function ensureWriter(): Promise<void> {
  for (let waited = 0; !fs.existsSync(writerBinary) && fs.existsSync(path.dirname(writerBinary)) && waited < 180_000; waited += 2_000) {
    await new Promise((r) => setTimeout(r, 2_000));
  }
  if (!fs.existsSync(writerBinary)) throw new Error(`${writerBinary} is missing: run npm run build:apps`);
}

function sendLine(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let buf = "";
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`no reply from the writer within 20 s (${JSON.stringify(buf)})`))), 20_000);
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(`${line}\n`));
    socket.on("data", (d: string) => {
      buf += d;
      if (buf.includes("\n")) {
        clearTimeout(timer);
        socket.end();
        resolve(buf.split("\n")[0]);
      }
    });
    socket.on("error", (e) => (clearTimeout(timer), reject(e)));
  });
}

test("(mocked lib: values only, no option types or merging) option defaults: user messages, writer 1300, reader 8000, firewall closed unless asked", async (t) => {
  const m = await evalModule({ enable: false });
  const o = m.options.services.messages;
  t.is(o.user.default, "messages");
  t.is(o.writer.port.default, 1300);
  t.is(o.reader.port.default, 8000);
  t.is(o.openFirewall.default, false);
  t.is(o.enable.default, false);
  t.is(o.writer.package.default, "/nix/store/00000000000000000000000000000000-db-writer", "pkgs.db-writer from the overlay");
  t.deepEqual(m.config, {}, "nothing is configured when disabled");
});

test("(mocked lib: values only, no option types or merging) the services: ordering after PostgreSQL, the user, hardening, the socket URL, firewall, database", async (t) => {
  const m = await evalModule(enabled(1300, 8000));
  const c = m.config;
  const w = c.systemd.services["messages-writer"];
  const r = c.systemd.services["messages-reader"];
  t.is(w.serviceConfig.ExecStart, "/W/bin/db-writer 1300");
  t.is(r.serviceConfig.ExecStart, "/R/bin/db_reader 8000");
  for (const s of [w, r]) {
    t.true(s.after.includes("postgresql.service") && s.wants.includes("postgresql.service") && !(s.requires ?? []).includes("postgresql.service"));
    t.true(s.after.includes("postgresql-setup.service"), "newer nixpkgs runs ensureUsers in postgresql-setup.service");
    t.deepEqual(s.wantedBy, ["multi-user.target"]);
    t.is(s.environment.DATABASE_URL, "postgresql:///messages?host=/run/postgresql&user=messages");
    const sc = s.serviceConfig;
    t.is(sc.User, "messages");
    t.is(sc.ProtectSystem, "strict");
    for (const flag of ["NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome", "RestrictNamespaces", "MemoryDenyWriteExecute", "LockPersonality"]) {
      t.is(sc[flag], true, flag);
    }
    t.deepEqual(sc.RestrictAddressFamilies, ["AF_UNIX", "AF_INET", "AF_INET6"]);
    t.is(sc.CapabilityBoundingSet, "");
  }
  t.deepEqual(c.networking.firewall.allowedTCPPorts, [1300, 8000]);
  t.deepEqual(c.services.postgresql.ensureDatabases, ["messages"]);
  t.deepEqual(c.services.postgresql.ensureUsers, [{ name: "messages", ensureDBOwnership: true }]);
  t.regex(c.services.postgresql.authentication, /^local messages messages peer$/m);
  t.is(c.users.users.messages.isSystemUser, true);
  t.true(c.assertions.every((a: { assertion: boolean }) => a.assertion));

  const closed = await evalModule({ ...enabled(1300, 8000), openFirewall: false });
  t.deepEqual(closed.config.networking.firewall.allowedTCPPorts, {}, "mkIf false: no ports opened");
  const clash = await evalModule(enabled(8000, 8000));
  t.regex(clash.config.assertions.find((a: { assertion: boolean }) => !a.assertion).message, /must differ/);
});

test("the module's DATABASE_URL and ExecStart run the real apps over a Unix socket as the database's owner", async (t) => {
  t.timeout(300_000);
  await ensureWriter();
  const readerBinary = buildReader();
  const [writerPort, readerPort] = [await freePort(), await freePort()];
  const m = await evalModule(enabled(writerPort, readerPort, { w: "/W", r: "/R" }));
  const w = m.config.systemd.services["messages-writer"];
  const r = m.config.systemd.services["messages-reader"];
  // ExecStart is "<package>/bin/<name> <port>": the names must be the binaries the apps build
  t.is(w.serviceConfig.ExecStart, `/W/bin/${path.basename(writerBinary)} ${writerPort}`);
  t.is(r.serviceConfig.ExecStart, `/R/bin/${path.basename(readerBinary)} ${readerPort}`);

  const pg = await startPostgres();
  t.teardown(() => pg.destroy());
  pg.sql("CREATE ROLE messages LOGIN");
  pg.sql("CREATE DATABASE messages OWNER messages");
  // /run/postgresql stands for a directory holding the server's socket under the default port's name
  const sockets = fs.mkdtempSync(path.join(os.tmpdir(), "nix-module-sock-"));
  t.teardown(() => fs.rmSync(sockets, { recursive: true, force: true }));
  fs.symlinkSync(path.join(pg.dir, `.s.PGSQL.${pg.port}`), path.join(sockets, ".s.PGSQL.5432"));
  const url = String(w.environment.DATABASE_URL).replace("host=/run/postgresql", `host=${sockets}`);
  t.not(url, w.environment.DATABASE_URL, "the socket directory was substituted");

  const writer = await startService(writerBinary, { DATABASE_URL: url }, "db-writer");
  t.teardown(() => writer.stop());
  const reader = await startService(readerBinary, { DATABASE_URL: url }, "db_reader");
  t.teardown(() => reader.stop());

  const token = crypto.randomBytes(6).toString("hex");
  t.regex(await sendLine(writer.port, `via the module ${token}`), /^OK \d+$/);
  const page = await get(`${reader.base}/`);
  t.is(page.status, 200, page.body);
  t.regex(page.body.split("\n")[0], new RegExp(`^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}: via the module ${token}$`));
  t.is((await get(`${reader.base}/healthz`)).status, 200);
  // the table was created by, and belongs to, the role named after the user
  const owner = execSql(pg, "messages", "SELECT tableowner FROM pg_tables WHERE tablename = 'testcounter'");
  t.is(owner, "messages");
});

function execSql(pg: Awaited<ReturnType<typeof startPostgres>>, db: string, query: string): string {
  return execFileSync(path.join(pg.bin, "psql"), ["-X", "-qAt", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", db, "-c", query], {
    encoding: "utf8",
  }).trim();
}

test("every port the stacks' probe specs for the real image use is one the module serves", async (t) => {
  const m = await evalModule({ enable: false });
  const served = new Set([m.options.services.messages.writer.port.default, m.options.services.messages.reader.port.default]);
  const stackDir = path.join(REPO, "stacks");
  const specs = fs
    .readdirSync(stackDir)
    .filter((f) => /^Pulumi\..*\.ya?ml$/.test(f))
    .map((f) => ({ stack: f, config: (parseYaml(fs.readFileSync(path.join(stackDir, f), "utf8")) ?? {}).config ?? {} }))
    .filter(({ config }) => config["secure-supply-chain:source"] === "nix" && config["secure-supply-chain:probes"]);
  t.true(specs.length > 0, "no stack probes the real image (source: nix with probes)");
  for (const { stack, config } of specs) {
    t.is(config["secure-supply-chain:file"], "nix/default.nix", stack);
    t.is(config["secure-supply-chain:attribute"], "iso", stack);
    const file = path.join(REPO, String(config["secure-supply-chain:probes"]));
    if (!fs.existsSync(file)) {
      t.fail(`${stack} probes the real image with ${file}, which does not exist`);
      continue;
    }
    const ports = new Set<number>();
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          if (k === "port" && typeof x === "number") ports.add(x);
          else walk(x);
        }
      }
    };
    walk(parseYaml(fs.readFileSync(file, "utf8")));
    t.true(ports.size > 0, `${file} has no ports`);
    for (const p of ports) t.true(served.has(p), `${file} probes port ${p}, the module serves ${[...served].join(" and ")}`);
  }
});
