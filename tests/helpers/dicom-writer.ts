/**
 * Writes minimal DICOM Part 10 files (Explicit VR Little Endian meta header, then the data set in the given
 * transfer syntax), for the encodings the bundled files do not cover: baseline JPEG and deflate. Test-only.
 */
import { deflateRawSync } from 'node:zlib';

type Value = { vr: string; value: string | number | number[] | Uint8Array };

function pad(s: string, vr: string): Uint8Array {
  const b = Buffer.from(s, 'latin1');
  if (b.length % 2 === 0) return b;
  return Buffer.concat([b, Buffer.from([vr === 'UI' ? 0 : 0x20])]);
}

function element(group: number, elem: number, v: Value): Buffer {
  let body: Uint8Array;
  if (typeof v.value === 'string') body = pad(v.value, v.vr);
  else if (v.value instanceof Uint8Array) body = v.value;
  else {
    const nums = Array.isArray(v.value) ? v.value : [v.value];
    const b = Buffer.alloc(nums.length * (v.vr === 'UL' ? 4 : 2));
    nums.forEach((n, i) => (v.vr === 'UL' ? b.writeUInt32LE(n, i * 4) : b.writeUInt16LE(n, i * 2)));
    body = b;
  }
  const long = ['OB', 'OW', 'SQ', 'UN', 'UT'].includes(v.vr);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(group, 0);
  head.writeUInt16LE(elem, 2);
  head.write(v.vr, 4, 'latin1');
  if (long) head.writeUInt32LE(body.length, 8);
  else head.writeUInt16LE(body.length, 6);
  return Buffer.concat([head, body]);
}

/** Encapsulated pixel data: an empty offset table, then one fragment per frame, then the sequence delimiter. */
function encapsulated(frames: Uint8Array[]): Buffer {
  const item = (data: Uint8Array) => {
    const h = Buffer.alloc(8);
    h.writeUInt16LE(0xfffe, 0);
    h.writeUInt16LE(0xe000, 2);
    const body = data.length % 2 ? Buffer.concat([data, Buffer.from([0])]) : Buffer.from(data);
    h.writeUInt32LE(body.length, 4);
    return Buffer.concat([h, body]);
  };
  const head = Buffer.alloc(12);
  head.writeUInt16LE(0x7fe0, 0);
  head.writeUInt16LE(0x0010, 2);
  head.write('OB', 4, 'latin1');
  head.writeUInt32LE(0xffffffff, 8);
  const end = Buffer.alloc(8);
  end.writeUInt16LE(0xfffe, 0);
  end.writeUInt16LE(0xe0dd, 2);
  return Buffer.concat([head, item(new Uint8Array(0)), ...frames.map(item), end]);
}

export interface SyntheticImage {
  transferSyntax: string;
  rows: number;
  columns: number;
  samples: 1 | 3;
  photometric: string;
  bitsAllocated: 8 | 16;
  pixelRepresentation?: 0 | 1;
  /** Native pixel bytes (little endian), or one encoded frame per element for encapsulated syntaxes. */
  pixels: Uint8Array | Uint8Array[];
  modality?: string;
}

export function writeDicom(img: SyntheticImage): Uint8Array {
  const meta = Buffer.concat([
    element(0x0002, 0x0001, { vr: 'OB', value: new Uint8Array([0, 1]) }),
    element(0x0002, 0x0002, { vr: 'UI', value: '1.2.840.10008.5.1.4.1.1.7' }),
    element(0x0002, 0x0003, { vr: 'UI', value: '1.2.3.4.5.6.7.8' }),
    element(0x0002, 0x0010, { vr: 'UI', value: img.transferSyntax }),
  ]);
  const groupLength = element(0x0002, 0x0000, { vr: 'UL', value: meta.length });
  const ds = Buffer.concat([
    element(0x0008, 0x0060, { vr: 'CS', value: img.modality ?? 'OT' }),
    element(0x0028, 0x0002, { vr: 'US', value: img.samples }),
    element(0x0028, 0x0004, { vr: 'CS', value: img.photometric }),
    ...(img.samples === 3 ? [element(0x0028, 0x0006, { vr: 'US', value: 0 })] : []),
    element(0x0028, 0x0010, { vr: 'US', value: img.rows }),
    element(0x0028, 0x0011, { vr: 'US', value: img.columns }),
    element(0x0028, 0x0100, { vr: 'US', value: img.bitsAllocated }),
    element(0x0028, 0x0101, { vr: 'US', value: img.bitsAllocated }),
    element(0x0028, 0x0102, { vr: 'US', value: img.bitsAllocated - 1 }),
    element(0x0028, 0x0103, { vr: 'US', value: img.pixelRepresentation ?? 0 }),
    Array.isArray(img.pixels) ? encapsulated(img.pixels) : element(0x7fe0, 0x0010, { vr: img.bitsAllocated === 8 ? 'OB' : 'OW', value: img.pixels }),
  ]);
  const body = img.transferSyntax === '1.2.840.10008.1.2.1.99' ? deflateRawSync(ds) : ds;
  return new Uint8Array(Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'latin1'), groupLength, meta, body]));
}
