// The execution page, live: status changes over /api/v1/executions/stream, output over
// /api/v1/executions/{id}/logs/{stdout,stderr}/stream; each status event re-reads the record.
// Where a stream cannot be opened the record is polled instead. Cancel posts to the API.
(function () {
  "use strict";
  var main = document.querySelector("main[data-execution-id]");
  if (!main) { return; }
  var id = main.getAttribute("data-execution-id");
  var TERMINAL = ["completed", "failed", "cancelled", "timeout", "abandoned"];
  var SIGNS = {requested: "○", scheduling: "○", scheduled: "○", running: "▶", canceling: "■",
    completed: "✓", failed: "✗", cancelled: "■", timeout: "⌛", abandoned: "✗"};
  var POLL_MS = 1000;
  var streams = [];
  var polling = null;
  var finished = false;

  function $(name) { return document.getElementById(name); }
  function terminal(status) { return TERMINAL.indexOf(status) >= 0; }
  function say(text) { var el = $("action-message"); if (el) { el.textContent = text; } }

  function showTime(el, iso) {
    if (!el) { return; }
    if (!iso) { el.removeAttribute("datetime"); el.textContent = "—"; return; }
    el.setAttribute("datetime", iso);
    el.textContent = iso.replace("T", " ").slice(0, 19) + " UTC";
  }

  function showDuration(ms) {
    if (ms === null || ms === undefined) { return "—"; }
    var s = ms / 1000;
    if (s < 60) { return s.toFixed(1) + " s"; }
    var m = Math.floor(s / 60), rest = Math.floor(s % 60);
    if (m < 60) { return m + " min " + (rest < 10 ? "0" : "") + rest + " s"; }
    var h = Math.floor(m / 60); m = m % 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " min";
  }

  function apply(rec) {
    if (!rec || String(rec.id) !== String(id)) { return; }
    var status = rec.status;
    if (main.getAttribute("data-status") !== status) {
      main.setAttribute("data-status", status);
      $("status-badge").className = "badge status-" + status;
      $("status-sign").textContent = SIGNS[status] || "";
      $("status-text").textContent = status;
    }
    showTime($("started"), rec.started_at);
    showTime($("finished"), rec.finished_at);
    var result = rec.result || {};
    var ms = typeof result.duration_ms === "number" ? result.duration_ms : null;
    if (ms === null && rec.started_at && rec.finished_at) {
      ms = Date.parse(rec.finished_at) - Date.parse(rec.started_at);
    }
    $("duration").textContent = showDuration(ms);
    if (typeof result.exit_code === "number") { $("exit-code").textContent = String(result.exit_code); }
    if (result.error) { $("error").textContent = String(result.error); $("error").hidden = false; }
    if (terminal(status)) { finish(result); }
  }

  function finish(result) {
    if (finished) { return; }
    finished = true;
    ["stdout", "stderr"].forEach(function (name) {
      var text = result[name];
      if (typeof text === "string" && text.length >= $(name).textContent.length) {
        $(name).textContent = text;  // the recorded output is the last word
      }
    });
    streams.forEach(function (es) { es.close(); });
    streams = [];
    if (polling) { clearTimeout(polling); polling = null; }
    $("live-note").textContent = "";
    var cancel = $("cancel");
    if (cancel) { cancel.hidden = true; }
  }

  function refresh() {
    return fetch("/api/v1/executions/" + id, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body) { apply(body.data); } })
      .catch(function () { /* the next event or poll tries again */ });
  }

  function poll() {
    if (finished || polling) { return; }
    polling = setTimeout(function () {
      polling = null;
      refresh().then(poll);
    }, POLL_MS);
  }

  function open(url, handlers) {
    if (!window.EventSource) { return null; }
    var es = new EventSource(url);
    Object.keys(handlers).forEach(function (name) { es.addEventListener(name, handlers[name]); });
    es.addEventListener("error", function () {
      if (es.readyState === EventSource.CLOSED) { poll(); }  // refused: fall back to polling
    });
    streams.push(es);
    return es;
  }

  function follow(name) {
    var pre = $(name);
    var es = open("/api/v1/executions/" + id + "/logs/" + name + "/stream", {
      // content: the catch-up, in pieces; append: what is printed after. Both add on (a
      // reconnection resumes from the last event's byte offset, its id).
      content: function (e) { pre.textContent += e.data; },
      append: function (e) { pre.textContent += e.data; },
      done: function () { es.close(); }
    });
  }

  var cancel = $("cancel");
  if (cancel) {
    cancel.addEventListener("click", function () {
      cancel.disabled = true;
      say("Cancelling…");
      fetch(cancel.getAttribute("data-url"), {method: "POST", credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
        .then(function (x) {
          if (x.ok) { say("Cancel requested: the execution is " + x.body.data.status + "."); apply(x.body.data); }
          else { say("Not cancelled: " + (x.body.error || "refused")); cancel.disabled = false; }
        })
        .catch(function () { say("Not cancelled: the server did not answer."); cancel.disabled = false; });
    });
  }

  if (terminal(main.getAttribute("data-status"))) { finished = true; return; }
  var onChange = function () { refresh(); };
  open("/api/v1/executions/stream?execution_id=" + id, {message: onChange, execution: onChange});
  follow("stdout");
  follow("stderr");
  if (!window.EventSource) { poll(); }
  refresh();  // a change between the page and the stream's start
}());
