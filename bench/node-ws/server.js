// Benchmark peer for chat-server: the tutorial's chat server written the way Node
// users write it with the `ws` package (default options throughout).
//
// The room is the request URL; each client is `user-N`; a text T from it reaches every
// client of its room (itself included) as `user-N: T`, and its departure as
// ` .... user-N has left.`.
//
// Usage: node server.js [--port 8080] [--bind 127.0.0.1]

'use strict';

const { parseArgs } = require('node:util');
const { WebSocketServer, WebSocket } = require('ws');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    bind: { type: 'string', default: '127.0.0.1' },
  },
});

// room (req.url) -> Set of sockets in it
const rooms = new Map();

function broadcast(clients, text) {
  for (const client of clients) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(text);
    }
  }
}

const wss = new WebSocketServer({ port: Number(args.port), host: args.bind });

wss.on('connection', (ws, req) => {
  const room = req.url;
  const nick = `user-${Math.floor(Math.random() * 100000)}`;

  if (!rooms.has(room)) rooms.set(room, new Set());
  const clients = rooms.get(room);
  clients.add(ws);

  ws.on('error', console.error);

  ws.on('message', (data, isBinary) => {
    if (isBinary) return; // text only
    broadcast(clients, `${nick}: ${data}`);
  });

  ws.on('close', () => {
    clients.delete(ws);
    if (clients.size === 0) {
      rooms.delete(room);
    } else {
      broadcast(clients, ` .... ${nick} has left.`);
    }
  });
});

wss.on('listening', () => {
  // The bench harness waits for exactly this line.
  process.stdout.write(`listening on http://${args.bind}:${wss.address().port}\n`);
});
