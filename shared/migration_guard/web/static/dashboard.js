// migration-guard dashboard: a little progressive enhancement, no framework, no build step.
// Without JavaScript every link and form still works (a cell opens its own page).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // the filters apply as soon as one changes
  var filters = document.getElementById("filters");
  if (filters) {
    filters.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () {
        var page = filters.querySelector("input[name=page]");
        if (page) { page.remove(); }
        filters.submit();
      });
    });
  }

  // a cell's why: fetched as a fragment (same session cookie) into the side panel
  var panel = document.getElementById("why");
  if (!panel) { return; }
  document.addEventListener("click", function (event) {
    var close = event.target.closest("#why-close");
    if (close) { panel.hidden = true; panel.textContent = ""; return; }
    var link = event.target.closest("a.why");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    event.preventDefault();
    panel.hidden = false;
    panel.textContent = "asking the service...";
    fetch(link.getAttribute("href"), {headers: {"X-Fragment": "1"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.redirected && /\/ui\/login/.test(response.url)) {
          window.location.assign("/ui/login");
          return null;
        }
        return response.text().then(function (html) { return {ok: response.ok, html: html}; });
      })
      .then(function (answer) {
        if (!answer) { return; }
        // the fragment is the service's own escaped HTML; an error page shows only its message
        var doc = new DOMParser().parseFromString(answer.html, "text/html");
        var body = doc.querySelector(".why-body") || doc.querySelector("#error-message");
        panel.replaceChildren(body ? document.importNode(body, true) : document.createTextNode("no answer"));
      })
      .catch(function () { panel.textContent = "the service did not answer; try again"; });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { panel.hidden = true; }
  });
});
