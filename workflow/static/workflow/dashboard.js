/* The dashboard's behaviour: graph zoom/pan/minimap, state kept across live updates, polls that
 * pause, confirms, copy buttons, keys, relative times, toasts, and the history cache.
 *
 * A static file wired by event listeners and data attributes, so it runs under the strict
 * Content-Security-Policy (no inline script, no on* attributes, no hx-on, no eval: htmx runs with
 * allowEval=false, so hx-trigger filters and js: hx-vals are not available). No build step.
 * Declared in templates with:
 *   data-poll-visible                 a poll skips its beat while the tab is hidden
 *   data-poll-unless="selector"       ... and while the selector matches an element
 *   data-newer-than="selector"        sends newer_than = the first match's data-id (else data-baseline)
 *   data-remove-after-swap="selector" removes the matching elements after this element's swap
 *   data-live-pin="cursor"            a list poll keeps its rows once scrolled (or data-live-pinned)
 *   data-keep, data-keep-scroll       open/scroll state kept across swaps
 *   data-confirm="text"               a plain form (or its submit button) asks first
 *   data-copy="text", data-keynav, time[data-when], data-time-utc-toggle, data-graph-view
 *   details[data-dropdown]            a menu: closes on a click outside or Escape
 *   data-group-toggle="id"            shows/hides the rows [data-member-of="id"] (grouped repeats)
 *   data-timeline                     the run's attempt lanes: zoom, brush, pan, highlight a step
 *   .toast-close                      dismisses its toast
 *   form[data-logout]                 clears the htmx history cache (as does the login page)
 */
