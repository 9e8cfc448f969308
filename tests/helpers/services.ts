/**
 * Throwaway PostgreSQL and Redis servers for tests and benches: each in its own temp directory, on loopback, on a
 * free port, stopped at the end. They use the Debian packages (`postgresql`, `redis-server`), which `.ci/run`
 * installs when missing. `servicesMissing()` names what is absent, so a test can skip loudly, and only then.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function which(cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The directory holding initdb/pg_ctl/postgres: Debian keeps them under /usr/lib/postgresql/<major>/bin. */
export function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const majors = readdirSync(root).filter((d) => existsSync(join(root, d, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
    if (majors[0]) return join(root, majors[0], 'bin');
  }
  const initdb = which('initdb');
  return initdb ? join(initdb, '..') : undefined;
}

export function redisServerBin(): string | undefined {
  return which('redis-server');
}

/** What is missing to run the replica tests, or [] when everything is there. */
export function servicesMissing(): string[] {
  return [...(postgresBin() ? [] : ['PostgreSQL (initdb, pg_ctl: apt-get install postgresql)']), ...(redisServerBin() ? [] : ['Redis (apt-get install redis-server)'])];
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface Service {
  url: string;
  stop(): Promise<void>;
}

/** PostgreSQL refuses to run as root: then run it as the `postgres` user (Debian creates it), or `nobody`. */
function runAs(): { user: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const user of ['postgres', 'nobody']) {
    try {
      const [uid, gid] = execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim().split(' ').concat(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
      return { user, uid: Number(uid), gid: Number(gid) };
    } catch {
      // try the next one
    }
  }
  throw new Error('running as root and neither a postgres nor a nobody user exists to run PostgreSQL');
}

export async function startPostgres(): Promise<Service> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL binaries not found');
  const dir = mkdtempSync(join(tmpdir(), 'cohort-pg-'));
  const as = runAs();
  if (as) chownSync(dir, as.uid, as.gid);
  const run = (cmd: string, args: string[]) => {
    const full = join(bin, cmd);
    return as ? execFileSync('runuser', ['-u', as.user, '--', full, ...args], { stdio: 'pipe' }) : execFileSync(full, args, { stdio: 'pipe' });
  };
  const data = join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'cohort', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  // Loopback only, sockets in the temp dir, no fsync (a throwaway test server).
  run('pg_ctl', ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', '-o', `-p ${port} -h 127.0.0.1 -k ${dir} -F -c max_connections=200`, 'start']);
  return {
    url: `postgres://cohort@127.0.0.1:${port}/postgres`,
    async stop() {
      try {
        run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export async function startRedis(): Promise<Service> {
  const bin = redisServerBin();
  if (!bin) throw new Error('redis-server not found');
  const dir = mkdtempSync(join(tmpdir(), 'cohort-redis-'));
  const port = await freePort();
  const child: ChildProcess = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`redis did not start: ${out}`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`redis exited (${code}): ${out}`)));
  });
  child.stdout!.resume();
  child.stderr!.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
