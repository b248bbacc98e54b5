// The survey report page: the Print button (CSP forbids inline handlers).
(function () {
  "use strict";
  const b = document.getElementById("print-report");
  if (b) b.addEventListener("click", () => window.print());
})();
