/**
 * Real processes for crash tests: a coordinator or a site agent started through the `cohort` CLI, exactly as an
 * operator starts them, so SIGKILL kills what it kills in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { rememberAdminToken } from './cluster.ts';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cohort.js');

export interface Proc {
  child: ChildProcess;
  /** JSON log lines (stderr) and stdout lines, as they arrive. */
  lines: string[];
  exited: Promise<number | null>;
  kill(): Promise<void>;
}

function track(child: ChildProcess): Proc {
  const lines: string[] = [];
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts.filter(Boolean));
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child, lines, exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Resolves when the coordinator prints its URL; rejects if it exits first. */
export async function startCoordinatorProcess(dataDir: string, o: { port?: number; args?: string[]; adminToken: string; env?: Record<string, string> }): Promise<Proc & { url: string }> {
  const child = spawn(process.execPath, [BIN, 'coordinator', '--data-dir', dataDir, '--port', String(o.port ?? 0), ...(o.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COHORT_ADMIN_TOKEN: o.adminToken, COHORT_LOG_LEVEL: 'info', ...o.env },
  });
  const p = track(child);
  const url = await new Promise<string>((resolve, reject) => {
    const t = setInterval(() => {
      const m = p.lines.map((l) => /listening on (https?:\/\/\S+)/.exec(l)).find(Boolean);
      if (m) {
        clearInterval(t);
        resolve(m[1]!);
      }
    }, 20);
    void p.exited.then((code) => {
      clearInterval(t);
      reject(new Error(`coordinator exited early (${code}): ${p.lines.slice(-5).join('\n')}`));
    });
  });
  rememberAdminToken(url, o.adminToken);
  return { ...p, url };
}

/** `cohort site run --dir <dir>`; resolves once the agent logs that it authenticated. */
export async function startSiteProcess(dir: string, o: { waitConnected?: boolean; env?: Record<string, string> } = {}): Promise<Proc> {
  const child = spawn(process.execPath, [BIN, 'site', 'run', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COHORT_LOG_LEVEL: 'info', ...o.env } });
  const p = track(child);
  if (o.waitConnected !== false) {
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (p.lines.some((l) => l.includes('connected and authenticated'))) {
          clearInterval(t);
          resolve();
        }
      }, 20);
      void p.exited.then((code) => {
        clearInterval(t);
        reject(new Error(`site agent exited early (${code}): ${p.lines.slice(-5).join('\n')}`));
      });
    });
  }
  return p;
}

/** Messages (`msg`) of JSON log lines, for asserting what a process did. */
export function logMessages(lines: readonly string[]): { msg: string; [k: string]: unknown }[] {
  const out: { msg: string }[] = [];
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as { msg: string });
    } catch {
      // a line cut by SIGKILL
    }
  }
  return out;
}
