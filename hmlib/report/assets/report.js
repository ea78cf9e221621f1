// hmlib report: sortable long tables, the site picker, and the contents panel's current section.
// Inlined into report.html by hmlib.report.page; fetches nothing.
(function () {
  "use strict";

  function cellValue(row, k) {
    var cell = row.children[k];
    if (!cell) return "";
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
  }

  document.querySelectorAll("table.hm-sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, k) {
      th.setAttribute("title", "Sort by this column");
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, k), y = cellValue(b, k);
          var xn = typeof x === "number", yn = typeof y === "number";
          var order = xn && yn ? x - y : xn ? -1 : yn ? 1 : (x < y ? -1 : x > y ? 1 : 0);
          return ascending ? order : -order;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // open the <details> that holds the target of a link (a site profile, a folded table)
  function openTarget(id, scroll) {
    if (!id) return;
    var el = document.getElementById(id);
    if (!el) return;
    var node = el;
    while (node) {
      if (node.tagName === "DETAILS") node.open = true;
      node = node.parentElement;
    }
    if (scroll) el.scrollIntoView();
  }
  window.addEventListener("hashchange", function () { openTarget(decodeURIComponent(location.hash.slice(1)), true); });
  if (location.hash) openTarget(decodeURIComponent(location.hash.slice(1)), true);

  var picker = document.getElementById("hm-site-picker");
  if (picker) {
    picker.addEventListener("change", function () {
      document.querySelectorAll("details.hm-site[open]").forEach(function (d) { d.open = false; });
      if (picker.value) {
        openTarget(picker.value, true);
        history.replaceState(null, "", "#" + picker.value);
      }
    });
  }

  // highlight the section being read in the contents panel
  var links = {};
  document.querySelectorAll("nav.hm-nav a[href^='#']").forEach(function (a) {
    links[decodeURIComponent(a.getAttribute("href").slice(1))] = a;
  });
  if ("IntersectionObserver" in window) {
    var current = null;
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (!entry.isIntersecting) return;
        var a = links[entry.target.id];
        if (!a) return;
        if (current) current.classList.remove("hm-current");
        a.classList.add("hm-current");
        current = a;
      });
    }, { rootMargin: "0px 0px -75% 0px" });
    document.querySelectorAll("main h2[id], main h3[id], main h4[id]").forEach(function (h) {
      if (links[h.id]) observer.observe(h);
    });
  }
})();
