// gpumarket web UI: live logs over server-sent events and the rent
// form's price preview. Everything works without it, except live updates.
"use strict";
(function () {
  function follow(pre) {
    var url = pre.dataset.stream + "?after=" + encodeURIComponent(pre.dataset.after || "0");
    var es = new EventSource(url);
    var state = document.getElementById("state");
    var reason = document.getElementById("reason");
    var live = document.getElementById("live");
    es.addEventListener("log", function (ev) {
      var c = JSON.parse(ev.data);
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      var span = document.createElement("span");
      if (c.stream === "stderr") span.className = "stderr";
      span.textContent = c.data; // text, never HTML
      pre.appendChild(span);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("state", function (ev) {
      var s = JSON.parse(ev.data);
      if (state) { state.textContent = s.state; state.className = "state " + s.state; }
      if (reason) reason.textContent = s.reason || "";
      var box = document.getElementById("charts");
      if (box && !s.active) box.dataset.active = "false";
      if (!s.active || s.state === "stopping") {
        var stop = document.getElementById("stop-form");
        if (stop) stop.remove();
      }
    });
    es.addEventListener("end", function () {
      es.close();
      if (live) live.textContent = "ended";
    });
    es.addEventListener("failure", function (ev) {
      es.close();
      if (live) live.textContent = JSON.parse(ev.data).message;
    });
  }

  // charts reloads the metrics fragment every few seconds while the
  // instance runs, and once more after it ends.
  function charts(box) {
    var busy = false;
    function load() {
      if (busy) return;
      busy = true;
      fetch(box.dataset.src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) box.innerHTML = html; })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    var timer = setInterval(function () {
      load();
      if (box.dataset.active !== "true") clearInterval(timer);
    }, 3000);
  }

  // priceFor multiplies a decimal token price by n without floats.
  function priceFor(price, n) {
    var parts = price.split(".");
    var micro = BigInt(parts[0]) * 1000000n + BigInt(((parts[1] || "") + "000000").slice(0, 6));
    var t = micro * BigInt(n);
    var frac = (t % 1000000n).toString().padStart(6, "0").replace(/0+$/, "");
    while (frac.length < 2) frac += "0";
    return (t / 1000000n).toString() + "." + frac;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("logs");
    if (pre && pre.dataset.active === "true" && window.EventSource) follow(pre);
    var box = document.getElementById("charts");
    if (box && box.dataset.active === "true" && window.fetch) charts(box);
    var form = document.getElementById("rent-form");
    var gpus = document.getElementById("gpus");
    var out = document.getElementById("price-hour");
    if (form && gpus && out) {
      gpus.addEventListener("input", function () {
        var n = parseInt(gpus.value, 10);
        if (n >= 1 && n <= 1000) out.textContent = priceFor(form.dataset.price, n);
      });
    }
  });
})();
