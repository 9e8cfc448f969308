/**
 * Training kernels for the tfjs wasm backend (4.22), which ships the forward pass of convolutions but not all of
 * their gradients, and whose matrix product is only fast in one layout:
 *
 * - `Conv2DBackpropFilter` is missing, so no CNN trains on wasm at all. Registered here as im2col (written
 *   straight into the wasm heap) followed by the backend's own matrix product.
 * - `BatchMatMul` runs XNNPACK's SIMD GEMM only for a single, untransposed product; a transposed operand (every
 *   dense layer's backward pass: `dy @ W^T` and `x^T @ dy`) falls back to a scalar triple loop. Wrapped here to
 *   transpose the operand first (the backend's Transpose kernel) and take the fast path.
 * - `MaxPoolGrad` is wrong: it starts each window's maximum at the smallest positive float instead of -infinity,
 *   so a window whose values are all <= 0 (common after batch norm, elu or tanh, and on all-zero ReLU windows)
 *   sends its gradient to element 0 of the tensor. Replaced here by a first-maximum scan (the cpu backend's rule).
 * - `Conv2DBackpropInput` is a scalar loop. For stride 1 it is a forward convolution of `dy` with the flipped,
 *   channel-swapped filter, which XNNPACK runs; wrapped here to do that (other strides keep the original).
 *
 * Every kernel is built from the wasm backend's own kernels (looked up in the kernel registry, never imported from
 * the package's internals) plus plain loops over the wasm heap, and is checked against the cpu backend in
 * tests/unit/wasm-kernels.test.ts.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';

type DataId = TensorInfo['dataId'];

/** The part of the wasm backend (`BackendWasm`) these kernels use. */
interface WasmBackend {
  dataIdMap: { get(dataId: DataId): { memoryOffset: number } | undefined };
  wasm: { HEAPU8: Uint8Array };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  disposeData(dataId: DataId): boolean;
}

type Pad = 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];
type ExplicitPad = Extract<Pad, unknown[]>;

/** A float32 view of a tensor's bytes in the wasm heap; take it after the last allocation (the heap may grow). */
function heapF32(backend: WasmBackend, info: TensorInfo): Float32Array {
  const data = backend.dataIdMap.get(info.dataId);
  if (!data) throw new Error('wasm kernels: tensor not on the wasm backend');
  const size = info.shape.reduce((a, b) => a * b, 1);
  return new Float32Array(backend.wasm.HEAPU8.buffer, data.memoryOffset, size);
}

function kernelFuncOf(name: string): KernelFunc {
  const config = tf.getKernel(name, 'wasm');
  if (!config) throw new Error(`wasm kernels: the wasm backend has no ${name} kernel`);
  return config.kernelFunc;
}

/** Calls one of the wasm backend's own kernels; its result is a new tensor the caller must dispose or return. */
function run(original: KernelFunc, backend: WasmBackend, inputs: NamedTensorInfoMap, attrs: NamedAttrMap): TensorInfo {
  return original({ inputs, backend: backend as unknown as tf.KernelBackend, attrs }) as TensorInfo;
}

function convInfo(xShape: number[], filterShape: number[], strides: number | [number, number], pad: Pad, dimRoundingMode?: 'floor' | 'round' | 'ceil') {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number], strides, 1, pad, dimRoundingMode, false, 'channelsLast',
  );
}

function checkNhwc(dataFormat: unknown, kernel: string): void {
  if (dataFormat !== undefined && dataFormat !== 'NHWC') throw new Error(`wasm ${kernel}: only NHWC (channels last) is supported, got ${String(dataFormat)}`);
}

// ---------------------------------------------------------------- Conv2DBackpropFilter

/**
 * dW[i, j, ci, co] = sum over (n, p, q) of x[n, p*sh + i - top, q*sw + j - left, ci] * dy[n, p, q, co]:
 * the patches matrix A[(i, j, ci), (n, p, q)] times dy viewed as [(n, p, q), co]. A is laid out row-major in the
 * filter's own order, so the product is already dW and the GEMM takes its fast (untransposed, XNNPACK) path.
 */
