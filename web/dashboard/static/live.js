// Follows a live run: appends server-rendered log lines, swaps the status block, and reloads
// the diff when the run ends. Everything arrives as HTML escaped by the server's templates.
(function () {
  "use strict";
  var log = document.getElementById("event-log");
  if (!log || !log.dataset.live || !window.EventSource) return;
  var indicator = document.getElementById("live-indicator");
  var source = new EventSource(log.dataset.live);
  if (indicator) indicator.hidden = false;

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  source.addEventListener("log", function (e) {
    if (!e.data) return;
    var follow = nearBottom();
    log.insertAdjacentHTML("beforeend", e.data);
    var empty = document.getElementById("log-empty");
    if (empty) empty.remove();
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  });

  source.addEventListener("status", function (e) {
    var old = document.getElementById("task-status");
    if (!old) return;
    var box = document.createElement("div");
    box.innerHTML = e.data;
    var fresh = box.querySelector("#task-status");
    if (!fresh) return;
    old.replaceWith(fresh);
    if (window.htmx) window.htmx.process(fresh);
  });

  source.addEventListener("newrun", function (e) {
    source.close();
    window.location.assign(e.data);
  });

  source.addEventListener("end", function () {
    source.close();
    if (indicator) indicator.hidden = true;
    document.body.dispatchEvent(new CustomEvent("run-ended"));
  });
})();
