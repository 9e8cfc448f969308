/**
 * A hand-driven site client: the real handshake over a real socket, but with replies the test chooses. This is how
 * tests cause faults a correct agent never produces (NaN weights, wrong shapes, malformed messages).
 */
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import { challengeMessage, type Reply, type Task } from '../../protocol/messages.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { SITE_NAMESPACE } from '../../protocol/events.ts';

export interface RogueSite {
  socket: Socket;
  keys: nacl.SignKeyPair;
  tasks: Task[];
  authenticate(opts?: { signWith?: Uint8Array }): Promise<Reply<{ siteId: string }>>;
  close(): void;
}

export async function connectRogue(url: string, name: string, onTask: (t: Task) => unknown, keys = nacl.sign.keyPair()): Promise<RogueSite> {
  const socket = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  const tasks: Task[] = [];
  socket.on('task', (task: Task, ack: (r: unknown) => void) => {
    tasks.push(task);
    ack(onTask(task));
  });
  return {
    socket, keys, tasks,
    async authenticate(opts = {}) {
      const hello = (await socket.timeout(5000).emitWithAck('hello', {
        protocolVersion: PROTOCOL_VERSION, siteName: name, publicKey: Buffer.from(keys.publicKey).toString('base64'),
      })) as Reply<{ challenge: { nonce: string; coordinatorId: string } }>;
      if (!hello.ok) return hello;
      const { nonce, coordinatorId } = hello.data.challenge;
      const sig = nacl.sign.detached(challengeMessage(nonce, name, coordinatorId), opts.signWith ?? keys.secretKey);
      return (await socket.timeout(5000).emitWithAck('auth', { nonce, signature: Buffer.from(sig).toString('base64') })) as Reply<{ siteId: string }>;
    },
    close: () => socket.close(),
  };
}
