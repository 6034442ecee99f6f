// Browser tests: the bundled client (static/index.html) and the seed tutorial's own HTML page,
// driven in real headless Chromium through playwright-core against the chat-server binary.
//
//   CHAT_SERVER_BIN  server binary (default: <repo>/target/debug/chat-server)
//   CHROMIUM         browser binary (default: /usr/bin/chromium)
//
// Screenshots land in <repo>/target/browser-screenshots/.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../../..');
const SERVER_BIN = process.env.CHAT_SERVER_BIN
  ? path.resolve(process.env.CHAT_SERVER_BIN)
  : path.resolve(HERE, '../../../target/debug/chat-server');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(REPO, 'target', 'browser-screenshots');
const SEED_PAGE = pathToFileURL(path.join(HERE, 'fixtures', 'seed.html')).href;
const WAIT = 10_000; // every wait is bounded by this
const CHROME_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// ---------------------------------------------------------------------------------------------
// helpers

/** Starts the server; resolves once it printed `listening on http://HOST:PORT`. */
function startServer(args) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`server binary not found: ${SERVER_BIN} (cargo build -p chat-server, or set CHAT_SERVER_BIN)`);
  }
  const proc = spawn(SERVER_BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      reject(new Error(`server did not print "listening on" within ${WAIT} ms; stdout=${JSON.stringify(out)} stderr=${stderr}`));
    }, WAIT);
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      const m = /^listening on https?:\/\/([^\s/]+):(\d+)\s*$/.exec(out.slice(0, nl));
      if (m) resolve({ host: m[1], port: Number(m[2]) });
      else reject(new Error(`unexpected first stdout line: ${JSON.stringify(out.slice(0, nl))}`));
    });
    proc.on('error', (e) => { clearTimeout(timer); reject(e); });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}): ${stderr}`));
    });
  });
  return ready.then((addr) => ({ proc, exited, stderr: () => stderr, ...addr }));
}

/** SIGTERM, then SIGKILL if it is still running after a few seconds. */
async function stopServer(server) {
  if (!server || server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  server.proc.kill('SIGTERM');
  const t = setTimeout(() => server.proc.kill('SIGKILL'), 5000);
  await server.exited;
  clearTimeout(t);
}

function portIsFree(port, host) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROME_ARGS, timeout: 30_000 });
}

/** A page in its own context (own cookies/storage), with page errors and dialogs recorded. */
async function openPage(browser, url, viewport = { width: 760, height: 560 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { page.problems.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  page.on('response', (r) => { if (r.status() >= 400) page.problems.push(`HTTP ${r.status()} for ${r.url()}`); });
  await page.goto(url, { timeout: WAIT });
  return page;
}

const lines = (page, sel = '#messages li') =>
  page.$$eval(sel, (els) => els.map((e) => e.textContent));
const memberList = (page) => lines(page, '#members li');

async function waitForLine(page, text, sel = '#messages li') {
  try {
    await page.waitForFunction(
      ([s, t]) => [...document.querySelectorAll(s)].some((e) => e.textContent === t),
      [sel, text], { timeout: WAIT, polling: 50 });
  } catch (e) {
    throw new Error(`no line ${JSON.stringify(text)} in ${sel}; have ${JSON.stringify(await lines(page, sel))}; ${page.problems.join(' | ')}`);
  }
}

async function waitForMembers(page, want) {
  try {
    await page.waitForFunction((w) => {
      const have = [...document.querySelectorAll('#members li')].map((e) => e.textContent).sort();
      return JSON.stringify(have) === JSON.stringify([...w].sort());
    }, want, { timeout: WAIT, polling: 50 });
  } catch (e) {
    throw new Error(`members should be ${JSON.stringify(want)}, are ${JSON.stringify(await memberList(page))}`);
  }
}

async function waitForNick(page, not = null) {
  try {
    await page.waitForFunction((n) => {
      const t = document.getElementById('nick').textContent;
      return /^[A-Za-z0-9_-]{1,32}$/.test(t) && t !== n;
    }, not, { timeout: WAIT, polling: 50 });
  } catch (e) {
    throw new Error(`no nickname shown (#nick=${JSON.stringify(await page.textContent('#nick'))}, #status=${JSON.stringify(await page.textContent('#status'))}; ${page.problems.join(' | ')})`);
  }
  return page.textContent('#nick');
}