(function () {
  "use strict";

  /* ---------- the htmx history cache ---------- */
  // Dashboard HTML is cached in localStorage for back/forward: cleared at logout and on the
  // login page, so the next person at this browser cannot read it.
  var HISTORY_KEY = "htmx-history-cache";

  function forgetHistory() {
    try { window.localStorage.removeItem(HISTORY_KEY); } catch (e) { /* storage disabled */ }
  }

  document.addEventListener("submit", function (event) {
    if (event.target.matches && event.target.matches("form[data-logout]")) forgetHistory();
  });

  function onLoginPage() {
    if (document.body && document.body.classList.contains("login-page")) forgetHistory();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", onLoginPage);
  else onLoginPage();

  /* ---------- state that must survive htmx swaps ---------- */
  // Live regions are replaced every few seconds; what the operator opened, focused or scrolled
  // inside them is recorded before a swap and put back after it.
  var kept = null;

  function keyOf(el) {
    return el.getAttribute("data-keep") || el.id || "";
  }

  // Content swapped in but not yet settled (htmx marks it until then) still shows the server's
  // default: a second swap recording meanwhile keeps what the first recorded for it.
  function unsettled(el) {
    return !!(el.closest && el.closest(".htmx-added, .htmx-settling"));
  }

  // What to record for el: its value now, or the previous record's while el is unsettled.
  function settled(prev, el, k, value) {
    return prev && unsettled(el) && Object.prototype.hasOwnProperty.call(prev, k) ? prev[k] : value;
  }

  function record() {
    var prev = kept;
    var state = { open: {}, scroll: {}, focus: null, selection: null };
    document.querySelectorAll("details[data-keep], details[id]").forEach(function (d) {
      var k = keyOf(d);
      state.open[k] = settled(prev && prev.open, d, k, d.open);
    });
    document.querySelectorAll("[data-keep-scroll]").forEach(function (el) {
      var k = keyOf(el);
      state.scroll[k] = settled(prev && prev.scroll, el, k, el.scrollTop);
    });
    var active = document.activeElement;
    if (active && active.id) {
      state.focus = active.id;
      if (typeof active.selectionStart === "number") {
        state.selection = [active.selectionStart, active.selectionEnd];
      }
    }
    kept = state;
  }

  function restore() {
    if (!kept) return;
    var state = kept;
    document.querySelectorAll("details[data-keep], details[id]").forEach(function (d) {
      var k = keyOf(d);
      if (Object.prototype.hasOwnProperty.call(state.open, k)) d.open = state.open[k];
    });
    document.querySelectorAll("[data-keep-scroll]").forEach(function (el) {
      var k = keyOf(el);
      if (Object.prototype.hasOwnProperty.call(state.scroll, k)) el.scrollTop = state.scroll[k];
    });
    if (state.focus && (!document.activeElement || document.activeElement === document.body)) {
      var el = document.getElementById(state.focus);
      if (el) {
        el.focus({ preventScroll: true });
        if (state.selection && typeof el.setSelectionRange === "function") {
          try { el.setSelectionRange(state.selection[0], state.selection[1]); } catch (e) { /* not a text input */ }
        }
      }
    }
  }

  // A details the operator toggles between a swap's record and its restore keeps the operator's
  // choice, not the one recorded before the click (the click's toggle lands after this handler).
  document.addEventListener("click", function (event) {
    var summary = event.target.closest && event.target.closest("summary");
    var d = summary && summary.parentElement;
    if (!kept || !d || d.tagName !== "DETAILS" || !(d.hasAttribute("data-keep") || d.id)) return;
    kept.open[keyOf(d)] = !d.open;
  });

  document.addEventListener("htmx:beforeSwap", record);
  document.addEventListener("htmx:oobBeforeSwap", record);
  document.addEventListener("htmx:afterSettle", restore);
  document.addEventListener("htmx:oobAfterSwap", restore);

  /* ---------- confirmations without inline handlers ---------- */
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var text = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) event.preventDefault();
  }, true);

  document.addEventListener("click", function (event) {
    var close = event.target.closest && event.target.closest(".toast-close");
    if (close && close.closest(".toast")) close.closest(".toast").remove();
  });

  /* ---------- live polls that pause (no hx-trigger filters: those need eval) ---------- */
  // <div hx-trigger="every 3s" data-poll-unless="#runs-form input[name=run]:checked"> skips its
  // poll while the selector matches; data-poll-visible skips it while the tab is hidden. Only the
  // poll is skipped: a request the operator triggered from the same element still goes.
  function sourceOf(event) {
    return (event.detail && event.detail.requestConfig && event.detail.requestConfig.elt) || event.detail.elt || event.target;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.getAttribute) return;
    var trigger = event.detail.requestConfig && event.detail.requestConfig.triggeringEvent;
    if (trigger && trigger.type !== "every") return; // a poll has no triggering event
    if (elt.hasAttribute("data-poll-visible") && document.visibilityState !== "visible") {
      event.preventDefault();
      return;
    }
    var unless = elt.getAttribute("data-poll-unless");
    if (unless && document.querySelector(unless)) event.preventDefault();
  });

  // <div data-live-pin="cursor"> polls "from the row on top" once the operator scrolled (or the
  // view is filtered or paged: data-live-pinned), so new rows are announced, not inserted.
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-live-pin")) return;
    var cursor = elt.getAttribute("data-live-pin");
    if (cursor && (elt.hasAttribute("data-live-pinned") || window.scrollY > 40)) {
      event.detail.parameters.pin = cursor;
    }
  });

  // <div data-newer-than="#rows tr[data-id]" data-baseline="123"> sends the newest shown row's id
  // as newer_than, so a live tail asks only for what it has not got (data-baseline when no row is shown).
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-newer-than")) return;
    var row = document.querySelector(elt.getAttribute("data-newer-than"));
    event.detail.parameters.newer_than = (row && row.getAttribute("data-id")) || elt.getAttribute("data-baseline") || "0";
  });

  // <div data-remove-after-swap="#placeholder">: once it swapped content in, the placeholder goes.
  document.addEventListener("htmx:afterSwap", function (event) {
    var elt = sourceOf(event);
    var selector = elt && elt.getAttribute && elt.getAttribute("data-remove-after-swap");
    if (selector) document.querySelectorAll(selector).forEach(function (el) { el.remove(); });
  });

  /* ---------- browsers (results, artifacts): the highlight follows the previewed row ---------- */
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest('.browser-list a[hx-target="#preview-pane"]');
    if (!link) return;
    var row = link.closest("tr");
    row.closest("tbody").querySelectorAll("tr.selected").forEach(function (tr) {
      tr.classList.remove("selected");
      tr.removeAttribute("aria-current");
    });
    row.classList.add("selected");
    row.setAttribute("aria-current", "true");
  });

  /* ---------- copy buttons ---------- */
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    function done() {
      button.classList.add("copied");
      button.setAttribute("title", "Copied");
      window.setTimeout(function () { button.classList.remove("copied"); button.setAttribute("title", "Copy"); }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else { fallbackCopy(text); done(); }
  });
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    area.remove();
  }

  /* ---------- keyboard: / searches, j/k move through a list, Enter opens, ? explains ---------- */
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }
  function keyRows() {
    var list = document.querySelector("[data-keynav]");
    if (!list) return [];
    return Array.prototype.filter.call(list.children, function (row) {
      return row.querySelector && row.querySelector("a[href]");
    });
  }
  var current = -1;
  function mark(rows, index) {
    rows.forEach(function (row) { row.classList.remove("kb-current"); });
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows[current].classList.add("kb-current");
    rows[current].scrollIntoView({ block: "nearest" });
  }
  function cheatSheet() {
    var dialog = document.getElementById("kb-help");
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "kb-help";
      dialog.className = "kb-help";
      var rows = [["/", "search runs, steps and error codes"], ["j / k", "next / previous row of the list"],
        ["Enter", "open the highlighted row"], ["+ / − / 0", "zoom the graph in, out, fit (graph focused)"],
        ["arrows", "pan the graph (graph focused)"], ["?", "this help"], ["Esc", "close"]];
      var h = document.createElement("h2"); h.textContent = "Keyboard shortcuts"; dialog.appendChild(h);
      var dl = document.createElement("dl");
      rows.forEach(function (r) {
        var dt = document.createElement("dt"), kbd = document.createElement("kbd"), dd = document.createElement("dd");
        kbd.textContent = r[0]; dt.appendChild(kbd); dd.textContent = r[1]; dl.appendChild(dt); dl.appendChild(dd);
      });
      dialog.appendChild(dl);
      var close = document.createElement("button");
      close.type = "button"; close.className = "btn btn-sm"; close.textContent = "Close";
      close.addEventListener("click", function () { dialog.close(); });
      dialog.appendChild(close);
      document.body.appendChild(dialog);
    }
    if (!dialog.open) dialog.showModal();
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.target.closest && event.target.closest("[data-graph-view]")) return; // the graph has its own keys
    var rows;
    if (event.key === "/") {
      var box = document.getElementById("top-q");
      if (box) { event.preventDefault(); box.focus(); box.select(); }
    } else if (event.key === "?") {
      event.preventDefault(); cheatSheet();
    } else if (event.key === "j" || event.key === "k") {
      rows = keyRows();
      if (!rows.length) return;
      event.preventDefault();
      mark(rows, current < 0 || !rows[current] || !rows[current].classList.contains("kb-current")
        ? (event.key === "j" ? 0 : rows.length - 1) : current + (event.key === "j" ? 1 : -1));
    } else if (event.key === "Enter") {
      rows = keyRows();
      var row = rows[current];
      if (row && row.classList.contains("kb-current")) {
        event.preventDefault();
        row.querySelector("a[href]").click();
      }
    }
  });

  /* ---------- times: relative, in the viewer's zone or UTC, full on hover ---------- */
  var UTC_KEY = "workflow.times.utc";
  function inUtc() {
    try { return window.localStorage.getItem(UTC_KEY) === "1"; } catch (e) { return false; }
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function parts(date, utc) {
    return utc
      ? { y: date.getUTCFullYear(), mo: date.getUTCMonth(), d: date.getUTCDate(), h: date.getUTCHours(), mi: date.getUTCMinutes(), s: date.getUTCSeconds() }
      : { y: date.getFullYear(), mo: date.getMonth(), d: date.getDate(), h: date.getHours(), mi: date.getMinutes(), s: date.getSeconds() };
  }
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function zoneName(utc) {
    if (utc) return "UTC";
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; } catch (e) { return "local time"; }
  }
  function describe(date, now, utc) {
    var p = parts(date, utc), n = parts(now, utc);
    var clock = pad(p.h) + ":" + pad(p.mi) + ":" + pad(p.s);
    var ago = Math.round((now - date) / 1000);
    var text;
    if (ago >= 0 && ago < 45) text = ago < 5 ? "just now" : ago + " s ago";
    else if (ago >= 45 && ago < 3600) text = Math.round(ago / 60) + " min ago";
    else if (ago < 0 && ago > -3600) text = "in " + Math.max(1, Math.round(-ago / 60)) + " min";
    else if (p.y === n.y && p.mo === n.mo && p.d === n.d) text = clock;
    else text = MONTHS[p.mo] + " " + p.d + (p.y !== n.y ? " " + p.y : "") + ", " + pad(p.h) + ":" + pad(p.mi);
    var full = p.y + "-" + pad(p.mo + 1) + "-" + pad(p.d) + " " + clock + " " + zoneName(utc);
    return { text: text, full: full };
  }
  function renderTimes(scope) {
    var utc = inUtc(), now = new Date();
    (scope && scope.querySelectorAll ? scope : document).querySelectorAll("time[data-when]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      var d = describe(date, now, utc);
      if (el.textContent !== d.text) el.textContent = d.text;
      el.title = d.full;
    });
    document.querySelectorAll("[data-time-utc-toggle]").forEach(function (button) {
      button.textContent = utc ? "Show times in " + zoneName(false) : "Show times in UTC";
      button.setAttribute("aria-pressed", utc ? "true" : "false");
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-time-utc-toggle]");
    if (!button) return;
    try { window.localStorage.setItem(UTC_KEY, inUtc() ? "0" : "1"); } catch (e) { /* private mode */ }
    renderTimes();
  });
  document.addEventListener("htmx:load", function (event) { renderTimes(event.detail && event.detail.elt); });
  document.addEventListener("htmx:afterSettle", function () { renderTimes(); });
  window.setInterval(function () { if (document.visibilityState === "visible") renderTimes(); }, 20000);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { renderTimes(); });
  else renderTimes();

  /* ---------- the run graph: fit, zoom, pan, minimap, jump ---------- */
  var MIN_READABLE = 0.55; // below this scale labels are unreadable: open at READABLE instead
  var READABLE = 0.8;
  var MAX_SCALE = 3;

  // Hiding the minimap is a preference, kept for every run page in this browser.
  function minimapOff() {
    try { return window.localStorage.getItem("workflow.minimap") === "off"; } catch (e) { return false; }
  }

  function GraphView(root) {
    this.root = root;
    this.canvas = root.querySelector(".graph-canvas");
    this.minimap = root.querySelector("[data-graph-minimap]");
    this.mini = this.minimap && this.minimap.querySelector(".graph-minimap-view");
    this.view = null; // {x, y, scale}: graph coordinates of the top-left corner, pixels per unit
    this.pointers = {};
    this.moved = false;
    this.bind();
    this.adopt(true);
  }

  GraphView.prototype.svg = function () {
    return this.canvas.querySelector("svg.workflow-graph");
  };

  GraphView.prototype.size = function () {
    var svg = this.svg();
    if (!svg) return null;
    if (!svg.hasAttribute("data-w")) {
      var box = (svg.getAttribute("viewBox") || "0 0 0 0").split(/\s+/).map(Number);
      svg.setAttribute("data-w", String(box[2]));
      svg.setAttribute("data-h", String(box[3]));
    }
    return { w: Number(svg.getAttribute("data-w")), h: Number(svg.getAttribute("data-h")) };
  };

  GraphView.prototype.port = function () {
    return { w: this.canvas.clientWidth || 1, h: this.canvas.clientHeight || 1 };
  };

  GraphView.prototype.fitScale = function () {
    var s = this.size(), p = this.port();
    if (!s || !s.w || !s.h) return 1;
    return Math.min(p.w / s.w, p.h / s.h, 1);
  };

  /* A new SVG arrived (first load or a live update): keep the operator's view if there is one. */
  GraphView.prototype.adopt = function (first) {
    var svg = this.svg();
    if (!svg) return;
    svg.setAttribute("width", "100%");
    svg.setAttribute("height", "100%");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    this.size();
    if (first) this.shrinkToGraph();
    if (first || !this.view) this.initial();
    this.apply();
    this.cloneMinimap();
  };

  /* A short graph (a pipeline, a few steps) gets a short canvas instead of a tall empty one. */
  GraphView.prototype.shrinkToGraph = function () {
    var s = this.size(), p = this.port();
    var k = Math.min(p.w / s.w, 1);
    if (k >= MIN_READABLE && s.h * k + 24 < p.h) {
      this.canvas.style.height = Math.max(200, Math.ceil(s.h * k + 24)) + "px";
    } else if (k < MIN_READABLE && s.h * READABLE + 24 < p.h) {
      this.canvas.style.height = Math.max(200, Math.ceil(s.h * READABLE + 24)) + "px";
    }
  };

  GraphView.prototype.initial = function () {
    var s = this.size(), p = this.port();
    var focusId = this.root.getAttribute("data-focus");
    var node = focusId ? this.nodeFor(focusId) : null;
    var fit = this.fitScale();
    if (node) {
      this.view = { x: 0, y: 0, scale: Math.max(fit, READABLE) };
      this.centreOn(node, false);
      return;
    }
    if (fit >= MIN_READABLE) {
      this.view = { x: (s.w - p.w / fit) / 2, y: (s.h - p.h / fit) / 2, scale: fit };
    } else {
      // Too big to read when fitted: start with the roots (left edge), vertically centred.
      this.view = { x: 0, y: (s.h - p.h / READABLE) / 2, scale: READABLE };
    }
  };

  GraphView.prototype.nodeFor = function (id) {
    var svg = this.svg();
    if (!svg || !id) return null;
    var quoted = window.CSS && CSS.escape ? CSS.escape(id) : id.replace(/"/g, '\\"');
    return svg.querySelector('a.node[data-step-id="' + quoted + '"]') ||
      svg.querySelector('a.node[data-group-key="' + quoted + '"]');
  };

  GraphView.prototype.centreOn = function (node, flash) {
    var rect = node.querySelector("rect");
    if (!rect) return;
    var p = this.port();
    var cx = Number(rect.getAttribute("x")) + Number(rect.getAttribute("width")) / 2;
    var cy = Number(rect.getAttribute("y")) + Number(rect.getAttribute("height")) / 2;
    if (this.view.scale < MIN_READABLE) this.view.scale = READABLE;
    this.view.x = cx - p.w / this.view.scale / 2;
    this.view.y = cy - p.h / this.view.scale / 2;
    this.apply();
    if (flash) {
      node.classList.add("flash");
      window.setTimeout(function () { node.classList.remove("flash"); }, 1600);
    }
  };

  GraphView.prototype.apply = function () {
    var svg = this.svg();
    if (!svg || !this.view) return;
    var p = this.port(), v = this.view;
    svg.setAttribute("viewBox", [v.x, v.y, p.w / v.scale, p.h / v.scale].map(function (n) {
      return Math.round(n * 10) / 10;
    }).join(" "));
    this.root.setAttribute("data-scale", String(Math.round(v.scale * 1000) / 1000));
    this.drawMinimap();
  };

  GraphView.prototype.zoom = function (factor, px, py) {
    var p = this.port(), v = this.view;
    if (!v) return;
    var lo = Math.min(this.fitScale(), 0.1);
    var next = Math.max(lo, Math.min(MAX_SCALE, v.scale * factor));
    if (px === undefined) { px = p.w / 2; py = p.h / 2; }
    // Keep the graph point under the cursor (or the centre) where it is.
    var gx = v.x + px / v.scale, gy = v.y + py / v.scale;
    v.x = gx - px / next;
    v.y = gy - py / next;
    v.scale = next;
    this.apply();
  };

  GraphView.prototype.fit = function () {
    var s = this.size(), p = this.port(), k = this.fitScale();
    this.view = { x: (s.w - p.w / k) / 2, y: (s.h - p.h / k) / 2, scale: k };
    this.apply();
  };

  GraphView.prototype.pan = function (dx, dy) {
    this.view.x += dx / this.view.scale;
    this.view.y += dy / this.view.scale;
    this.apply();
  };

  GraphView.prototype.cloneMinimap = function () {
    if (!this.minimap) return;
    var svg = this.svg();
    var old = this.minimap.querySelector("svg");
    if (old) old.remove();
    if (!svg) return;
    // A plain picture: boxes and edges only, no links, ids or labels (nothing to click or find twice).
    var ns = "http://www.w3.org/2000/svg", s = this.size();
    var copy = document.createElementNS(ns, "svg");
    copy.setAttribute("viewBox", "0 0 " + s.w + " " + s.h);
    copy.setAttribute("class", "minimap-graph");
    copy.setAttribute("aria-hidden", "true");
    svg.querySelectorAll("path.edge").forEach(function (edge) {
      var p = document.createElementNS(ns, "path");
      p.setAttribute("d", edge.getAttribute("d"));
      p.setAttribute("class", "mini-edge");
      copy.appendChild(p);
    });
    svg.querySelectorAll("a.node").forEach(function (node) {
      var rect = node.querySelector("rect");
      if (!rect) return;
      var r = rect.cloneNode(false);
      var state = (node.getAttribute("class") || "").match(/state-[a-z]+/);
      r.setAttribute("class", "mini-node " + (state ? state[0] : ""));
      copy.appendChild(r);
    });
    this.minimap.insertBefore(copy, this.mini);
    this.drawMinimap();
  };

  GraphView.prototype.drawMinimap = function () {
    if (!this.minimap || !this.mini || !this.view) return;
    var s = this.size(), p = this.port(), v = this.view;
    var big = s.w * v.scale > p.w + 1 || s.h * v.scale > p.h + 1;
    var toggle = (this.root.closest(".graph-card") || document).querySelector('[data-graph-action="minimap"]');
    if (toggle) {
      toggle.hidden = !big;
      toggle.setAttribute("aria-pressed", String(!minimapOff()));
    }
    big = big && !minimapOff(); // the operator may hide it: it covers the canvas's lower-right corner
    this.minimap.hidden = !big;
    if (!big) return;
    var mw = this.minimap.clientWidth, mh = this.minimap.clientHeight;
    var k = Math.min(mw / s.w, mh / s.h);
    var ox = (mw - s.w * k) / 2, oy = (mh - s.h * k) / 2;
    this.miniScale = { k: k, ox: ox, oy: oy };
    var st = this.mini.style;
    st.left = (ox + v.x * k) + "px";
    st.top = (oy + v.y * k) + "px";
    st.width = Math.max(4, p.w / v.scale * k) + "px";
    st.height = Math.max(4, p.h / v.scale * k) + "px";
  };

  GraphView.prototype.miniTo = function (event) {
    var m = this.miniScale;
    if (!m) return;
    var r = this.minimap.getBoundingClientRect(), p = this.port(), v = this.view;
    var gx = (event.clientX - r.left - m.ox) / m.k, gy = (event.clientY - r.top - m.oy) / m.k;
    v.x = gx - p.w / v.scale / 2;
    v.y = gy - p.h / v.scale / 2;
    this.apply();
  };

  GraphView.prototype.bind = function () {
    var self = this, canvas = this.canvas;

    canvas.addEventListener("wheel", function (event) {
      if (!self.view) return;
      event.preventDefault();
      var r = canvas.getBoundingClientRect();
      var factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015));
      self.zoom(factor, event.clientX - r.left, event.clientY - r.top);
    }, { passive: false });

    canvas.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 && event.pointerType === "mouse") return;
      self.pointers[event.pointerId] = { x: event.clientX, y: event.clientY };
      self.moved = false;
      self.pinch = null;
    });
    canvas.addEventListener("pointermove", function (event) {
      var last = self.pointers[event.pointerId];
      if (!last || !self.view) return;
      var ids = Object.keys(self.pointers);
      if (ids.length === 2) {
        var a = self.pointers[ids[0]], b = self.pointers[ids[1]];
        var before = Math.hypot(a.x - b.x, a.y - b.y);
        last.x = event.clientX; last.y = event.clientY;
        var after = Math.hypot(a.x - b.x, a.y - b.y);
        var r = canvas.getBoundingClientRect();
        if (before > 0) self.zoom(after / before, (a.x + b.x) / 2 - r.left, (a.y + b.y) / 2 - r.top);
        self.moved = true;
        return;
      }
      var dx = event.clientX - last.x, dy = event.clientY - last.y;
      if (!self.moved && Math.abs(dx) + Math.abs(dy) < 5) return;
      if (!self.moved) {
        self.moved = true;
        try { canvas.setPointerCapture(event.pointerId); } catch (e) { /* pointer already gone */ }
        canvas.classList.add("dragging");
      }
      last.x = event.clientX; last.y = event.clientY;
      self.pan(-dx, -dy);
    });
    function release(event) {
      delete self.pointers[event.pointerId];
      canvas.classList.remove("dragging");
    }
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    // A drag that ends over a node must not open it.
    canvas.addEventListener("click", function (event) {
      if (self.moved) { event.preventDefault(); event.stopPropagation(); self.moved = false; }
    }, true);

    canvas.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || !self.view) return;
      var step = 80, handled = true;
      switch (event.key) {
        case "+": case "=": self.zoom(1.25); break;
        case "-": case "_": self.zoom(0.8); break;
        case "0": self.fit(); break;
        case "1": self.zoom(1 / self.view.scale); break;
        case "ArrowLeft": self.pan(-step, 0); break;
        case "ArrowRight": self.pan(step, 0); break;
        case "ArrowUp": self.pan(0, -step); break;
        case "ArrowDown": self.pan(0, step); break;
        default: handled = false;
      }
      if (handled) event.preventDefault();
    });

    if (this.minimap) {
      var dragging = false;
      this.minimap.addEventListener("pointerdown", function (event) {
        dragging = true;
        try { self.minimap.setPointerCapture(event.pointerId); } catch (e) { /* ignore */ }
        self.miniTo(event);
      });
      this.minimap.addEventListener("pointermove", function (event) { if (dragging) self.miniTo(event); });
      this.minimap.addEventListener("pointerup", function () { dragging = false; });
    }

    var card = this.root.closest(".graph-card") || document;
    card.querySelectorAll("[data-graph-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var action = button.getAttribute("data-graph-action");
        if (action === "zoom-in") self.zoom(1.25);
        else if (action === "zoom-out") self.zoom(0.8);
        else if (action === "fit") self.fit();
        else if (action === "actual") self.zoom(1 / self.view.scale);
        else if (action === "minimap") {
          try { window.localStorage.setItem("workflow.minimap", minimapOff() ? "on" : "off"); } catch (e) { /* private mode */ }
          self.drawMinimap();
        }
      });
    });

    var jump = card.querySelector("#graph-jump");
    if (jump) {
      jump.addEventListener("submit", function (event) {
        var input = jump.querySelector("input[name=step]");
        var id = input ? input.value.trim() : "";
        var node = self.nodeFor(id);
        if (!id || !node || !node.hasAttribute("data-step-id")) return; // the server finds it
        event.preventDefault();
        self.centreOn(node, true);
        node.dispatchEvent(new MouseEvent("click", { bubbles: true, cancelable: true }));
      });
    }

    window.addEventListener("resize", function () { self.apply(); });
  };

  // A live update put a fresh SVG (not yet measured) into the canvas: give it the kept view.
  function swapped() {
    document.querySelectorAll("[data-graph-view]").forEach(function (root) {
      var view = root.__graphView, svg = view && view.svg();
      if (svg && !svg.hasAttribute("data-w")) view.adopt(false);
    });
  }

  function init(scope) {
    (scope || document).querySelectorAll("[data-graph-view]").forEach(function (root) {
      if (!root.__graphView) root.__graphView = new GraphView(root);
    });
  }

  document.addEventListener("htmx:afterSettle", swapped);
  document.addEventListener("htmx:oobAfterSwap", swapped);
  document.addEventListener("htmx:load", function (event) { init(event.detail && event.detail.elt); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
})();

