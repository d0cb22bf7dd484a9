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