async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await page.waitForFunction(() => document.getElementById('input').value === '', null, { timeout: WAIT });
}

/** A TCP proxy to the server whose connections the test can cut (the browser then sees 1006). */
function startProxy(targetPort) {
  const open = new Set();
  let down = false;
  const srv = net.createServer((client) => {
    if (down) { client.destroy(); return; }
    const upstream = net.connect(targetPort, '127.0.0.1');
    open.add(client); open.add(upstream);
    const kill = () => {
      client.destroy(); upstream.destroy(); open.delete(client); open.delete(upstream);
    };
    for (const sock of [client, upstream]) { sock.on('error', kill); sock.on('close', kill); }
    client.pipe(upstream); upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve({
      port: srv.address().port,
      cut() { down = true; for (const sock of open) sock.destroy(); open.clear(); },
      restore() { down = false; },
      close() { down = true; for (const sock of open) sock.destroy(); srv.close(); },
    }));
  });
}

/** Screenshots of several pages composed side by side into one PNG. */
async function sideBySide(browser, pages, file) {
  const shots = [];
  for (const p of pages) shots.push((await p.screenshot()).toString('base64'));
  const ctx = await browser.newContext({ viewport: { width: 400, height: 300 } });
  const c = await ctx.newPage();
  await c.setContent(`<body style="margin:0;display:flex;gap:8px;background:#888;width:max-content">${
    shots.map((s) => `<img style="display:block" src="data:image/png;base64,${s}">`).join('')}</body>`);
  await c.waitForFunction(() => [...document.images].every((i) => i.complete && i.naturalWidth > 0));
  await c.screenshot({ path: file, fullPage: true });
  await ctx.close();
}

// ---------------------------------------------------------------------------------------------
// 1. the bundled client

