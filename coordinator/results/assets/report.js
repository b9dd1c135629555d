// ttftlab report: hover read-outs and x-axis zoom on the inline SVG charts.
// No network, no libraries. Each chart's SVG carries its x mapping
// (data-lo, data-hi, data-p0, data-p1, data-xlog) and each curve its data
// values (data-x, data-v, data-py); this script moves what carries a data-x.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  function nums(s) { return (s || "").split(" ").filter(function (t) { return t !== ""; }); }
  function fmt(v) {
    if (!isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toString();
    if (a === 0) return "0";
    var d = Math.max(0, 3 - Math.floor(Math.log10(a)));
    return parseFloat(v.toFixed(d)).toString();
  }
  function niceTicks(lo, hi, log) {
    var out = [], i;
    if (log) {
      var d0 = Math.floor(Math.log10(lo)), d1 = Math.ceil(Math.log10(hi));
      var m = d1 - d0 > 2 ? [1] : [1, 2, 5];
      for (var d = d0; d <= d1; d++) for (i = 0; i < m.length; i++) {
        var v = parseFloat((m[i] * Math.pow(10, d)).toPrecision(6));
        if (v >= lo && v <= hi) out.push(v);
      }
      return out;
    }
    var raw = (hi - lo) / 5, p = Math.pow(10, Math.floor(Math.log10(raw))), step = 10 * p;
    var ms = [1, 2, 2.5, 5, 10];
    for (i = 0; i < ms.length; i++) if (ms[i] * p >= raw) { step = ms[i] * p; break; }
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(parseFloat(t.toPrecision(10)));
    return out;
  }
  function Chart(svg) {
    this.svg = svg;
    this.log = svg.getAttribute("data-xlog") === "1";
    this.lo0 = parseFloat(svg.getAttribute("data-lo"));
    this.hi0 = parseFloat(svg.getAttribute("data-hi"));
    this.lo = this.lo0; this.hi = this.hi0;
    this.p0 = parseFloat(svg.getAttribute("data-p0"));
    this.p1 = parseFloat(svg.getAttribute("data-p1"));
    this.top = parseFloat(svg.getAttribute("data-ytop"));
    this.bottom = parseFloat(svg.getAttribute("data-ybottom"));
    this.unit = svg.getAttribute("data-xunit") || "";
    this.title = svg.getAttribute("data-xtitle") || "x";
    this.curves = [];
    var self = this;
    svg.querySelectorAll("path.curve").forEach(function (p) {
      self.curves.push({ el: p, name: p.getAttribute("data-name"), unit: p.getAttribute("data-unit"),
        color: p.getAttribute("data-color"), step: p.getAttribute("data-step") === "1",
        x: nums(p.getAttribute("data-x")), v: nums(p.getAttribute("data-v")), py: nums(p.getAttribute("data-py")),
        l: p.hasAttribute("data-l") ? p.getAttribute("data-l").split("|") : null });
    });
    this.xaxis = svg.querySelector("g.xaxis");
    this.tickY = this.bottom + 14;
    this.cross = document.createElementNS(NS, "line");
    this.cross.setAttribute("stroke", "#333"); this.cross.setAttribute("stroke-width", "0.8");
    this.cross.setAttribute("y1", this.top); this.cross.setAttribute("y2", this.bottom);
    this.cross.style.display = "none"; this.cross.setAttribute("pointer-events", "none");
    svg.appendChild(this.cross);
    this.sel = document.createElementNS(NS, "rect");
    this.sel.setAttribute("fill", "#0072B2"); this.sel.setAttribute("fill-opacity", "0.15");
    this.sel.setAttribute("y", this.top); this.sel.setAttribute("height", this.bottom - this.top);
    this.sel.style.display = "none"; this.sel.setAttribute("pointer-events", "none");
    svg.appendChild(this.sel);
    this.tip = document.createElement("div");
    this.tip.className = "tip"; this.tip.style.display = "none";
    document.body.appendChild(this.tip);
    this.bind();
  }
  Chart.prototype.px = function (v) {
    var lo = this.lo, hi = this.hi;
    if (this.log) { v = Math.log10(v); lo = Math.log10(lo); hi = Math.log10(hi); }
    return this.p0 + (this.p1 - this.p0) * (v - lo) / (hi - lo);
  };
  Chart.prototype.val = function (px) {
    var f = (px - this.p0) / (this.p1 - this.p0);
    if (this.log) return Math.pow(10, Math.log10(this.lo) + f * (Math.log10(this.hi) - Math.log10(this.lo)));
    return this.lo + f * (this.hi - this.lo);
  };
  Chart.prototype.local = function (ev) {
    var r = this.svg.getBoundingClientRect();
    var vb = this.svg.viewBox.baseVal;
    return { x: (ev.clientX - r.left) * vb.width / r.width, y: (ev.clientY - r.top) * vb.height / r.height };
  };
  Chart.prototype.redraw = function () {
    var self = this;
    this.curves.forEach(function (c) {
      var d = "", move = true, px = null;
      for (var i = 0; i < c.x.length; i++) {
        if (c.x[i] === "_") { move = true; continue; }
        var x = self.px(parseFloat(c.x[i])).toFixed(1), y = c.py[i];
        if (move) { d += "M" + x + " " + y; move = false; }
        else if (c.step) d += "H" + x + "V" + y;
        else d += "L" + x + " " + y;
      }
      c.el.setAttribute("d", d);
    });
    this.svg.querySelectorAll("[data-x]").forEach(function (el) {
      if (el.classList.contains("curve")) return;
      var x = self.px(parseFloat(el.getAttribute("data-x")));
      var tag = el.tagName.toLowerCase();
      if (tag === "line") { el.setAttribute("x1", x); el.setAttribute("x2", x); }
      else if (tag === "circle") el.setAttribute("cx", x);
      else if (tag === "text") el.setAttribute("x", x + parseFloat(el.getAttribute("data-dx") || "0"));
      else if (el.hasAttribute("data-py")) el.setAttribute("transform", "translate(" + x.toFixed(1) + "," + el.getAttribute("data-py") + ")");
    });
    this.svg.querySelectorAll("[data-x0]").forEach(function (el) {
      var a = self.px(parseFloat(el.getAttribute("data-x0"))), z = self.px(parseFloat(el.getAttribute("data-x1")));
      el.setAttribute("x", a); el.setAttribute("width", Math.max(z - a, 1));
    });
    if (this.xaxis) {
      while (this.xaxis.firstChild) this.xaxis.removeChild(this.xaxis.firstChild);
      niceTicks(this.lo, this.hi, this.log).forEach(function (t) {
        var tx = document.createElementNS(NS, "text");
        tx.setAttribute("class", "xtick"); tx.setAttribute("x", self.px(t).toFixed(1)); tx.setAttribute("y", self.tickY);
        tx.setAttribute("text-anchor", "middle"); tx.setAttribute("fill", "#444"); tx.textContent = fmt(t);
        self.xaxis.appendChild(tx);
      });
    }
  };
  Chart.prototype.zoom = function (lo, hi) {
    if (!(hi > lo) || (this.log && lo <= 0)) return;
    this.lo = lo; this.hi = hi; this.redraw();
    this.svg.setAttribute("data-zoomed", (lo !== this.lo0 || hi !== this.hi0) ? "1" : "0");
  };
  Chart.prototype.reset = function () { this.zoom(this.lo0, this.hi0); };
  Chart.prototype.hover = function (ev) {
    var p = this.local(ev);
    if (p.x < this.p0 || p.x > this.p1 || p.y < this.top || p.y > this.bottom) { this.hide(); return; }
    var x = this.val(p.x), self = this;
    var rows = [this.title + " = " + fmt(x) + (this.unit ? " " + this.unit : "")];
    this.curves.forEach(function (c) {
      var best = -1, bd = Infinity;
      for (var i = 0; i < c.x.length; i++) {
        if (c.x[i] === "_") continue;
        var d = Math.abs(self.px(parseFloat(c.x[i])) - p.x);
        if (d < bd) { bd = d; best = i; }
      }
      if (best < 0 || bd > 40) return;
      var lab = c.l ? c.l[c.x.slice(0, best).filter(function (t) { return t !== "_"; }).length] : "";
      rows.push("<span style=\"color:" + c.color + "\">■</span> " + esc(c.name) + ": <b>" + fmt(parseFloat(c.v[best])) + "</b> " + esc(c.unit) + (lab ? " (" + esc(lab) + ")" : ""));
    });
    this.cross.setAttribute("x1", p.x); this.cross.setAttribute("x2", p.x); this.cross.style.display = "";
    this.tip.innerHTML = rows.join("<br>");
    this.tip.style.display = "block";
    this.tip.style.left = (ev.pageX + 14) + "px"; this.tip.style.top = (ev.pageY + 10) + "px";
  };
  Chart.prototype.hide = function () { this.cross.style.display = "none"; this.tip.style.display = "none"; };
  function esc(s) { return String(s || "").replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c]; }); }
  Chart.prototype.bind = function () {
    var self = this, drag = null;
    this.svg.addEventListener("mousemove", function (ev) {
      self.hover(ev);
      if (drag !== null) {
        var x = Math.min(Math.max(self.local(ev).x, self.p0), self.p1);
        self.sel.setAttribute("x", Math.min(drag, x)); self.sel.setAttribute("width", Math.abs(x - drag));
        self.sel.style.display = "";
      }
    });
    this.svg.addEventListener("mouseleave", function () { self.hide(); drag = null; self.sel.style.display = "none"; });
    this.svg.addEventListener("mousedown", function (ev) {
      var p = self.local(ev);
      if (p.x >= self.p0 && p.x <= self.p1) { drag = p.x; ev.preventDefault(); }
    });
    this.svg.addEventListener("mouseup", function (ev) {
      if (drag === null) return;
      var x = Math.min(Math.max(self.local(ev).x, self.p0), self.p1);
      self.sel.style.display = "none";
      if (Math.abs(x - drag) > 4) self.zoom(self.val(Math.min(x, drag)), self.val(Math.max(x, drag)));
      drag = null;
    });
    this.svg.addEventListener("wheel", function (ev) {
      var p = self.local(ev);
      if (p.x < self.p0 || p.x > self.p1) return;
      ev.preventDefault();
      var f = ev.deltaY < 0 ? 0.8 : 1.25, c = self.val(p.x), lo = self.lo, hi = self.hi;
      if (self.log) {
        var lc = Math.log10(c);
        self.zoom(Math.pow(10, lc - (lc - Math.log10(lo)) * f), Math.pow(10, lc + (Math.log10(hi) - lc) * f));
      } else self.zoom(c - (c - lo) * f, c + (hi - c) * f);
    }, { passive: false });
    this.svg.addEventListener("dblclick", function () { self.reset(); });
  };
  window.ttftlabCharts = [];
  document.querySelectorAll("svg.ttftlab-chart").forEach(function (svg) {
    var c = new Chart(svg);
    window.ttftlabCharts.push(c);
    var btn = document.querySelector("button.reset[data-for=\"" + svg.id + "\"]");
    if (btn) btn.addEventListener("click", function () { c.reset(); });
  });
})();