function conv2DBackpropFilter(batchMatMul: KernelFunc): KernelFunc {
  return ({ inputs, backend: b, attrs }) => {
    const backend = b as unknown as WasmBackend;
    const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
    checkNhwc(dataFormat, 'Conv2DBackpropFilter');
    const info = convInfo(x.shape, filterShape, strides, pad as Pad, dimRoundingMode);
    const { batchSize: n, inHeight: h, inWidth: w, inChannels: cin, outHeight: ho, outWidth: wo, outChannels: cout } = info;
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw } = info;
    const top = info.padInfo.top;
    const left = info.padInfo.left;
    const m = n * ho * wo;
    const k = kh * kw * cin;
    const patches = backend.makeOutput([1, k, m], 'float32');
    const a = heapF32(backend, patches);
    const xs = heapF32(backend, x);
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        // Output columns q whose input column q*sw + j - left lies inside the image.
        const qMin = Math.min(wo, Math.max(0, Math.ceil((left - j) / sw)));
        const qMax = Math.max(qMin, Math.min(wo, Math.floor((w - 1 + left - j) / sw) + 1));
        for (let ci = 0; ci < cin; ci++) {
          const row = ((i * kw + j) * cin + ci) * m;
          for (let b0 = 0; b0 < n; b0++) {
            for (let p = 0; p < ho; p++) {
              const dst = row + (b0 * ho + p) * wo;
              const hIn = p * sh + i - top;
              if (hIn < 0 || hIn >= h) {
                a.fill(0, dst, dst + wo);
                continue;
              }
              if (qMin > 0) a.fill(0, dst, dst + qMin);
              if (qMax < wo) a.fill(0, dst + qMax, dst + wo);
              let src = ((b0 * h + hIn) * w + (qMin * sw + j - left)) * cin + ci;
              const step = sw * cin;
              for (let q = qMin; q < qMax; q++, src += step) a[dst + q] = xs[src]!;
            }
          }
        }
      }
    }
    const dW = run(batchMatMul, backend, { a: patches, b: { dataId: dy.dataId, shape: [1, m, cout], dtype: 'float32' } }, { transposeA: false, transposeB: false });
    backend.disposeData(patches.dataId);
    return { dataId: dW.dataId, shape: [...filterShape], dtype: 'float32' };
  };
}

// ---------------------------------------------------------------- BatchMatMul with transposed operands

/** Takes XNNPACK's GEMM for transposed single products too, by transposing the operand first (a cheap copy). */
function batchMatMulFast(original: KernelFunc, transpose: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const single = (t: TensorInfo) => t.shape.slice(0, -2).every((d) => d === 1);
    if ((!transposeA && !transposeB) || !single(a) || !single(b) || a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
    const flip = (t: TensorInfo): TensorInfo => {
      const [r, c] = t.shape.slice(-2) as [number, number];
      return run(transpose, backend, { x: { dataId: t.dataId, shape: [r, c], dtype: t.dtype } }, { perm: [1, 0] });
    };
    const a2 = transposeA ? flip(a) : a;
    const b2 = transposeB ? flip(b) : b;
    const out = run(original, backend, { a: a2, b: b2 }, { transposeA: false, transposeB: false });
    if (a2 !== a) backend.disposeData(a2.dataId);
    if (b2 !== b) backend.disposeData(b2.dataId);
    const rank = Math.max(a.shape.length, b.shape.length);
    const lead = new Array<number>(rank - 2).fill(1);
    return { ...out, shape: [...lead, ...out.shape.slice(-2)] };
  };
}

// ---------------------------------------------------------------- Conv2DBackpropInput for stride 1

/**
 * For stride 1, dx = conv(dy, W') with W'[i, j, co, ci] = W[kh-1-i, kw-1-j, ci, co], padded by (kh-1-top) above
 * and (kw-1-left) on the left: a forward convolution, which the wasm backend runs on XNNPACK.
 */
