// A chat room: every message goes to every open session of this project's
// endpoints, with a short name for its sender.
import * as websockets from 'net/v4/websockets';

const names = new Map<string, string>();
let joined = 0;

function broadcast(text: string): void {
  for (const session of websockets.getSessions()) websockets.getSession(session.id)?.send(text);
}

export function onOpen(id: string): void {
  names.set(id, `guest-${++joined}`);
  broadcast(`* ${names.get(id)} joined (${websockets.getSessions().length} here)`);
}

export function onMessage(message: string, id: string): void {
  const text = message.trim().slice(0, 500);
  if (text !== '') broadcast(`${names.get(id)}: ${text}`);
}

export function onClose(id: string): void {
  const name = names.get(id);
  names.delete(id);
  broadcast(`* ${name} left`);
}
