/** Wire protocol version (semver). A peer whose major differs is refused at the handshake; see docs/protocol.md. */
export const PROTOCOL_VERSION = '2.0.0';

export function protocolMajor(version: string): number {
  const major = Number.parseInt(version.split('.')[0] ?? '', 10);
  return Number.isFinite(major) ? major : -1;
}

export function isCompatibleProtocol(version: string): boolean {
  return protocolMajor(version) === protocolMajor(PROTOCOL_VERSION);
}