function conv2DBackpropInputFast(original: KernelFunc, conv2D: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as unknown as WasmBackend;
    const { dy, filter } = args.inputs as { dy: TensorInfo; filter: TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, inputShape } = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
    if (dataFormat !== undefined && dataFormat !== 'NHWC') return original(args);
    const info = convInfo(inputShape, filter.shape, strides, pad as Pad, dimRoundingMode);
    const { filterHeight: kh, filterWidth: kw, inChannels: cin, outChannels: cout, inHeight: h, inWidth: w, outHeight: ho, outWidth: wo } = info;
    const top = kh - 1 - info.padInfo.top;
    const left = kw - 1 - info.padInfo.left;
    const bottom = h - ho - top + kh - 1;
    const right = w - wo - left + kw - 1;
    if (info.strideHeight !== 1 || info.strideWidth !== 1 || Math.min(top, left, bottom, right) < 0) return original(args);
    const flipped = backend.makeOutput([kh, kw, cout, cin], 'float32');
    const dst = heapF32(backend, flipped);
    const src = heapF32(backend, filter);
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const from = ((kh - 1 - i) * kw + (kw - 1 - j)) * cin * cout;
        const to = (i * kw + j) * cout * cin;
        for (let ci = 0; ci < cin; ci++) for (let co = 0; co < cout; co++) dst[to + co * cin + ci] = src[from + ci * cout + co]!;
      }
    }
    const explicit: ExplicitPad = [[0, 0], [top, bottom], [left, right], [0, 0]];
    const dx = run(conv2D, backend, { x: dy, filter: flipped }, { strides: 1, dilations: 1, pad: explicit, dataFormat: 'NHWC' });
    backend.disposeData(flipped.dataId);
    return dx;
  };
}

// ---------------------------------------------------------------- MaxPoolGrad

/** dx gets each window's dy at the window's first maximum (as the cpu backend does); padding never wins. */
const maxPoolGrad: KernelFunc = ({ inputs, backend: b, attrs }) => {
  const backend = b as unknown as WasmBackend;
  const { dy, input } = inputs as { dy: TensorInfo; input: TensorInfo };
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
  const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad as Pad, dimRoundingMode);
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = info;
  const { effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const top = info.padInfo.top;
  const left = info.padInfo.left;
  const out = backend.makeOutput([...input.shape], 'float32');
  const dx = heapF32(backend, out);
  const xs = heapF32(backend, input);
  const dys = heapF32(backend, dy);
  dx.fill(0);
  const best = new Float32Array(c);
  const at = new Int32Array(c);
  for (let b0 = 0; b0 < n; b0++) {
    for (let p = 0; p < ho; p++) {
      const h0 = Math.max(0, p * sh - top);
      const h1 = Math.min(h, p * sh - top + fh);
      for (let q = 0; q < wo; q++) {
        const w0 = Math.max(0, q * sw - left);
        const w1 = Math.min(w, q * sw - left + fw);
        best.fill(-Infinity);
        at.fill(-1);
        for (let hh = h0; hh < h1; hh++) {
          for (let ww = w0; ww < w1; ww++) {
            const base = ((b0 * h + hh) * w + ww) * c;
            for (let ch = 0; ch < c; ch++) {
              const v = xs[base + ch]!;
              if (v > best[ch]!) {
                best[ch] = v;
                at[ch] = base + ch;
              }
            }
          }
        }
        const g = ((b0 * ho + p) * wo + q) * c;
        for (let ch = 0; ch < c; ch++) if (at[ch]! >= 0) dx[at[ch]!]! += dys[g + ch]!;
      }
    }
  }
  return out;
};

// ---------------------------------------------------------------- registration

let installed = false;

/** Kernel names this module registers or wraps on the wasm backend. */
export const WASM_TRAINING_KERNELS = ['Conv2DBackpropFilter', 'MaxPoolGrad', 'BatchMatMul', 'Conv2DBackpropInput'] as const;

/**
 * Registers the missing gradient kernels and the fast-path wrappers on the wasm backend. Call once the wasm
 * backend is initialised (its kernels' setup has run); later calls do nothing.
 */
export function installWasmTrainingKernels(): void {
  if (installed) return;
  const batchMatMul = kernelFuncOf('BatchMatMul');
  const transpose = kernelFuncOf('Transpose');
  const conv2D = kernelFuncOf('Conv2D');
  const backpropInput = kernelFuncOf('Conv2DBackpropInput');
  const replace = (config: KernelConfig) => {
    if (tf.getKernel(config.kernelName, 'wasm')) tf.unregisterKernel(config.kernelName, 'wasm');
    tf.registerKernel(config);
  };
  if (!tf.getKernel('Conv2DBackpropFilter', 'wasm')) {
    tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: conv2DBackpropFilter(batchMatMul) });
  }
  replace({ kernelName: 'MaxPoolGrad', backendName: 'wasm', kernelFunc: maxPoolGrad });
  replace({ kernelName: 'BatchMatMul', backendName: 'wasm', kernelFunc: batchMatMulFast(batchMatMul, transpose) });
  replace({ kernelName: 'Conv2DBackpropInput', backendName: 'wasm', kernelFunc: conv2DBackpropInputFast(backpropInput, conv2D) });
  installed = true;
}
