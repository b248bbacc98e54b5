// Reports page: click a column heading to sort its table (numbers as numbers; again to reverse).
(function () {
  "use strict";
  for (const table of document.querySelectorAll("table.sortable")) {
    const heads = table.querySelectorAll("thead th");
    heads.forEach((th, col) => {
      th.tabIndex = 0;
      const sort = () => {
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).filter((r) => r.cells.length > 1);
        const desc = th.dataset.dir !== "desc";
        heads.forEach((h) => { delete h.dataset.dir; h.removeAttribute("aria-sort"); });
        th.dataset.dir = desc ? "desc" : "asc";
        th.setAttribute("aria-sort", desc ? "descending" : "ascending");
        const num = th.dataset.sort === "num";
        const value = (r) => {
          const cell = r.cells[col];
          if (!num) return cell.textContent.trim().toLowerCase();
          const v = cell.dataset.v;
          return v === "" || v === undefined ? -Infinity : Number(v);
        };
        rows.sort((a, b) => {
          const x = value(a), y = value(b);
          const c = x < y ? -1 : x > y ? 1 : 0;
          return desc ? -c : c;
        });
        for (const r of rows) body.append(r);
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (ev) => { if (ev.key === "Enter") sort(); });
    });
  }
})();