describe('bundled client: two pages chat in /chat/browsertest', { timeout: 120_000 }, () => {
  let server, browser, a, b, nickA, nickB, url;

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    server = await startServer(['--bind', '127.0.0.1', '--port', '0']);
    url = `http://127.0.0.1:${server.port}/chat/browsertest`;
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close().catch(() => {});
    await stopServer(server);
  });

  it('both pages connect and show their nicknames and the room', async () => {
    a = await openPage(browser, url);
    nickA = await waitForNick(a);
    b = await openPage(browser, url);
    nickB = await waitForNick(b);
    assert.notEqual(nickA, nickB);
    assert.equal(await a.textContent('#room'), 'browsertest');
    assert.equal(await b.textContent('#status'), 'connected');
    await waitForLine(a, ` .... ${nickB} has joined.`);
  });

  it('page / joins the lobby at ws://host/chat; /help and errors are notice lines', async () => {
    for (const [page, wsPath] of [['/', '/chat'], ['/chat', '/chat']]) {
      const context = await browser.newContext();
      const p = await context.newPage();
      p.problems = [];
      const sockets = [];
      p.on('websocket', (ws) => sockets.push(ws.url()));
      await p.goto(`http://127.0.0.1:${server.port}${page}`, { timeout: WAIT });
      const nick = await waitForNick(p);
      assert.equal(await p.textContent('#room'), 'lobby');
      assert.equal(sockets[0], `ws://127.0.0.1:${server.port}${wsPath}`);
      if (page === '/') {
        await say(p, '/help');
        await p.waitForFunction(() => [...document.querySelectorAll('#messages li')]
          .some((li) => li.textContent.startsWith(' .... ') && li.textContent.includes('/nick')), null, { timeout: WAIT });
        await say(p, `/nick ${nickA}`); // taken in another room only: allowed here
        await waitForLine(p, ` .... ${nick} is now known as ${nickA}.`);
        await say(p, '/nick no spaces allowed');
        await p.waitForFunction(() => [...document.querySelectorAll('#messages li')]
          .some((li) => li.textContent.startsWith(' .... error: ')), null, { timeout: WAIT });
        assert.equal(await p.textContent('#nick'), nickA);
      }
      await context.close();
    }
  });

  it('A says hello, both pages show it; B answers, A sees it', async () => {
    await say(a, 'hello from A');
    await waitForLine(a, `${nickA}: hello from A`);
    await waitForLine(b, `${nickA}: hello from A`);
    await say(b, 'hi A, this is B');
    await waitForLine(a, `${nickB}: hi A, this is B`);
    await waitForLine(b, `${nickB}: hi A, this is B`);
    // one's own lines are marked, others' are not
    const cls = (p, t) => p.$$eval('#messages li', (els, t) => els.find((e) => e.textContent === t)?.className ?? '', t);
    assert.match(await cls(a, `${nickA}: hello from A`), /\bmine\b/);
    assert.doesNotMatch(await cls(b, `${nickA}: hello from A`), /\bmine\b/);
  });

  it('both member lists show both nicks', async () => {
    await waitForMembers(a, [nickA, nickB]);
    await waitForMembers(b, [nickA, nickB]);
  });

  it('markup in messages is shown literally, never injected', async () => {
    const evil = '<img src=x onerror=alert(1)><b id=pwned>bold</b>';
    await say(a, evil);
    await waitForLine(a, `${nickA}: ${evil}`);
    await waitForLine(b, `${nickA}: ${evil}`);
    for (const p of [a, b]) {
      assert.equal(await p.locator('#messages img, #messages b, #pwned').count(), 0);
      assert.deepEqual(p.problems.filter((x) => x.startsWith('dialog')), []);
    }
  });

  it('/me is rendered as an action line', async () => {
    await say(b, '/me waves');
    await waitForLine(a, `* ${nickB} waves`);
    await waitForLine(b, `* ${nickB} waves`);
  });

  it('screenshots: two pages side by side, and a 375px phone', async () => {
    const file = path.join(SHOTS, 'two-pages.png');
    await sideBySide(browser, [a, b], file);
    assert.ok(existsSync(file));
    const phone = await openPage(browser, url, { width: 375, height: 667 });
    const nickP = await waitForNick(phone);
    await say(phone, 'héllo from a phone — this line is long enough to wrap on a narrow screen');
    await waitForLine(phone, `${nickP}: héllo from a phone — this line is long enough to wrap on a narrow screen`);
    // nothing sticks out sideways at 375px
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than a 375px screen`);
    await phone.screenshot({ path: path.join(SHOTS, 'phone-375.png') });
    await phone.click('#member-box summary');
    await waitForMembers(phone, [nickA, nickB, nickP]);
    await phone.emulateMedia({ colorScheme: 'dark' });
    await phone.screenshot({ path: path.join(SHOTS, 'phone-375-members-dark.png') });
    await phone.context().close();
    await waitForLine(a, ` .... ${nickP} has left.`);
    await waitForMembers(a, [nickA, nickB]);
  });

  it('a dropped connection reconnects with ?since&nick and shows each missed line once', async () => {
    const proxy = await startProxy(server.port);
    try {
      const c = await openPage(browser, `http://127.0.0.1:${proxy.port}/chat/browsertest`);
      const nickC = await waitForNick(c);
      await say(a, 'before the drop');
      await waitForLine(c, `${nickA}: before the drop`);
      const sockets = [];
      c.on('websocket', (ws) => sockets.push(ws.url()));
      proxy.cut();
      await c.waitForFunction(() => /reconnect/.test(document.getElementById('status').textContent),
        null, { timeout: WAIT });
      await waitForLine(a, ` .... ${nickC} has left.`);
      await say(b, 'missed 1');
      await say(a, 'missed 2');
      await waitForLine(a, `${nickA}: missed 2`);
      proxy.restore();
      await waitForLine(c, `${nickA}: missed 2`);
      await c.waitForFunction(() => document.getElementById('status').textContent === 'connected',
        null, { timeout: WAIT });
      assert.equal(await c.textContent('#nick'), nickC, 'the nickname survives the reconnect');
      const url = new URL(sockets.at(-1));
      assert.equal(url.pathname, '/chat/browsertest');
      assert.equal(url.searchParams.get('nick'), nickC);
      assert.match(url.searchParams.get('since') ?? '', /^\d+$/);
      const seen = await lines(c);
      for (const l of [`${nickA}: before the drop`, `${nickB}: missed 1`, `${nickA}: missed 2`]) {
        assert.equal(seen.filter((x) => x === l).length, 1, `${JSON.stringify(l)} once in ${JSON.stringify(seen)}`);
      }
      assert.ok(seen.indexOf(`${nickB}: missed 1`) < seen.indexOf(`${nickA}: missed 2`));
      await waitForMembers(c, [nickA, nickB, nickC]);
      await c.context().close();
      await waitForLine(a, ` .... ${nickC} has left.`);
      await waitForMembers(a, [nickA, nickB]);
    } finally {
      proxy.close();
    }
  });

  it('a crowded room: the welcome lists 50, the client fetches the rest with a silent /who', async () => {
    // 55 plain-text members from one helper page
    const crowd = await openPage(browser, `http://127.0.0.1:${server.port}/healthz`);
    const n = await crowd.evaluate(async (u) => {
      const socks = [];
      for (let i = 0; i < 55; i++) {
        socks.push(await new Promise((res, rej) => {
          const w = new WebSocket(u);
          w.onopen = () => res(w);
          w.onerror = () => rej(new Error('crowd socket ' + i + ' failed'));
        }));
      }
      window.crowd = socks;
      return socks.length;
    }, `ws://127.0.0.1:${server.port}/chat/browsertest`);
    assert.equal(n, 55);
    await a.waitForFunction(() => document.querySelectorAll('#members li').length === 57, null, { timeout: WAIT });
    const context = await browser.newContext({ viewport: { width: 760, height: 560 } });
    const d = await context.newPage();
    d.problems = [];
    const got = [], sent = [];
    d.on('websocket', (ws) => {
      ws.on('framereceived', (f) => { try { got.push(JSON.parse(f.payload)); } catch { got.push(f.payload); } });
      ws.on('framesent', (f) => sent.push(f.payload));
    });
    await d.goto(url, { timeout: WAIT });
    const nickD = await waitForNick(d);
    await d.waitForFunction(() => document.querySelectorAll('#members li').length === 58, null, { timeout: WAIT })
      .catch(async () => { throw new Error(`member list has ${(await memberList(d)).length} entries, want 58`); });
    const list = await memberList(d);
    for (const nick of [nickA, nickB, nickD]) assert.ok(list.includes(nick), `${nick} listed`);
    const welcome = got.find((f) => f && f.type === 'welcome');
    assert.equal(welcome?.members?.length, 50, 'the welcome lists the first 50');
    assert.equal(welcome?.member_count, 58);
    assert.deepEqual(sent, ['/who'], 'exactly one silent /who');
    const shown = await lines(d);
    assert.ok(!shown.some((l) => /\b58 here\b/.test(l)), `the silent /who reply is not shown: ${JSON.stringify(shown.slice(-3))}`);
    await crowd.context().close();
    await d.waitForFunction(() => document.querySelectorAll('#members li').length === 3, null, { timeout: WAIT });
    await d.context().close();
    await waitForMembers(a, [nickA, nickB]);
  });

  // The server drains the rest of the oversized frame before closing the socket, so the 1009
  // close frame is not lost to a TCP reset.
  it('an oversized frame is closed with 1009: the page shows why and does not reconnect', async () => {
    const context = await browser.newContext();
    try {
      const p = await context.newPage();
      const sockets = [];
      p.on('websocket', (ws) => sockets.push(ws.url()));
      await p.goto(url, { timeout: WAIT });
      const nick = await waitForNick(p);
      await waitForLine(a, ` .... ${nick} has joined.`);
      // 70 000 bytes, over the default 64 KiB frame limit (the input's maxlength only stops typing)
      await p.evaluate(() => {
        document.getElementById('input').value = 'x'.repeat(70000);
        document.getElementById('form').requestSubmit();
      });
      await p.waitForFunction(() => /^disconnected|\(code 1006\)/.test(document.getElementById('status').textContent),
        null, { timeout: WAIT });
      assert.match(await p.textContent('#status'), /^disconnected: .*\(1009\)$/);
      // no retry within the first backoff step and more
      const t0 = Date.now();
      while (Date.now() - t0 < 1200) {
        assert.equal(sockets.length, 1, 'no reconnect after 1009');
        await p.waitForTimeout(100);
      }
      assert.match(await p.textContent('#status'), /^disconnected/);
    } finally {
      await context.close();
    }
  });

  it('/nick renames: own #nick updates, the other page sees the notice and new member list', async () => {
    const newB = `b-${process.pid % 100000}`;
    await say(b, `/nick ${newB}`);
    await waitForLine(a, ` .... ${nickB} is now known as ${newB}.`);
    await waitForLine(b, ` .... ${nickB} is now known as ${newB}.`);
    assert.equal(await waitForNick(b, nickB), newB);
    await waitForMembers(a, [nickA, newB]);
    await waitForMembers(b, [nickA, newB]);
    nickB = newB;
  });

  it('closing B: A shows the leave notice and drops B from the member list', async () => {
    await b.context().close();
    await waitForLine(a, ` .... ${nickB} has left.`);
    await waitForMembers(a, [nickA]);
    assert.deepEqual(a.problems, []);
  });

  it('server restart: A reconnects, keeps its nickname, and chats again', async () => {
    const port = server.port;
    server.proc.kill('SIGTERM');
    const { code, signal } = await Promise.race([
      server.exited,
      new Promise((_, rej) => setTimeout(() => rej(new Error('server ignored SIGTERM for 10 s')), WAIT)),
    ]);
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, 'SIGTERM should exit 0');
    await a.waitForFunction(() => /reconnect/.test(document.getElementById('status').textContent),
      null, { timeout: WAIT });
    server = await startServer(['--bind', '127.0.0.1', '--port', String(port)]);
    await a.waitForFunction(() => document.getElementById('status').textContent === 'connected',
      null, { timeout: WAIT });
    assert.equal(await a.textContent('#nick'), nickA);
    await say(a, 'back again');
    await waitForLine(a, `${nickA}: back again`);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. the seed tutorial's own page, unmodified, against --seed-compat on port 12345

describe('seed page (fixtures/seed.html) against --seed-compat --port 12345', { timeout: 120_000 }, () => {
  let server, browser;

  before(async () => {
    if (!(await portIsFree(12345, '127.0.0.1'))) {
      throw new Error('port 12345 is in use; the seed page needs it (ws://localhost:12345/)');
    }
    mkdirSync(SHOTS, { recursive: true });
    server = await startServer(['--seed-compat', '--port', '12345', '--bind', '127.0.0.1']);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close().catch(() => {});
    await stopServer(server);
  });

  /** Opens the fixture and records its WebSocket's fate. */
  async function openSeed() {
    const context = await browser.newContext({ viewport: { width: 640, height: 400 } });
    const page = await context.newPage();
    page.problems = [];
    page.wsClosed = null;
    page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
    page.on('websocket', (ws) => {
      ws.on('socketerror', (e) => page.problems.push(`socketerror: ${e}`));
      ws.on('close', () => { page.wsClosed = true; });
    });
    await page.goto(SEED_PAGE, { timeout: WAIT });
    return page;
  }

  /** Types a line the way a person would: until the socket is open, ws.send throws and the
   *  page keeps the text, so press Enter again until the input clears. */
  async function type(page, text) {
    const deadline = Date.now() + WAIT;
    await page.fill('#chat-input', text);
    for (;;) {
      if (page.wsClosed) {
        throw new Error(`the seed page's WebSocket to ws://localhost:12345/ closed or failed (server listens on 127.0.0.1 only; does localhost resolve to ::1?): ${page.problems.join(' | ')}`);
      }
      await page.press('#chat-input', 'Enter');
      if ((await page.inputValue('#chat-input')) === '') return;
      if (Date.now() > deadline) throw new Error(`could not send within ${WAIT} ms: ${page.problems.join(' | ')}`);
      await page.waitForTimeout(50);
    }
  }

  const echo = (page) => lines(page, '#chat-echo-area li');

  it('two seed pages chat in seed-style lines, and see the leave notice', async () => {
    const a = await openSeed();
    const b = await openSeed();
    await type(a, 'hello');
    await a.waitForFunction(() => document.querySelectorAll('#chat-echo-area li').length >= 1, null, { timeout: WAIT })
      .catch(async () => { throw new Error(`A got no echo; ${a.problems.join(' | ')}`); });
    const [lineA] = await echo(a);
    assert.match(lineA, /^user-\d+: hello$/);
    const nickA = lineA.slice(0, -': hello'.length);
    await waitForLine(b, lineA, '#chat-echo-area li');

    await type(b, 'hello');
    await b.waitForFunction(() => document.querySelectorAll('#chat-echo-area li').length >= 2, null, { timeout: WAIT });
    const linesB = await echo(b);
    const lineB = linesB[1];
    assert.match(lineB, /^user-\d+: hello$/);
    const nickB = lineB.slice(0, -': hello'.length);
    assert.notEqual(nickA, nickB);
    await waitForLine(a, lineB, '#chat-echo-area li');

    // nothing but the seed's lines: no welcome, no join notices
    assert.deepEqual(await echo(a), [lineA, lineB]);
    assert.deepEqual(await echo(b), [lineA, lineB]);
    for (const l of [...await echo(a), ...await echo(b)]) assert.match(l, /^user-\d+: hello$/);
    await a.screenshot({ path: path.join(SHOTS, 'seed-page.png') });

    await b.context().close();
    await waitForLine(a, ` .... ${nickB} has left.`, '#chat-echo-area li');
    assert.deepEqual(await echo(a), [lineA, lineB, ` .... ${nickB} has left.`]);
    assert.deepEqual(a.problems, []);
    await a.context().close();
  });
});

// ---------------------------------------------------------------------------------------------
// TLS: the page served over https connects with wss by itself

describe('bundled client over https uses wss', { timeout: 120_000 }, () => {
  let server, browser, dir;

  before(async () => {
    // A self-signed certificate made now; the browser context ignores that it is untrusted.
    dir = mkdtempSync(path.join(os.tmpdir(), 'chat-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    server = await startServer(['--bind', '127.0.0.1', '--port', '0',
      '--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem')]);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close().catch(() => {});
    await stopServer(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('connects to wss:// on the same port and chats', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 760, height: 560 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(`https://127.0.0.1:${server.port}/chat/secure`, { timeout: WAIT });
    const nick = await waitForNick(page);
    await say(page, 'over wss');
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('#messages li')].some((e) => e.textContent.endsWith(t)),
      'over wss', { timeout: WAIT, polling: 50 });
    assert.ok(sockets.length >= 1, 'the page opened a WebSocket');
    assert.match(sockets[0], new RegExp(`^wss://127\\.0\\.0\\.1:${server.port}/chat/secure`));
    assert.ok(nick.length > 0);
    await context.close();
  });
});
