// A TCP proxy that breaks its connections at a chosen point, to test what a client does when a
// connection dies with a request or its reply still on the wire (real sockets, real server behind).
import * as net from "node:net";

export type Fault = "drop-replies" | "drop-requests";

export interface FaultyProxy {
  port: number;
  /**
   * On every connection open now: from here on drop the server's bytes ("drop-replies": the server
   * still gets and runs everything) or the client's ("drop-requests": the server never sees them),
   * then close both ends after `ms`. Later connections pass untouched.
   */
  breakOpenConnections(fault: Fault, ms: number): void;
  close(): Promise<void>;
}

export async function startFaultyProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<FaultyProxy> {
  const pairs = new Set<{ client: net.Socket; server: net.Socket; fault?: Fault }>();
  const proxy = net.createServer((client) => {
    const server = net.connect(targetPort, targetHost);
    const pair: { client: net.Socket; server: net.Socket; fault?: Fault } = { client, server };
    pairs.add(pair);
    client.on("data", (d) => pair.fault !== "drop-requests" && server.write(d));
    server.on("data", (d) => pair.fault !== "drop-replies" && client.write(d));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on("close", end).on("error", end);
    server.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    port: (proxy.address() as net.AddressInfo).port,
    breakOpenConnections(fault, ms) {
      const hit = [...pairs];
      for (const p of hit) p.fault = fault;
      setTimeout(() => hit.forEach((p) => (p.client.destroy(), p.server.destroy())), ms);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const p of pairs) (p.client.destroy(), p.server.destroy());
        proxy.close(() => resolve());
      }),
  };
}
