/**
 * Backend selection, each case in a fresh process (tfjs's backend is process-wide): native tfjs first where it
 * loads, then wasm (with Cohort's training kernels), then the pure-JS cpu backend.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

function selectIn(env: Record<string, string | undefined>): { backend: string; conv: string } {
  const script = [
    "import * as tf from '@tensorflow/tfjs';",
    "import { selectBackend } from './site-agent/training/backends.ts';",
    'const backend = await selectBackend();',
    // A CNN's filter gradient: stock wasm has no kernel for it, so this proves the training kernels are there.
    'const g = tf.grad((w) => tf.conv2d(tf.ones([1, 4, 4, 1]), w, 1, "same").sum())(tf.ones([3, 3, 1, 2]));',
    "console.log(JSON.stringify({ backend, active: tf.getBackend(), conv: g.shape.join('x') }));",
  ].join('\n');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, COHORT_BACKEND: undefined, ...env },
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`no result: ${r.stderr.slice(-500)}`);
  const out = JSON.parse(line) as { backend: string; active: string; conv: string };
  expect(out.active).toBe(out.backend);
  return out;
}

function nativeLoads(): boolean {
  try {
    createRequire(join(ROOT, 'package.json')).resolve('@tensorflow/tfjs-node');
    return true;
  } catch {
    return false;
  }
}

describe('training backend selection', () => {
  it('should pick native tfjs where it is installed and wasm otherwise, with CNN gradients, when nothing is forced', () => {
    const out = selectIn({});
    expect(out.backend).toBe(nativeLoads() ? 'tensorflow' : 'wasm');
    expect(out.conv).toBe('3x3x1x2');
  });

  it('should honour COHORT_BACKEND=cpu and ignore an unknown name when forced', () => {
    expect(selectIn({ COHORT_BACKEND: 'cpu' }).backend).toBe('cpu');
    expect(selectIn({ COHORT_BACKEND: 'gpu-please' }).backend).toBe(nativeLoads() ? 'tensorflow' : 'wasm');
  });
});
