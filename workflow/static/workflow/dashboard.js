/* Dashboard behaviour that would otherwise need inline script or eval, both of which the
   Content-Security-Policy forbids (htmx runs with allowEval=false). Declared with data-*:
     data-poll-visible                 a poll skips its beat while the tab is hidden
     data-poll-unless="selector"       ... and while the selector matches an element
     data-newer-than="selector"        sends newer_than = the first match's data-id (else data-baseline)
     data-remove-after-swap="selector" removes the matching element after this element's swap
     .toast-close                      dismisses its toast
   The htmx history cache (dashboard HTML in localStorage) is cleared at logout and on the
   login page, so the next person at this browser cannot read it. */
(function () {
  "use strict";
  var HISTORY_KEY = "htmx-history-cache";

  function forgetHistory() {
    try { window.localStorage.removeItem(HISTORY_KEY); } catch (e) { /* storage disabled */ }
  }

  function sourceOf(evt) {
    return (evt.detail && evt.detail.requestConfig && evt.detail.requestConfig.elt) || evt.detail.elt || evt.target;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!elt || !elt.dataset) return;
    if (elt.hasAttribute("data-poll-visible") && document.visibilityState !== "visible") {
      evt.preventDefault();
      return;
    }
    var unless = elt.getAttribute("data-poll-unless");
    if (unless && document.querySelector(unless)) evt.preventDefault();
  });

  document.addEventListener("htmx:configRequest", function (evt) {
    var elt = evt.detail.elt;
    var selector = elt && elt.getAttribute && elt.getAttribute("data-newer-than");
    if (!selector) return;
    var newest = document.querySelector(selector);
    evt.detail.parameters.newer_than = (newest && newest.dataset.id) || elt.getAttribute("data-baseline") || "0";
  });

  document.addEventListener("htmx:afterSwap", function (evt) {
    var elt = sourceOf(evt);
    var selector = elt && elt.getAttribute && elt.getAttribute("data-remove-after-swap");
    if (!selector) return;
    var gone = document.querySelector(selector);
    if (gone) gone.remove();
  });

  document.addEventListener("click", function (evt) {
    var close = evt.target.closest && evt.target.closest(".toast-close");
    if (close) {
      var toast = close.closest(".toast");
      if (toast) toast.remove();
    }
  });

  document.addEventListener("submit", function (evt) {
    if (evt.target.matches && evt.target.matches("form[data-logout]")) forgetHistory();
  });

  if (document.body && document.body.classList.contains("login-page")) {
    forgetHistory();
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      if (document.body.classList.contains("login-page")) forgetHistory();
    });
  }
})();
