// Refusing an SSH client before ssh2 is involved: Airlock's version line, then an unencrypted
// SSH_MSG_DISCONNECT (RFC 4253 §11.1; allowed before key exchange) whose description OpenSSH
// prints ("Received disconnect from ...: 12: <message>"). Costs no key exchange, so a flood of
// connections beyond the limit cannot buy CPU from the gateway.
import type { Socket } from 'node:net';

const MSG_DISCONNECT = 1;
/** SSH_DISCONNECT_TOO_MANY_CONNECTIONS */
export const DISCONNECT_TOO_MANY_CONNECTIONS = 12;

/** One unencrypted binary packet (RFC 4253 §6) carrying SSH_MSG_DISCONNECT. */
export function disconnectPacket(reason: number, description: string): Buffer {
  const desc = Buffer.from(description, 'utf8');
  const payloadLength = 1 + 4 + 4 + desc.length + 4;
  // packet_length || padding_length || payload || padding is a multiple of 8, padding >= 4.
  let padding = 8 - ((4 + 1 + payloadLength) % 8);
  if (padding < 4) padding += 8;
  const packetLength = 1 + payloadLength + padding;
  const b = Buffer.alloc(4 + packetLength);
  let o = b.writeUInt32BE(packetLength, 0);
  o = b.writeUInt8(padding, o);
  o = b.writeUInt8(MSG_DISCONNECT, o);
  o = b.writeUInt32BE(reason, o);
  o = b.writeUInt32BE(desc.length, o);
  o += desc.copy(b, o);
  b.writeUInt32BE(0, o); // empty language tag; the padding stays zero
  return b;
}

/** Sends the version line and a disconnect, then closes once the client has (or after `graceMs`). */
export function refuseSshSocket(socket: Socket, reason: number, description: string, graceMs = 5_000): void {
  socket.on('error', () => {});
  // Keep reading what the client sends (its version and KEXINIT) so closing does not reset the
  // connection before the client has read the disconnect.
  socket.resume();
  socket.end(Buffer.concat([Buffer.from('SSH-2.0-Airlock\r\n'), disconnectPacket(reason, description)]));
  const t = setTimeout(() => socket.destroy(), graceMs);
  t.unref();
  socket.once('close', () => clearTimeout(t));
}
