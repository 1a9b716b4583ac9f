// The charts page's script: draws each [data-chart] element with uPlot (vendored), again after
// every live refresh swaps the fragment in. A chart's data travels in its data-chart attribute
// as JSON ({unit, x: [epoch seconds], series: [{label, color, dash, points, values}]}), so the
// page needs no inline script; colours come from the stylesheet's variables (dark mode).
(function () {
  "use strict";

  var HEIGHT = 240;
  var charts = {}; // element id -> uPlot instance, for the next refresh (and the tests)
  window.obanCharts = charts;

  function cssVar(name, fallback) {
    var value = window.getComputedStyle(document.documentElement).getPropertyValue(name);
    return value && value.trim() ? value.trim() : fallback;
  }

  function width(elt) {
    return Math.max(elt.clientWidth || 0, 300);
  }

  function options(elt, spec) {
    var text = cssVar("--muted", "#66707d");
    var line = cssVar("--line", "#dde1e6");
    var axis = { stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line } };
    return {
      width: width(elt),
      height: HEIGHT,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } },
      series: [{}].concat(
        spec.series.map(function (one) {
          var series = { label: one.label, stroke: cssVar(one.color, "#2563eb"), width: 2 };
          if (one.dash) {
            series.dash = [6, 4];
          }
          if (one.points) {
            series.points = { show: true, size: 6, fill: series.stroke };
          }
          return series;
        })
      ),
      axes: [axis, Object.assign({ label: spec.unit, size: 56 }, axis)],
      legend: { live: true },
    };
  }

  function draw(elt) {
    var spec;
    try {
      spec = JSON.parse(elt.getAttribute("data-chart"));
    } catch (error) {
      return;
    }
    var data = [spec.x].concat(
      spec.series.map(function (one) {
        return one.values;
      })
    );
    var old = charts[elt.id];
    if (old) {
      old.destroy();
    }
    charts[elt.id] = new uPlot(options(elt, spec), data, elt);
  }

  function drawIn(root) {
    root.querySelectorAll("[data-chart]").forEach(draw);
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    drawIn(event.detail.target || document);
  });

  var resizing = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(function () {
      Object.keys(charts).forEach(function (id) {
        var elt = document.getElementById(id);
        if (elt) {
          charts[id].setSize({ width: width(elt), height: HEIGHT });
        }
      });
    }, 150);
  });

  // The queue menu shows its choice at once; its button is for browsers without scripts.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) {
      target.form.submit();
    }
  });

  drawIn(document);
})();
