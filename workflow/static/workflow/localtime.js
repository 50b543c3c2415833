// Show <time datetime="..." data-local> in the viewer's own time zone (the server renders UTC).
(function () {
  "use strict";
  function localise(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.title = el.textContent;
        el.textContent = when.toLocaleString(undefined, {
          year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
          second: "2-digit", timeZoneName: "short",
        });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
})();
