// The Micro dashboard's script: live services list, endpoint calls, events, metrics rates.
// Plain JavaScript, no dependencies; the pages work without it, read-only.
'use strict';

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const TOKEN_KEY = 'micro.dashboard.token';
  /** The most one Server-Sent Event may buffer before the stream is given up. */
  const MAX_EVENT = 4 * 1024 * 1024;
  /** Items kept in a list of replies or messages; older ones go. */
  const MAX_ITEMS = 500;

  // The bearer token typed into the page, kept for this tab only.
  function setupToken() {
    const field = $('#token');
    if (!field) return;
    field.value = sessionStorage.getItem(TOKEN_KEY) || '';
    field.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, field.value));
  }

  function headers(extra) {
    const all = Object.assign({}, extra);
    const field = $('#token');
    const token = field ? field.value.trim() : '';
    if (token) all.Authorization = 'Bearer ' + token;
    return all;
  }

  /** Reads Server-Sent Events from a fetch response, calling onEvent(name, data) for each. */
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line === '' || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? '' : line.slice(colon + 1);
          if (text.startsWith(' ')) text = text.slice(1);
          if (field === 'event') name = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length) onEvent(name, data.join('\n'));
      }
      if (buffer.length > MAX_EVENT) {
        await reader.cancel();
        throw new Error('an event larger than 4 MiB');
      }
    }
  }

  /** Go Micro's error JSON from an answer's text, or the text as the detail. */
  function errorOf(text, httpStatus) {
    try {
      const e = JSON.parse(text);
      if (e && typeof e === 'object') {
        return { id: e.id || '', code: e.code || httpStatus, detail: e.detail || text, status: e.status || '' };
      }
    } catch (_) { /* not JSON: the text says it */ }
    return { id: '', code: httpStatus, detail: text, status: '' };
  }

  function compact(text) {
    try { return JSON.stringify(JSON.parse(text)); } catch (_) { return text; }
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
  }

  function append(list, text) {
    const item = document.createElement('li');
    item.textContent = text;
    list.appendChild(item);
    while (list.children.length > MAX_ITEMS) list.firstElementChild.remove();
  }

  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // The services page: the text filter, and the rows kept up to date from /dashboard/watch.
  function servicesPage() {
    const rows = $('#service-rows');
    const filter = $('#filter');
    if (!rows || !filter) return;
    const live = $('#live');
    const noMatch = $('#no-match');
    const apply = () => {
      const wanted = filter.value.trim().toLowerCase();
      let shown = 0;
      const all = rows.querySelectorAll('tr[data-service]');
      for (const row of all) {
        const hit = !wanted || row.dataset.service.toLowerCase().includes(wanted);
        row.hidden = !hit;
        if (hit) shown++;
      }
      noMatch.hidden = shown > 0 || all.length === 0;
    };
    filter.addEventListener('input', apply);
    apply();
    (async () => {
      for (let failures = 0; ; failures++) {
        try {
          const response = await fetch('/dashboard/watch', { headers: headers({ Accept: 'text/event-stream' }) });
          if (!response.ok) throw new Error(errorOf(await response.text(), response.status).detail);
          live.textContent = 'Live: the list follows the registry.';
          live.dataset.state = 'live';
          failures = 0;
          await readEvents(response, (name, data) => {
            if (name !== 'services') return;
            // Rows the gateway made, every registry value in them escaped there.
            rows.innerHTML = data;
            apply();
          });
          live.textContent = 'The gateway ended the live updates; reconnecting.';
        } catch (e) {
          live.textContent = `Not live (${e.message}); retrying.`;
        }
        live.dataset.state = 'retrying';
        await wait(Math.min(30000, 1000 * 2 ** Math.min(failures, 5)));
      }
    })();
  }

  /** `text` for a POSIX shell (the same rule as the page's first command lines). */
  function shell(text) {
    if (/^[A-Za-z0-9\-._/:@%+=,]+$/.test(text)) return text;
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  /** The direct fields of a form element: those whose nearest field ancestor is `el`. */
  function children(el) {
    return [...el.querySelectorAll('[data-kind]')].filter((c) => c.parentElement.closest('[data-kind]') === el);
  }

  function labelOf(el) {
    return el.dataset.name || 'an item';
  }

  /** A field's value as JSON; `undefined` when left empty (protobuf's default then). */
  function read(el, top) {
    const kind = el.dataset.kind;
    if (kind === 'object') {
      const object = {};
      for (const child of children(el)) {
        const value = read(child, false);
        if (value !== undefined) object[child.dataset.name] = value;
      }
      return top || Object.keys(object).length ? object : undefined;
    }
    if (kind === 'array') {
      const list = children(el).map((child) => read(child, false)).filter((v) => v !== undefined);
      return list.length ? list : undefined;
    }
    const control = el.querySelector('input, select, textarea');
    if (!control) return undefined;
    if (kind === 'bool') return control.checked ? true : undefined;
    const text = control.value;
    if (text.trim() === '') return undefined;
    if (kind === 'integer' || kind === 'number') {
      const number = Number(text);
      if (!Number.isFinite(number)) throw new Error(`${labelOf(el)} is not a number`);
      return number;
    }
    if (kind === 'json') {
      try { return JSON.parse(text); } catch (e) { throw new Error(`${labelOf(el)} is not JSON: ${e.message}`); }
    }
    return text;
  }

  let cloned = 0;
  /** Gives a new list item's controls ids of their own, and their labels with them. */
  function renumber(root) {
    const ids = new Map();
    for (const el of root.querySelectorAll('[id]')) {
      cloned += 1;
      ids.set(el.id, `item${cloned}`);
      el.id = `item${cloned}`;
    }
    for (const label of root.querySelectorAll('label[for]')) {
      if (ids.has(label.htmlFor)) label.htmlFor = ids.get(label.htmlFor);
    }
    for (const el of root.querySelectorAll('[aria-describedby]')) {
      const id = el.getAttribute('aria-describedby');
      if (ids.has(id)) el.setAttribute('aria-describedby', ids.get(id));
    }
  }

  // The endpoint page: the form writes the request JSON; Call sends it through /api.
  function endpointPage() {
    const form = $('#call-form');
    if (!form) return;
    const fields = $('#fields');
    const raw = $('#request-json');
    const outcome = $('#outcome');
    const error = $('#error');
    const reply = $('#reply');
    const replies = $('#replies');
    const call = $('#call');
    const stop = $('#stop');
    const { api, service, endpoint } = form.dataset;
    const stream = form.dataset.stream === 'true';
    const secured = form.dataset.secured === 'true';
    let controller = null;

    const commands = () => {
      const body = compact(raw.value.trim() || '{}');
      let curl = 'curl';
      if (stream) curl += " -N -H 'Accept: text/event-stream'";
      if (secured) curl += ' -H "Authorization: Bearer $TOKEN"';
      curl += ` -d ${shell(body)} ${shell(location.origin + api)}`;
      $('#curl-line').value = curl;
      $('#micro-line').value = `micro ${stream ? 'stream' : 'call'} ${shell(service)} ${shell(endpoint)} ${shell(body)}`;
    };
    const write = () => {
      try {
        raw.value = JSON.stringify(read(fields, true));
        if (raw.hasAttribute('aria-invalid')) {
          raw.removeAttribute('aria-invalid');
          outcome.textContent = '';
        }
      } catch (e) {
        outcome.textContent = e.message;
        raw.setAttribute('aria-invalid', 'true');
      }
      commands();
    };
    fields.addEventListener('input', write);
    fields.addEventListener('change', write);
    raw.addEventListener('input', commands);
    fields.addEventListener('click', (event) => {
      const add = event.target.closest('button.add');
      if (add) {
        const set = add.closest('fieldset');
        const template = set.querySelector(':scope > template');
        const item = template.content.firstElementChild.cloneNode(true);
        renumber(item);
        set.querySelector(':scope > ol.items').appendChild(item);
        const first = item.querySelector('input, select, textarea');
        if (first) first.focus();
        write();
        return;
      }
      const remove = event.target.closest('button.remove');
      if (remove) {
        const set = remove.closest('fieldset');
        remove.closest('li').remove();
        const next = set.querySelector('button.add');
        if (next) next.focus();
        write();
      }
    });
    stop.addEventListener('click', () => controller && controller.abort());
    write();

    const showError = (httpStatus, text, ms) => {
      const e = errorOf(text, httpStatus);
      $('#error-code').textContent = `${e.code}${e.status ? ' ' + e.status : ''}`;
      $('#error-detail').textContent = e.detail;
      $('#error-id').textContent = e.id;
      error.hidden = false;
      outcome.className = 'failed';
      outcome.textContent = `Failed${httpStatus ? ' with HTTP ' + httpStatus : ''} after ${ms} ms`;
    };
    const since = (start) => Math.round(performance.now() - start);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      let body;
      try {
        body = JSON.stringify(JSON.parse(raw.value.trim() || '{}'));
      } catch (e) {
        outcome.className = 'failed';
        outcome.textContent = `The request is not JSON: ${e.message}`;
        return;
      }
      error.hidden = true;
      reply.hidden = true;
      replies.hidden = true;
      replies.replaceChildren();
      outcome.className = '';
      outcome.textContent = 'Calling…';
      call.disabled = true;
      stop.hidden = !stream;
      controller = new AbortController();
      const start = performance.now();
      try {
        const response = await fetch(api, {
          method: 'POST',
          headers: headers({ 'Content-Type': 'application/json', Accept: stream ? 'text/event-stream' : 'application/json' }),
          body,
          signal: controller.signal,
        });
        if (!response.ok) {
          showError(response.status, await response.text(), since(start));
          return;
        }
        if (!stream) {
          const text = await response.text();
          reply.textContent = pretty(text);
          reply.hidden = false;
          outcome.className = 'succeeded';
          outcome.textContent = `${response.status} OK in ${since(start)} ms`;
          return;
        }
        replies.hidden = false;
        let count = 0;
        let first = 0;
        let failed = false;
        await readEvents(response, (name, data) => {
          if (name === 'error') {
            failed = true;
            showError(0, data, since(start));
            return;
          }
          count += 1;
          if (count === 1) first = since(start);
          append(replies, compact(data));
          outcome.textContent = `${count} ${count === 1 ? 'reply' : 'replies'} so far (the first after ${first} ms)…`;
        });
        if (!failed) {
          outcome.className = 'succeeded';
          outcome.textContent = `${count} ${count === 1 ? 'reply' : 'replies'} in ${since(start)} ms (the first after ${first} ms)`;
        }
      } catch (e) {
        outcome.className = 'failed';
        outcome.textContent = e.name === 'AbortError' ? 'Stopped.' : `The call failed: ${e.message}`;
      } finally {
        call.disabled = false;
        stop.hidden = true;
        controller = null;
      }
    });
  }

  // Copy buttons next to the command lines.
  function copyButtons() {
    for (const button of document.querySelectorAll('button[data-copy]')) {
      button.addEventListener('click', async () => {
        const source = document.getElementById(button.dataset.copy);
        const label = button.textContent;
        try {
          await navigator.clipboard.writeText(source.value);
          button.textContent = 'Copied';
        } catch (_) {
          source.focus();
          source.select();
          button.textContent = 'Selected: copy with Ctrl+C';
        }
        setTimeout(() => { button.textContent = label; }, 2000);
      });
    }
  }

  // The events page: publish through POST /event/{topic}, subscribe with GET /event/{topic}.
  function eventsPage() {
    const publishForm = $('#publish-form');
    const subscribeForm = $('#subscribe-form');
    if (!publishForm || !subscribeForm) return;
    const result = $('#publish-result');
    publishForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      const topic = $('#publish-topic').value.trim();
      let body;
      try {
        body = JSON.stringify(JSON.parse($('#publish-body').value));
      } catch (e) {
        result.textContent = `The message is not JSON: ${e.message}`;
        return;
      }
      result.textContent = 'Publishing…';
      try {
        const response = await fetch(`/event/${encodeURIComponent(topic)}`, {
          method: 'POST',
          headers: headers({ 'Content-Type': 'application/json' }),
          body,
        });
        const text = await response.text();
        result.textContent = response.ok
          ? `Published to ${topic} (${response.status}).`
          : `Not published: ${errorOf(text, response.status).detail} (${response.status})`;
      } catch (e) {
        result.textContent = `Not published: ${e.message}`;
      }
    });

    const status = $('#subscribe-status');
    const messages = $('#messages');
    const subscribe = $('#subscribe');
    const unsubscribe = $('#unsubscribe');
    let controller = null;
    unsubscribe.addEventListener('click', () => controller && controller.abort());
    subscribeForm.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (controller) controller.abort();
      const topic = $('#subscribe-topic').value.trim();
      const mine = new AbortController();
      controller = mine;
      messages.replaceChildren();
      status.textContent = `Subscribing to ${topic}…`;
      subscribe.disabled = true;
      unsubscribe.disabled = false;
      try {
        const response = await fetch(`/event/${encodeURIComponent(topic)}`, {
          headers: headers({ Accept: 'text/event-stream' }),
          signal: mine.signal,
        });
        if (!response.ok) throw new Error(errorOf(await response.text(), response.status).detail);
        status.textContent = `Subscribed to ${topic}: messages appear below as they arrive.`;
        status.dataset.state = 'subscribed';
        await readEvents(response, (name, data) => {
          if (name === 'message') append(messages, compact(data));
          else if (name === 'dropped') append(messages, `(${data} messages dropped: too many at once)`);
          else if (name === 'other') append(messages, `(not JSON: ${data})`);
          else if (name === 'large') append(messages, `(too large to show: ${data})`);
        });
        status.textContent = `The subscription to ${topic} ended.`;
      } catch (e) {
        status.textContent = e.name === 'AbortError' ? 'Not subscribed.' : `Not subscribed: ${e.message}`;
      } finally {
        if (controller === mine) {
          controller = null;
          subscribe.disabled = false;
          unsubscribe.disabled = true;
          delete status.dataset.state;
        }
      }
    });
  }

  // The service page's metrics: counts read again every few seconds, rates from the change.
  function metricsTable() {
    const table = $('#metrics');
    if (!table) return;
    const body = table.querySelector('tbody');
    let last = null;
    const update = async () => {
      try {
        const response = await fetch(table.dataset.source, { headers: headers({ Accept: 'application/json' }) });
        if (!response.ok) return;
        const now = performance.now();
        const counts = (await response.json()).endpoints || {};
        for (const [endpoint, c] of Object.entries(counts)) {
          let row = [...body.rows].find((r) => r.dataset.endpoint === endpoint);
          if (!row) {
            const empty = body.querySelector('td[colspan]');
            if (empty) empty.parentElement.remove();
            row = body.insertRow();
            row.dataset.endpoint = endpoint;
            const name = document.createElement('th');
            name.scope = 'row';
            name.textContent = endpoint;
            row.appendChild(name);
            for (const cls of ['calls', 'errors', 'rate']) row.insertCell().className = cls;
          }
          row.querySelector('.calls').textContent = c.calls;
          row.querySelector('.errors').textContent = c.errors;
          const before = last && last.counts[endpoint];
          if (before) {
            const rate = Math.max(0, c.calls - before.calls) / ((now - last.at) / 1000);
            row.querySelector('.rate').textContent = rate.toFixed(2);
          }
        }
        last = { at: now, counts };
      } catch (_) { /* the next round tries again */ }
    };
    update();
    setInterval(update, 5000);
  }

  setupToken();
  servicesPage();
  endpointPage();
  copyButtons();
  eventsPage();
  metricsTable();
})();
