// The oban dashboard's own script: live refresh, the CSRF header, row selection.
//
// Live refresh: every element marked data-poll is re-fetched by htmx when this script fires
// "oban:poll" on it. The next poll is scheduled only once the previous one has finished (and
// hx-sync="this:drop" drops any trigger while one is in flight), so requests never overlap
// however slow the server is. Nothing is polled while the tab is hidden, while refresh is
// "off", while jobs are selected or while the user edits a field of a polled area. After an
// action the area is refreshed at once, whatever the interval.
(function () {
  "use strict";

  var STORAGE_KEY = "oban-web-refresh";
  var WATCHDOG_MS = 30000;
  var timer = null;
  var inFlight = false;
  var startedAt = 0;
  var forced = false; // the next refresh replaces the area whatever the user is doing
  var again = false; // an action asked for a refresh while one was on its way

  function $(selector) {
    return document.querySelector(selector);
  }

  function csrfToken() {
    var meta = $('meta[name="oban-csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function refreshSelect() {
    return document.getElementById("refresh");
  }

  function interval() {
    var select = refreshSelect();
    var seconds = select ? parseInt(select.value, 10) : 0;
    return isNaN(seconds) ? 0 : seconds;
  }

  function setStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.setAttribute("data-state", state);
      status.textContent = text;
    }
  }

  function selected() {
    return document.querySelectorAll('input[name="id"][form="bulk"]:checked');
  }

  function editing() {
    var active = document.activeElement;
    if (!active || !active.closest || !active.closest("[data-poll]")) {
      return false;
    }
    if (active.tagName === "INPUT") {
      return ["checkbox", "radio", "button", "submit"].indexOf(active.type) === -1;
    }
    return active.tagName === "SELECT" || active.tagName === "TEXTAREA";
  }

  // A field of the refreshed area whose value the user changed (a queue's new limit).
  function edited(target) {
    var fields = target.querySelectorAll("input:not([type=hidden]):not([type=checkbox]), textarea");
    return Array.prototype.some.call(fields, function (field) {
      return field.value !== field.defaultValue;
    });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = null;
    var seconds = interval();
    if (seconds <= 0) {
      setStatus("off", "paused");
      return;
    }
    if (document.hidden) {
      setStatus("hidden", "paused");
      return;
    }
    setStatus("on", "live");
    timer = window.setTimeout(tick, seconds * 1000);
  }

  // Why a refresh would now lose what the user is doing, or null. After an action (forced)
  // only a field being typed in holds it: the selection and edits acted on are done with.
  function holdReason(target) {
    if (editing()) {
      return "paused while you edit";
    }
    if (forced) {
      return null;
    }
    if (selected().length > 0) {
      return "paused while jobs are selected";
    }
    if (target.querySelector("[data-scanned]")) {
      // A refresh would search from the newest job again and drop the older matches shown.
      return "paused while older matches are shown";
    }
    return edited(target) ? "paused while you edit" : null;
  }

  function tick() {
    timer = null;
    if (inFlight && Date.now() - startedAt < WATCHDOG_MS) {
      return; // the response schedules the next poll
    }
    if (!forced && (interval() <= 0 || document.hidden)) {
      schedule();
      return;
    }
    var target = $("[data-poll]");
    if (!target) {
      return;
    }
    var reason = holdReason(target);
    if (reason !== null) {
      setStatus("held", reason);
      timer = window.setTimeout(tick, Math.max(interval(), 1) * 1000);
      return;
    }
    inFlight = true;
    startedAt = Date.now();
    htmx.trigger(target, "oban:poll");
  }

  function pollNow() {
    window.clearTimeout(timer);
    timer = null;
    tick();
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var detail = event.detail;
    if (detail.verb !== "get") {
      detail.headers["X-CSRF-Token"] = csrfToken();
    }
    var elt = detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll-rows")) {
      // Keep as many rows as "load more" has shown, up to a page of 1,000.
      var rows = elt.querySelectorAll("tr[data-job-id]").length;
      detail.parameters.limit = String(Math.min(Math.max(rows, 50), 1000));
    }
  });

  // A refresh that was already on its way when the user started selecting or editing is
  // dropped rather than swapped in over their work.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll") && event.detail.target === elt) {
      if (holdReason(elt) !== null) {
        event.detail.shouldSwap = false;
      }
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-poll")) {
      inFlight = false;
      if (again) {
        again = false;
        pollNow();
        return;
      }
      forced = false;
      if (!event.detail.successful) {
        setStatus("error", "refresh failed");
      }
      schedule();
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
      timer = null;
      setStatus("hidden", "paused");
    } else {
      pollNow();
    }
  });

  // An action succeeded: the server asks for fresh rows at once; what was selected is gone.
  document.body.addEventListener("oban:refresh", function () {
    selected().forEach(function (box) {
      box.checked = false;
    });
    updateSelection();
    forced = true;
    if (inFlight) {
      again = true;
    } else {
      pollNow();
    }
  });

  function updateSelection() {
    var count = selected().length;
    var label = $("#selected-count");
    if (label) {
      label.textContent = count === 0 ? label.getAttribute("data-empty") : count + " selected";
    }
    document.querySelectorAll("button[data-bulk]").forEach(function (button) {
      button.disabled = count === 0;
    });
    var all = document.getElementById("select-all");
    if (all) {
      var boxes = document.querySelectorAll('input[name="id"][form="bulk"]');
      all.checked = boxes.length > 0 && count === boxes.length;
    }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.id === "select-all") {
      document.querySelectorAll('input[name="id"][form="bulk"]').forEach(function (box) {
        box.checked = target.checked;
      });
      updateSelection();
    } else if (target.name === "id") {
      updateSelection();
    } else if (target.id === "refresh") {
      try {
        window.localStorage.setItem(STORAGE_KEY, target.value);
      } catch (ignored) {
        // storage may be disabled: the choice then lasts for this page only
      }
      pollNow();
    }
  });

  document.addEventListener("htmx:afterSwap", updateSelection);

  function restoreInterval() {
    var select = refreshSelect();
    if (!select) {
      return;
    }
    var saved = null;
    try {
      saved = window.localStorage.getItem(STORAGE_KEY);
    } catch (ignored) {
      saved = null;
    }
    if (saved !== null && /^[0-9]+$/.test(saved) && select.querySelector('option[value="' + saved + '"]')) {
      select.value = saved;
    }
  }

  restoreInterval();
  updateSelection();
  schedule();
})();
