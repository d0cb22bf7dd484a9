// Edict console script (loaded from /console/static, never inline: the CSP allows no inline script).
// The live preview: a form with `data-preview` posts its fields to that URL as they are typed (the
// CSRF token travels as a header too) and shows the rendered section in #preview. Without this
// script the form's Preview button renders it on the server.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-preview]");
  const out = document.getElementById("preview");
  if (!form || !out) return;
  let timer = null;
  let latest = 0;
  const update = async () => {
    const mine = ++latest;
    const body = new URLSearchParams(new FormData(form));
    body.delete("intent");
    try {
      const response = await fetch(form.dataset.preview, {
        method: "POST",
        body,
        credentials: "same-origin",
        headers: { "x-csrf-token": form.elements.csrf.value },
      });
      const text = await response.text();
      if (mine !== latest) return;
      out.textContent = response.ok ? text : "The preview is not available (" + response.status + ").";
      out.classList.toggle("error", !response.ok);
    } catch (error) {
      if (mine === latest) out.textContent = "The preview is not available: " + error.message;
    }
  };
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(update, 250);
  });
});

// Live pages (the inbox, a change request, the dashboard): the element marked `data-live="<topic>"`
// listens to /console/events for that topic (with the page's filters from `data-live-query` or the
// address, and `data-live-id`). When the stream's version differs from the one the page was rendered
// with (`data-live-version`) or last saw, the page is fetched again and the element's content swapped.
// While the person is typing in a form inside it, nothing is swapped: a notice offers the update.
// Without this script the page is current when loaded, and a reload updates it.
document.addEventListener("DOMContentLoaded", () => {
  const region = document.querySelector("[data-live]");
  if (!region || !window.EventSource) return;
  const params = new URLSearchParams(region.dataset.liveQuery ?? location.search);
  params.set("topic", region.dataset.live);
  if (region.dataset.liveId) params.set("id", region.dataset.liveId);
  let known = region.dataset.liveVersion || null;
  let dirty = false;
  let busy = false;
  let again = false;
  const status = document.createElement("p");
  status.className = "visually-hidden";
  status.setAttribute("role", "status");
  region.after(status);
  region.addEventListener("input", () => { dirty = true; });

  const offer = () => {
    if (region.previousElementSibling?.classList.contains("live-stale")) return;
    const notice = document.createElement("p");
    notice.className = "live-stale";
    notice.setAttribute("role", "status");
    notice.append("This page changed since it was loaded. ");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Show the changes";
    button.addEventListener("click", () => location.reload());
    notice.append(button);
    region.before(notice);
  };

  const refresh = async () => {
    if (busy) { again = true; return; }
    if (dirty || region.contains(document.activeElement) && document.activeElement.form) {
      offer();
      return;
    }
    busy = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (!response.ok || response.redirected) { offer(); return; }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector(`[data-live="${region.dataset.live}"]`);
      if (!fresh) return;
      if (fresh.innerHTML !== region.innerHTML) {
        region.innerHTML = fresh.innerHTML;
        status.textContent = "Updated at " + new Date().toLocaleTimeString() + ".";
      }
      if (fresh.dataset.liveVersion) known = fresh.dataset.liveVersion;
    } catch (error) {
      offer();
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };

  let retry = 0;
  const connect = () => {
    const source = new EventSource("/console/events?" + params.toString());
    source.addEventListener("version", (event) => {
      retry = 0;
      if (known === null) { known = event.data; return; }
      if (event.data !== known) { known = event.data; refresh(); }
    });
    source.addEventListener("ended", () => source.close());
    source.addEventListener("error", () => {
      // The browser reconnects by itself unless the server refused the stream (a 503 when too many
      // pages are live, a sign-in redirect): then try again later, a little later each time.
      if (source.readyState === EventSource.CLOSED) {
        retry = Math.min(retry + 1, 10);
        setTimeout(connect, retry * 30000);
      }
    });
  };
  connect();
});
