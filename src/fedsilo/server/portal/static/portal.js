// fedsilo portal: the little the server-rendered pages need from a browser.
// Plain fetch, no library: copy a new token, keep a session list or a session's detail
// current by polling a fragment the server renders, and submit the demo's sign-in link.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // /signin#token=...: the fragment never reaches the server (nor its logs); fill the form,
  // drop the fragment from the address bar and history, submit.
  const signin = document.getElementById("signin-form");
  if (signin && location.hash.startsWith("#token=") && !document.getElementById("signin-error")) {
    const token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search);
    signin.elements.token.value = token;
    signin.submit();
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
      } catch (_) {
        document.execCommand("copy"); // an older browser, or no clipboard permission
      }
      const note = button.parentElement.querySelector("[data-copied]");
      if (note) note.hidden = false;
    });
  }

  for (const target of document.querySelectorAll("[data-poll]")) {
    const every = Number(target.dataset.pollMs || 2000);
    const untilEnded = target.hasAttribute("data-poll-until-ended");
    const tick = async () => {
      try {
        const answer = await fetch(target.dataset.poll, {
          headers: { Accept: "text/html" }, credentials: "same-origin", cache: "no-store",
        });
        if (answer.redirected || answer.status === 401) { location.reload(); return; }
        if (!answer.ok) return;
        target.innerHTML = await answer.text();
        if (untilEnded && target.querySelector('[data-ended="true"]')) return; // final state
      } catch (_) {
        // the server restarts or the network drops: try again on the next tick
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }
});
