// Heartbeats: the host pings every open socket every `intervalMs`. One that
// has not answered (a pong, or any message) by the next ping is gone, a
// phone that lost signal or a NAT that forgot the connection, and would
// otherwise count as a session for ever; it is dropped. One timer for all
// sockets, not one each.
import WebSocket from 'ws';

export interface Beating {
  ws: WebSocket | null;
  /** Answered since the last ping. */
  alive: boolean;
}

export class Heartbeat<S extends Beating> {
  private readonly timer: NodeJS.Timeout | null;

  constructor(
    intervalMs: number,
    private readonly sockets: () => Iterable<S>,
    private readonly timedOut: (socket: S) => void,
  ) {
    this.timer = intervalMs > 0 ? setInterval(() => this.beat(), intervalMs) : null;
    this.timer?.unref();
  }

  private beat(): void {
    for (const socket of this.sockets()) {
      const ws = socket.ws;
      if (ws === null || ws.readyState !== WebSocket.OPEN) continue;
      if (!socket.alive) {
        this.timedOut(socket);
        continue;
      }
      socket.alive = false;
      ws.ping();
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
  }
}
