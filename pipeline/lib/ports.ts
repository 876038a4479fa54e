// Free TCP ports on 127.0.0.1 for servers started next: QEMU's host forwards, test servers.
import * as fs from "node:fs";
import * as net from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a server started next (QEMU's forwards,
 * test servers). Taken below the kernel's ephemeral range: a port the OS hands out for bind(0)
 * or as an outgoing connection's source port can be taken again before the server binds it (seen
 * here as PostgreSQL's "Address already in use"); ports below the range never are.
 */
export async function freeHostPort(): Promise<number> {
  const low = ephemeralLow();
  for (let attempt = 0; attempt < 50 && low > 10000; attempt++) {
    const port = 10000 + Math.floor(Math.random() * (low - 10000));
    if (await canBind(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function ephemeralLow(): number {
  try {
    return Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
