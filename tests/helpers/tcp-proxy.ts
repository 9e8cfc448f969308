/**
 * A TCP forwarder to the coordinator whose connections a test can cut all at once: the network failing under a
 * real agent, without touching either end's code.
 */
import { createServer, connect, type Server, type Socket as NetSocket } from 'node:net';

export interface TcpProxy {
  url: string;
  /** Destroys every live connection through the proxy; returns how many sockets it closed. */
  cut(): number;
  close(): void;
}

export function tcpProxy(target: URL): Promise<TcpProxy> {
  const live = new Set<NetSocket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    live.add(client);
    live.add(upstream);
    client.pipe(upstream).pipe(client);
    const drop = () => { client.destroy(); upstream.destroy(); live.delete(client); live.delete(upstream); };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as { port: number };
    resolve({
      url: `http://127.0.0.1:${port}`,
      cut: () => { const n = live.size; for (const s of live) s.destroy(); live.clear(); return n; },
      close: () => server.close(),
    });
  }));
}
