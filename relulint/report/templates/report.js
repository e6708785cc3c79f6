"use strict";
// relulint report: filter the findings of each model and sort any table by a column.
// No network, no eval, no inline handlers (the page's Content-Security-Policy forbids them).
(function () {
  function filterFindings(block) {
    var table = block.querySelector("table.findings-table");
    if (!table) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var boxes = Array.prototype.slice.call(block.querySelectorAll(".sev-filter input"));
    var rule = block.querySelector(".rule-filter");
    var text = block.querySelector(".text-filter");
    var shown = block.querySelector(".shown");
    var none = block.querySelector(".no-match");

    function apply() {
      var wanted = {};
      boxes.forEach(function (box) { wanted[box.value] = box.checked; });
      var ruleId = rule ? rule.value : "";
      var words = text ? text.value.trim().toLowerCase() : "";
      var count = 0;
      rows.forEach(function (row) {
        var visible = wanted[row.dataset.severity] !== false
          && (!ruleId || row.dataset.rule === ruleId)
          && (!words || row.textContent.toLowerCase().indexOf(words) !== -1);
        row.hidden = !visible;
        if (visible) count += 1;
      });
      if (shown) shown.textContent = count + " of " + rows.length + " shown";
      if (none) none.hidden = count !== 0;
    }

    boxes.forEach(function (box) { box.addEventListener("change", apply); });
    if (rule) rule.addEventListener("change", apply);
    if (text) text.addEventListener("input", apply);
    apply();
  }

  function sortable(table) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    headers.forEach(function (th, column) {
      var button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) {
          if (other.hasAttribute("aria-sort")) other.setAttribute("aria-sort", "none");
        });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        sortBy(table, column, th.dataset.type === "number", ascending);
      });
    });
  }

  function sortKey(row, column, numeric) {
    var cell = row.cells[column];
    var value = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
    return numeric ? parseFloat(value) : value.toLowerCase();
  }

  function sortBy(table, column, numeric, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return { row: row, key: sortKey(row, column, numeric), index: index };
    });
    rows.sort(function (a, b) {
      var order = 0;
      if (numeric) {
        var x = isNaN(a.key) ? -Infinity : a.key;
        var y = isNaN(b.key) ? -Infinity : b.key;
        order = x < y ? -1 : (x > y ? 1 : 0);
      } else {
        order = a.key.localeCompare(b.key, undefined, { numeric: true });
      }
      return (ascending ? order : -order) || a.index - b.index;  // stable
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }

  document.querySelectorAll("section.findings").forEach(filterFindings);
  document.querySelectorAll("table.sortable").forEach(sortable);
})();
