// ValetKey console: progressive enhancement only. Every page works without this file;
// with it, the approvals inbox updates live and time-left counters tick.
"use strict";

function span(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor(seconds % 3600 / 60) + " min";
  return Math.floor(seconds / 86400) + " d";
}

function tick() {
  const now = Date.now() / 1000;
  document.querySelectorAll("[data-expires]").forEach((el) => {
    const left = Number(el.dataset.expires) - now;
    el.textContent = left <= 0 ? "expired" : span(left) + " left";
  });
}

// The inbox: fetch the pending list and merge it in place, so a reason being typed in one
// card survives another card's arrival. New cards are announced to screen readers.
function live(list) {
  const status = document.getElementById("live-status");
  const count = document.getElementById("pending-count");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(list.dataset.live, {
        credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store",
      });
      if (response.redirected || !response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById(list.id);
      if (!fresh) return;
      const incoming = Array.from(fresh.querySelectorAll(":scope > [data-id]"));
      const keep = new Set(incoming.map((el) => el.dataset.id));
      list.querySelectorAll(":scope > [data-id]").forEach((el) => {
        if (!keep.has(el.dataset.id) && !el.contains(document.activeElement)) el.remove();
      });
      const added = [];
      incoming.reverse().forEach((el) => {
        if (!list.querySelector(`:scope > [data-id="${CSS.escape(el.dataset.id)}"]`)) {
          const node = document.importNode(el, true);
          node.classList.add("new");
          list.prepend(node);
          added.push(node);
        }
      });
      const empty = list.querySelector(":scope > .empty");
      const total = list.querySelectorAll(":scope > [data-id]").length;
      if (empty) empty.hidden = total > 0;
      if (count) count.textContent = String(total);
      if (added.length && status) {
        status.textContent = added.length === 1
          ? "New approval request: " + (added[0].dataset.summary || "")
          : added.length + " new approval requests";
      }
      tick();
    } catch (e) {
      // offline for a moment: the next round tries again
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 2000);
  document.addEventListener("visibilitychange", refresh);
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  document.querySelectorAll("[data-live]").forEach(live);
});