/* ---------- events: dropdown filters and grouped repeats ---------- */
// details[data-dropdown] is a menu (the events console's multi-select filters): a click outside
// or Escape closes it, and opening one closes the others. [data-group-toggle="g1"] shows or hides
// the rows [data-member-of="g1"] folded under a "× n" badge; what is open stays open across live updates.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var inside = event.target.closest && event.target.closest("details[data-dropdown]");
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (d) {
      if (d !== inside) d.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (d) {
      d.open = false;
      var summary = d.querySelector("summary");
      if (summary && d.contains(document.activeElement)) summary.focus();
    });
  });

  // A multi-select's closed face says what is picked: summary[data-placeholder] when nothing is.
  document.addEventListener("change", function (event) {
    var menu = event.target.closest && event.target.closest("details[data-dropdown]");
    var summary = menu && menu.querySelector("summary[data-placeholder]");
    if (!summary) return;
    var picked = [];
    menu.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) { picked.push(box.value); });
    summary.textContent = picked.length ? picked.join(", ") : summary.getAttribute("data-placeholder");
  });

  var expanded = {};
  function show(id, open) {
    document.querySelectorAll('[data-member-of="' + id + '"]').forEach(function (row) { row.hidden = !open; });
    document.querySelectorAll('[data-group-toggle="' + id + '"]').forEach(function (b) {
      b.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-group-toggle]");
    if (!button) return;
    var id = button.getAttribute("data-group-toggle");
    var open = button.getAttribute("aria-expanded") !== "true";
    if (open) expanded[id] = true; else delete expanded[id];
    show(id, open);
  });
  function reapply() { Object.keys(expanded).forEach(function (id) { show(id, true); }); }
  document.addEventListener("htmx:afterSettle", reapply);
  document.addEventListener("htmx:oobAfterSwap", reapply);
})();

