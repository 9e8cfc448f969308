/**
 * Plain-loop kernels need a tensor's floats: the wasm backend keeps them in the wasm heap, the cpu backend in JS
 * typed arrays. This is the one place that knows both layouts, and how to call another kernel of the same backend
 * directly (as backends compose their own kernels) without a trip through the engine.
 */
import * as tf from '@tensorflow/tfjs';
import type { NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';

type DataId = TensorInfo['dataId'];

export interface BackendStorage {
  /** The tensor's float32 values (on wasm a view into the heap: take it after the last `alloc`). */
  read(info: TensorInfo): Float32Array;
  /** A new float32 tensor; `view()` gives its values for writing (again: after the last `alloc`). */
  alloc(shape: number[]): { info: TensorInfo; view: () => Float32Array };
  /** Frees an intermediate made by `alloc` or `call`. */
  dispose(info: TensorInfo): void;
  /** Runs another kernel of this backend on tensors of this backend. */
  call(kernelName: string, inputs: NamedTensorInfoMap, attrs?: NamedAttrMap): TensorInfo | TensorInfo[];
}

export type StorageBackendName = 'wasm' | 'cpu';

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

const cache = new WeakMap<object, BackendStorage>();

/** The storage of `backend` (the `backend` argument a kernel function receives) named `name`; one per backend. */
export function storageOf(name: StorageBackendName, backend: unknown): BackendStorage {
  let s = cache.get(backend as object);
  if (!s) {
    s = makeStorage(name, backend);
    cache.set(backend as object, s);
  }
  return s;
}

function makeStorage(name: StorageBackendName, backend: unknown): BackendStorage {
  const b = backend as tf.KernelBackend & {
    disposeData(id: DataId, force?: boolean): boolean;
  };
  const kernels = new Map<string, tf.KernelFunc>();
  const call = (kernelName: string, inputs: NamedTensorInfoMap, attrs: NamedAttrMap = {}) => {
    let f = kernels.get(kernelName);
    if (!f) {
      const config = tf.getKernel(kernelName, name);
      if (!config) throw new Error(`${name} backend has no ${kernelName} kernel`);
      f = config.kernelFunc;
      kernels.set(kernelName, f);
    }
    return f({ inputs, backend: b, attrs }) as TensorInfo | TensorInfo[];
  };
  const dispose = (info: TensorInfo) => { b.disposeData(info.dataId); };
  if (name === 'wasm') {
    const w = backend as {
      dataIdMap: { get(id: DataId): { memoryOffset: number } | undefined };
      wasm: { HEAPU8: Uint8Array };
      makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
    };
    const view = (info: TensorInfo) => {
      const data = w.dataIdMap.get(info.dataId);
      if (!data) throw new Error('tensor is not on the wasm backend');
      return new Float32Array(w.wasm.HEAPU8.buffer, data.memoryOffset, size(info.shape));
    };
    return {
      read: view,
      alloc: (shape) => {
        const info = w.makeOutput(shape, 'float32');
        return { info, view: () => view(info) };
      },
      dispose,
      call,
    };
  }
  const c = backend as {
    data: { get(id: DataId): { values?: unknown } };
    makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
    readSync(id: DataId): unknown;
  };
  return {
    read: (info) => (c.data.get(info.dataId).values ?? c.readSync(info.dataId)) as Float32Array,
    alloc: (shape) => {
      const values = new Float32Array(size(shape));
      return { info: c.makeTensorInfo(shape, 'float32', values), view: () => values };
    },
    dispose,
    call,
  };
}
