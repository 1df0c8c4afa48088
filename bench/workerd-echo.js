// The workerd peer: a Cloudflare Worker that echoes every WebSocket message
// through a WebSocketPair, what a tenant on Cloudflare's runtime would write.
// bench/run.ts writes the workerd config that serves it.
export default {
  fetch(request) {
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('expected a WebSocket upgrade\n', { status: 426 });
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener('message', (event) => server.send(event.data));
    return new Response(null, { status: 101, webSocket: client });
  },
};