/* ---------- the run's attempt timeline: zoom, brush, highlight a step's attempts ---------- */
// [data-timeline] holds an SVG of worker lanes drawn in x units 0..1000 over the whole run
// (data-span-seconds) and an overview strip of the same bars. Dragging on the strip or on the
// lanes zooms to that range (the lanes' viewBox changes; the bars are not redrawn); dragging the
// strip's window pans; double-click, "Reset zoom" or 0 shows the whole run again. The view is
// kept in seconds since the run's first claim, so a live update (a longer span) keeps it.
(function () {
  "use strict";

  var views = {}; // run url -> [from seconds, to seconds]
  var X = 1000;

  function fmt(total) {
    if (total <= 0) return "0 s";
    if (total < 1) return Math.round(total * 1000) + " ms";
    if (total < 59.5) return (total < 10 ? total.toFixed(1) : Math.round(total)) + " s";
    total = Math.round(total);
    var m = Math.floor(total / 60), s = total % 60;
    if (m < 60) return m + " min" + (s ? " " + s + " s" : "");
    var h = Math.floor(m / 60);
    return h + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  }

  function Timeline(root) {
    var self = this;
    this.root = root;
    this.key = root.getAttribute("data-run-url") || "";
    this.span = parseFloat(root.getAttribute("data-span-seconds")) || 0.001;
    this.lanes = root.querySelector("[data-tl-lanes]");
    this.overview = root.querySelector("[data-tl-overview]");
    this.brush = root.querySelector("[data-tl-brush]");
    this.axis = root.querySelector("[data-tl-axis]");
    this.reset = root.querySelector("[data-tl-reset]");
    this.note = root.querySelector("[data-tl-range]");
    this.height = parseFloat((this.lanes.getAttribute("viewBox") || "0 0 1000 1").split(" ")[3]) || 1;
    var kept = views[this.key];
    this.x0 = 0; this.x1 = X;
    if (kept) { this.x0 = this.toX(kept[0]); this.x1 = Math.min(this.toX(kept[1]), X); }
    this.apply();
    this.wireOverview();
    this.wireLanes();
    this.wireHighlight();
    if (this.reset) this.reset.addEventListener("click", function () { self.setView(0, X); });
  }

  Timeline.prototype.toX = function (seconds) { return X * seconds / this.span; };
  Timeline.prototype.toSeconds = function (x) { return this.span * x / X; };

  Timeline.prototype.setView = function (x0, x1) {
    var min = 1; // at most x1000
    x0 = Math.max(0, Math.min(x0, X)); x1 = Math.max(0, Math.min(x1, X));
    if (x1 - x0 < min) { var mid = (x0 + x1) / 2; x0 = Math.max(0, mid - min / 2); x1 = Math.min(X, x0 + min); }
    this.x0 = x0; this.x1 = x1;
    var whole = x0 <= 0 && x1 >= X;
    if (whole) delete views[this.key]; else views[this.key] = [this.toSeconds(x0), this.toSeconds(x1)];
    this.apply();
  };

  Timeline.prototype.apply = function () {
    var w = this.x1 - this.x0, whole = this.x0 <= 0 && this.x1 >= X;
    this.lanes.setAttribute("viewBox", this.x0 + " 0 " + w + " " + this.height);
    if (this.brush) { this.brush.setAttribute("x", this.x0); this.brush.setAttribute("width", w); }
    if (this.axis) {
      var html = [];
      for (var k = 0; k <= 4; k++) {
        var x = this.x0 + w * k / 4;
        html.push([k * 25, "+" + fmt(this.toSeconds(x)), k === 0 ? "first" : k === 4 ? "last" : ""]);
      }
      while (this.axis.firstChild) this.axis.removeChild(this.axis.firstChild);
      html.forEach(function (t) {
        var span = document.createElement("span");
        span.className = "tl-tick " + t[2];
        span.style.left = t[0] + "%";
        span.textContent = t[1];
        this.axis.appendChild(span);
      }, this);
    }
    var zoom = X / w;
    var text = whole ? "whole run" : "+" + fmt(this.toSeconds(this.x0)) + " to +" + fmt(this.toSeconds(this.x1)) +
      " (×" + (zoom < 10 ? zoom.toFixed(1) : Math.round(zoom)) + ")";
    if (this.note) this.note.textContent = text;
    if (this.reset) this.reset.disabled = whole;
    this.root.classList.toggle("zoomed", !whole);
    if (this.overview) {
      this.overview.setAttribute("aria-valuenow", Math.round(100 * this.x0 / X));
      this.overview.setAttribute("aria-valuetext", text);
    }
  };

  // x in 0..1000 of a pointer over an element that shows [from, to] of the run
  function xAt(el, clientX, from, to) {
    var r = el.getBoundingClientRect();
    var f = r.width ? (clientX - r.left) / r.width : 0;
    return from + Math.max(0, Math.min(1, f)) * (to - from);
  }

  Timeline.prototype.wireOverview = function () {
    var self = this, ov = this.overview;
    if (!ov) return;
    var drag = null;
    ov.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) return;
      var x = xAt(ov, event.clientX, 0, X);
      var whole = self.x0 <= 0 && self.x1 >= X;
      drag = (!whole && x >= self.x0 && x <= self.x1) ? { pan: true, start: x, x0: self.x0, x1: self.x1 } : { pan: false, start: x };
      ov.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    ov.addEventListener("pointermove", function (event) {
      if (!drag) return;
      var x = xAt(ov, event.clientX, 0, X);
      if (drag.pan) {
        var d = Math.max(-drag.x0, Math.min(X - drag.x1, x - drag.start));
        self.setView(drag.x0 + d, drag.x1 + d);
      } else if (Math.abs(x - drag.start) > 2) {
        self.setView(Math.min(x, drag.start), Math.max(x, drag.start));
      }
    });
    function end() { drag = null; }
    ov.addEventListener("pointerup", end);
    ov.addEventListener("pointercancel", end);
    ov.addEventListener("dblclick", function () { self.setView(0, X); });
    ov.addEventListener("keydown", function (event) {
      var w = self.x1 - self.x0, mid = (self.x0 + self.x1) / 2, k = event.key;
      if (k === "ArrowLeft" || k === "ArrowRight") {
        var d = (k === "ArrowLeft" ? -1 : 1) * w / 10;
        d = Math.max(-self.x0, Math.min(X - self.x1, d));
        self.setView(self.x0 + d, self.x1 + d);
      } else if (k === "+" || k === "=") self.setView(mid - w / 4, mid + w / 4);
      else if (k === "-" || k === "_") self.setView(mid - w, mid + w);
      else if (k === "0" || k === "Home") self.setView(0, X);
      else return;
      event.preventDefault();
    });
  };

  Timeline.prototype.wireLanes = function () {
    var self = this, svg = this.lanes, drag = null, dragged = false;
    var ns = "http://www.w3.org/2000/svg";
    svg.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || event.pointerType === "touch") return; // touch scrolls the page; the strip zooms
      drag = { start: xAt(svg, event.clientX, self.x0, self.x1), px: event.clientX, sel: null };
      dragged = false;
    });
    svg.addEventListener("pointermove", function (event) {
      if (!drag) return;
      if (!drag.sel && Math.abs(event.clientX - drag.px) < 5) return;
      var x = xAt(svg, event.clientX, self.x0, self.x1);
      if (!drag.sel) {
        drag.sel = document.createElementNS(ns, "rect");
        drag.sel.setAttribute("class", "tl-sel");
        drag.sel.setAttribute("y", "0");
        drag.sel.setAttribute("height", String(self.height));
        svg.appendChild(drag.sel);
        svg.setPointerCapture(event.pointerId);
      }
      drag.sel.setAttribute("x", String(Math.min(x, drag.start)));
      drag.sel.setAttribute("width", String(Math.abs(x - drag.start)));
    });
    svg.addEventListener("pointerup", function (event) {
      if (!drag) return;
      if (drag.sel) {
        var x = xAt(svg, event.clientX, self.x0, self.x1);
        drag.sel.remove();
        dragged = true;
        self.setView(Math.min(x, drag.start), Math.max(x, drag.start));
      }
      drag = null;
    });
    svg.addEventListener("pointercancel", function () { if (drag && drag.sel) drag.sel.remove(); drag = null; });
    // A drag that ended over a bar is a zoom, not a click on the bar's link.
    svg.addEventListener("click", function (event) {
      if (!dragged) return;
      dragged = false;
      event.preventDefault();
      event.stopPropagation();
    }, true);
    svg.addEventListener("dblclick", function () { self.setView(0, X); });
  };

  Timeline.prototype.wireHighlight = function () {
    var root = this.root, lit = null;
    function light(step) {
      if (step === lit) return;
      root.querySelectorAll(".hl").forEach(function (el) { el.classList.remove("hl"); });
      root.classList.toggle("hl", !!step);
      lit = step;
      if (!step) return;
      root.querySelectorAll("[data-step]").forEach(function (el) {
        if (el.getAttribute("data-step") === step && el.tagName.toLowerCase() !== "a") el.classList.add("hl");
      });
    }
    function stepOf(target) {
      var a = target.closest && target.closest("a[data-step]");
      return a ? a.getAttribute("data-step") : null;
    }
    this.lanes.addEventListener("mouseover", function (event) { light(stepOf(event.target)); });
    this.lanes.addEventListener("mouseleave", function () { light(null); });
    this.lanes.addEventListener("focusin", function (event) { light(stepOf(event.target)); });
    this.lanes.addEventListener("focusout", function () { light(null); });
  };

  function init(scope) {
    var found = [];
    if (scope && scope.matches && scope.matches("[data-timeline]")) found.push(scope);
    (scope || document).querySelectorAll("[data-timeline]").forEach(function (el) { found.push(el); });
    found.forEach(function (root) { if (!root.__timeline) root.__timeline = new Timeline(root); });
  }
  document.addEventListener("htmx:load", function (event) { init(event.detail && event.detail.elt); });
  document.addEventListener("htmx:oobAfterSwap", function () { init(); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { init(); });
  else init();
})();
