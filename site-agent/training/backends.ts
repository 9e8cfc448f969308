/**
 * Picks the fastest tfjs backend that loads here: native (tfjs-node), then wasm, then the pure-JS cpu backend.
 * tfjs-node is an optional dependency: its install downloads libtensorflow, which fails on closed networks.
 */
import * as tf from '@tensorflow/tfjs';
import { installWasmTrainingKernels } from './wasm-kernels.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

let chosen: Promise<BackendName> | undefined;

async function tryNative(): Promise<boolean> {
  try {
    // A variable specifier keeps bundlers and the type checker from requiring the optional package.
    const name = '@tensorflow/tfjs-node';
    await import(name);
    return await tf.setBackend('tensorflow');
  } catch {
    return false;
  }
}

async function tryWasm(): Promise<boolean> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    if (!(await tf.setBackend('wasm'))) return false;
    // The stock wasm backend cannot train a CNN (no Conv2DBackpropFilter, a wrong MaxPoolGrad); see wasm-kernels.ts.
    installWasmTrainingKernels();
    return true;
  } catch {
    return false;
  }
}

/**
 * Initializes tfjs once per process. `COHORT_BACKEND=tensorflow|wasm|cpu` forces one (for benchmarks and tests).
 */
export function selectBackend(preferred = process.env.COHORT_BACKEND): Promise<BackendName> {
  chosen ??= (async (): Promise<BackendName> => {
    const order: BackendName[] = preferred ? [preferred as BackendName] : ['tensorflow', 'wasm', 'cpu'];
    for (const name of order) {
      if (name === 'tensorflow' && (await tryNative())) return 'tensorflow';
      if (name === 'wasm' && (await tryWasm())) return 'wasm';
      if (name === 'cpu' && (await tf.setBackend('cpu'))) return 'cpu';
    }
    await tf.setBackend('cpu');
    return 'cpu';
  })().then(async (name) => {
    await tf.ready();
    return name;
  });
  return chosen;
}
