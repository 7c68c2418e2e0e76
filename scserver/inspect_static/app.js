// The live inspection page of scserver: polls <path>/state.json every
// second and shows it.  Everything that came from the server is put in the
// page as text (textContent), never as HTML: channel names are chosen by
// clients.
"use strict";

(function () {
  const base = document.body.dataset.base;
  const POLL_MS = 1000;
  let timer = null;

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function number(value) {
    if (typeof value !== "number") return "–";
    return Number.isInteger(value) ? String(value) : value.toFixed(1);
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || seconds < 0) return "–";
    if (seconds < 60) return Math.floor(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function row(cells, attributes) {
    const tr = document.createElement("tr");
    for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
    for (const cell of cells) {
      const td = document.createElement("td");
      if (Array.isArray(cell)) {
        td.className = cell[0];
        td.textContent = cell[1];
      } else {
        td.textContent = cell;
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...rows);
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns;
      td.className = "empty";
      td.textContent = emptyText;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
  }

  function presenceText(presence) {
    if (!presence || typeof presence !== "object") return "";
    return Object.entries(presence).map(([k, v]) => k + ": " + number(v)).join(", ");
  }

  function totalsList(dl, items) {
    dl.replaceChildren();
    for (const [label, value] of items) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = value;
      div.append(dt, dd);
      dl.appendChild(div);
    }
  }

  function renderProcess(process, answeredBy) {
    const node = document.getElementById("process-template").content.firstElementChild.cloneNode(true);
    node.dataset.process = process.id;
    const now = process.time;
    let title = "Process " + process.id + " — pid " + process.pid + " on " + process.host;
    if (process.id === answeredBy) title += " (answered this request)";
    node.querySelector(".process-title").textContent = title;
    const rates = process.rates || {};
    const connections = process.connections || {};
    totalsList(node.querySelector(".process-totals"), [
      ["connections", number(connections.open)],
      ["in handshake", number(connections.pending)],
      ["publishes/s", number(rates.publishes)],
      ["messages in/s", number(rates.messages_in)],
      ["messages out/s", number(rates.messages_out)],
      ["bytes in/s", number(rates.bytes_in)],
      ["bytes out/s", number(rates.bytes_out)],
      ["up", duration(now - process.started)],
    ]);
    const socketRows = (connections.shown || []).map((c) => row([
      ["socket-id", c.id], c.address || "", c.state,
      c.authenticated ? "yes" : "no", c.protocol == null ? "?" : String(c.protocol),
      duration(now - c.since), number(c.subscriptions),
    ], { "data-socket": c.id }));
    fill(node.querySelector(".connections tbody"), socketRows, 7, "no connections");
    node.querySelector(".connections-more").textContent =
      connections.more ? "and " + connections.more + " more (older) connections" : "";
    const errorRows = (process.errors || []).slice().reverse().map((e) => row([
      duration(now - e.time), e.name, e.socket || "",
    ]));
    fill(node.querySelector(".errors tbody"), errorRows, 3, "none");
    const blockRows = (process.blocks || []).slice().reverse().map((b) => row([
      duration(now - b.time), b.type, b.name, b.socket || "",
    ]));
    fill(node.querySelector(".blocks tbody"), blockRows, 4, "none");
    return node;
  }

  function render(state) {
    const totals = state.totals || {};
    const processes = state.processes || [];
    text("processes-total", String(processes.length));
    text("connections-total", number(totals.open));
    text("pending-total", number(totals.pending));
    text("channels-total", number((state.channels || []).length + (state.channels_more || 0)));
    text("publishes-rate", number(totals.publishes_per_second));
    text("messages-in-rate", number(totals.messages_in_per_second));
    text("messages-out-rate", number(totals.messages_out_per_second));
    const channelRows = (state.channels || []).map((c) => row([
      ["channel-name", c.name], ["subscribers", String(c.subscribers)],
      ["presence", presenceText(c.presence)],
    ], { "data-channel": c.name }));
    fill(document.querySelector("#channels tbody"), channelRows, 3, "no channels");
    text("channels-more", state.channels_more ? "and " + state.channels_more + " more channels" : "");
    document.getElementById("process-list").replaceChildren(
      ...processes.map((p) => renderProcess(p, state.answered_by)));
    const status = document.getElementById("status");
    status.className = "status";
    status.textContent = "updated " + new Date().toLocaleTimeString() + " (every second)";
  }

  function failed(message) {
    const status = document.getElementById("status");
    status.className = "status error";
    status.textContent = message;
  }

  async function poll() {
    timer = null;
    try {
      const response = await fetch(base + "/state.json", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        failed("access refused: the credentials are missing or wrong");
      } else if (!response.ok) {
        failed("the server answered " + response.status);
      } else {
        render(await response.json());
      }
    } catch (error) {
      failed("cannot reach the server");
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // Opened with ?token=...: the server set a cookie; keep the token out of
  // the address bar and the history.
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", base + "/");
  }
  poll();
})();
