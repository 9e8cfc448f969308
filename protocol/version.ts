/** Wire protocol version (semver). A peer whose major differs is refused at the handshake; see docs/protocol.md. */
export const PROTOCOL_VERSION = '2.1.0';

export function protocolMajor(version: string): number {
  const major = Number.parseInt(version.split('.')[0] ?? '', 10);
  return Number.isFinite(major) ? major : -1;
}

export function isCompatibleProtocol(version: string): boolean {
  return protocolMajor(version) === protocolMajor(PROTOCOL_VERSION);
}

export function protocolMinor(version: string): number {
  const minor = Number.parseInt(version.split('.')[1] ?? '', 10);
  return Number.isFinite(minor) ? minor : -1;
}

/** Chunked, resumable transfers (protocol/transfer.ts) came with 2.1; a 2.0 peer gets every payload in one message. */
export function supportsChunkedTransfers(version: string): boolean {
  return protocolMajor(version) === 2 ? protocolMinor(version) >= 1 : protocolMajor(version) > 2;
}
