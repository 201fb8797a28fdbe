// floodgate console: refreshes the server-rendered sections in place, and
// runs lookups without leaving the page. Without JavaScript the page works
// the same, reloaded by hand.
"use strict";
(function () {
  const every = 2000;
  const sections = ["status", "top", "lookup-result"];

  // swap replaces the live sections with those of a freshly rendered page.
  function swap(html) {
    const doc = new DOMParser().parseFromString(html, "text/html");
    for (const id of sections) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
    const at = doc.getElementById("updated"), old = document.getElementById("updated");
    if (at && old) old.replaceWith(at);
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }

  async function refresh() {
    try {
      const resp = await fetch(location.pathname + location.search, { cache: "no-store" });
      if (resp.ok) swap(await resp.text());
    } catch (e) {
      // The next refresh tries again; the page keeps what it shows.
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("live").hidden = false;
    const form = document.getElementById("lookup-form");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      const q = new URLSearchParams(new FormData(form));
      const w = new URLSearchParams(location.search).get("window");
      if (w) q.set("window", w);
      history.pushState(null, "", "/?" + q.toString() + "#lookup");
      refresh();
    });
    setInterval(refresh, every);
  });
})();
